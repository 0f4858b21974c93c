"""Property-based tests: any input file gives a valid object or one short line of EegloopError.

Protocol files (arbitrary bytes, arbitrary YAML, and YAML built from the real
schema's keys with random values of random types), ``--events`` specs and CSV
recordings. No other exception, no multi-line or unbounded message.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Literal, Union

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from eegloop.errors import EegloopError  # noqa: E402
from eegloop.protocol import Protocol, load_protocol, protocol_from_dict  # noqa: E402
from eegloop.recorder.importers import Recording, parse_events, read_csv  # noqa: E402

MAX_MESSAGE = 1000


def _settings(n: int):
    # no example database: nothing written into the checkout (.hypothesis/)
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


FAST = _settings(150)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


def outcome(fn, *args, **kwargs):
    """``fn(...)``'s result, or None after checking that it raised a short one-line EegloopError."""
    try:
        return fn(*args, **kwargs)
    except EegloopError as exc:
        msg = str(exc)
        assert msg, "empty error message"
        assert len(msg.splitlines()) == 1 and "\n" not in msg and "\r" not in msg, f"multi-line: {msg!r}"
        assert len(msg) <= MAX_MESSAGE, f"message of {len(msg)} characters: {msg[:200]!r}..."
        return None


# ---------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10 ** 60), max_value=10 ** 60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["", "0", "1e999", "-.inf", ".nan", "{class}", "~", "yes", "0x1F"]),
)
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=5), st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), kids, max_size=5)),
    max_leaves=20)


def _value_for(tp, meta: dict) -> st.SearchStrategy:
    """A value of (roughly) the field's type, often at or beyond its bounds."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)][0]
        return st.one_of(st.none(), _value_for(inner, meta))
    if dataclasses.is_dataclass(tp):
        return _section(tp)
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(_value_for(args[0], meta), max_size=4)
    if origin is dict:
        return st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=6)
    if tp is bool:
        return st.booleans()
    if tp in (int, float):
        edges = [b for k in ("ge", "gt", "le", "lt") if (b := meta.get(k)) is not None]
        near = [e + d for e in edges for d in (-1, -1e-9, 0, 1e-9, 1)]
        num = st.one_of(st.sampled_from(near or [0]), st.integers(-10 ** 6, 10 ** 6),
                        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e7, max_value=1e7))
        return num.map(int) if tp is int else num
    if tp is str:
        return st.text(max_size=20)
    return scalars


def _section(cls) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    return st.fixed_dictionaries({}, optional={
        f.name: st.one_of(_value_for(hints[f.name], dict(f.metadata)), _value_for(hints[f.name], dict(f.metadata)),
                          values)  # mostly the right type, sometimes anything
        for f in fields})


BASE = {
    "stimuli": {"folder": "imgs", "classes": {"a": "A", "b": "B"}},
    "paradigm": {"block_s": 2, "image_s": 0.5, "images_per_class": 4, "runs": 2},
    "amplifier": {"channels": 4, "sfreq": 250},
}


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _leaves(cls, prefix: tuple = ()) -> list:
    """(path, type, bounds) of every field of the schema, sections included."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        out.append((prefix + (f.name,), tp, dict(f.metadata)))
        sub = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
        if sub:
            out += _leaves(sub[0], prefix + (f.name,))
    return out


LEAVES = _leaves(Protocol)


def _in_range(tp, meta: dict) -> st.SearchStrategy:
    """A value of the field's type inside its bounds (most such protocols pass the field checks)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return st.one_of(st.none(), _in_range([a for a in args if a is not type(None)][0], meta))
    if origin is list:
        return st.lists(_in_range(args[0], meta), min_size=1, max_size=4)
    if tp in (int, float):
        lo = meta.get("ge", meta.get("gt"))
        hi = meta.get("le", meta.get("lt"))
        lo = -1e6 if lo is None else lo
        hi = 1e6 if hi is None else hi
        if tp is int:
            return st.integers(math.ceil(lo) + (meta.get("gt") is not None),
                               math.floor(hi) - (meta.get("lt") is not None))
        return st.floats(lo, hi, exclude_min=meta.get("gt") is not None, exclude_max=meta.get("lt") is not None)
    return _value_for(tp, meta)


def _set(doc: dict, path: tuple, value) -> dict:
    doc = dict(doc)
    if len(path) == 1:
        doc[path[0]] = value
    else:
        sub = doc.get(path[0])
        doc[path[0]] = _set(sub if isinstance(sub, dict) else {}, path[1:], value)
    return doc


@st.composite
def _patched(draw) -> dict:
    """A valid base protocol with 1 to 5 fields set: mostly in range, sometimes at the edges or anything."""
    doc = BASE
    for _ in range(draw(st.integers(1, 5))):
        path, tp, meta = draw(st.sampled_from(LEAVES))
        value = draw(st.one_of(_in_range(tp, meta), _in_range(tp, meta), _in_range(tp, meta),
                               _value_for(tp, meta), values))
        doc = _set(doc, path, value)
    return doc


schema_docs = st.one_of(_section(Protocol), _section(Protocol).map(lambda d: _merge(BASE, d)), _patched())


def _dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


# ---------------------------------------------------------------------------
# protocol files
# ---------------------------------------------------------------------------
def _check_protocol(path: Path) -> None:
    p = outcome(load_protocol, path)
    if p is None:
        return
    assert isinstance(p, Protocol)
    again = protocol_from_dict(yaml.safe_load(p.to_yaml()), source=str(path))  # what loads, round-trips
    assert again == p
    if len(p.stimuli.classes) >= 2:
        d = p.design()
        assert d.n_trials >= 1 and math.isfinite(d.total_s)


@FAST
@given(data=st.binary(max_size=3000))
def test_any_bytes_as_protocol(work, data):
    path = work / "bytes.yaml"
    path.write_bytes(data)
    _check_protocol(path)


@FAST
@given(text=st.text(max_size=400))
def test_any_text_as_protocol(work, text):
    path = work / "text.yaml"
    path.write_text(text, encoding="utf-8")
    _check_protocol(path)


@_settings(150)
@given(doc=st.one_of(values, st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(Protocol)]),
                                             values, max_size=4)))
def test_any_yaml_document_as_protocol(work, doc):
    path = work / "doc.yaml"
    path.write_text(_dump(doc), encoding="utf-8")
    _check_protocol(path)


@pytest.mark.slow
@_settings(400)
@given(doc=schema_docs)
def test_schema_shaped_documents(work, doc):
    """Real keys, random values of random types: validation deep in the schema and the cross-checks."""
    path = work / "schema.yaml"
    path.write_text(_dump(doc), encoding="utf-8")
    _check_protocol(path)


# ---------------------------------------------------------------------------
# --events
# ---------------------------------------------------------------------------
def _check_events(spec: str) -> None:
    ev = outcome(parse_events, spec)
    if ev is None:
        return
    assert isinstance(ev, dict)
    for k, v in ev.items():
        assert isinstance(k, str) and isinstance(v, str) and k and v
        assert k.isprintable() and v.isprintable() and len(v) <= 128


@FAST
@given(spec=st.one_of(st.text(max_size=60),
                      st.lists(st.tuples(st.text(max_size=6), st.sampled_from(["=", "", "==", " = "]),
                                         st.text(max_size=8)), max_size=5).map(
                          lambda parts: ",".join(a + s + b for a, s, b in parts))))
def test_any_events_string(spec):
    _check_events(spec)


@FAST
@given(data=st.one_of(st.binary(max_size=500), values.map(lambda d: _dump(d).encode()),
                      st.dictionaries(st.one_of(st.integers(), st.text(max_size=5)), scalars, max_size=5).map(
                          lambda d: _dump(d).encode())))
def test_any_events_file(work, data):
    path = work / "events.yaml"
    path.write_bytes(data)
    _check_events(str(path))


# ---------------------------------------------------------------------------
# CSV recordings
# ---------------------------------------------------------------------------
def _check_csv(path: Path) -> None:
    rec = outcome(read_csv, path)
    if rec is None:
        return
    assert isinstance(rec, Recording)
    assert rec.data.dtype == np.float32 and rec.data.shape == (len(rec.ch_names), len(rec.times))
    assert np.isfinite(rec.data).all() and np.isfinite(rec.times).all()
    assert math.isfinite(rec.sfreq) and rec.sfreq > 0 and rec.duration > 0


@FAST
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_csv(work, data):
    path = work / "bytes.csv"
    path.write_bytes(data)
    _check_csv(path)


names = st.one_of(st.sampled_from(["timestamps", "Marker0", "TP9", "AF7", "", "marker", " TP9 "]),
                  st.text(max_size=6))
cells = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr), st.integers(-1000, 1000).map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "", " ", "1e400", "abc", "0", "1", "2", "#", "1,2"]),
    st.text(max_size=4))


@st.composite
def almost_csv(draw) -> str:
    header = draw(st.one_of(
        st.just(["timestamps", "TP9", "AF7", "Marker0"]),
        st.lists(names, min_size=1, max_size=6).map(lambda h: ["timestamps"] + h + ["Marker0"]),
        st.lists(names, max_size=6)))
    n = draw(st.integers(0, 12))
    rows = []
    t = draw(st.floats(-1e6, 1e6, allow_nan=False))
    step = draw(st.sampled_from([1 / 256, 0.0, -0.01, 1e-300, 1.0]))
    for i in range(n):
        width = len(header) if draw(st.integers(0, 9)) else draw(st.integers(0, len(header) + 2))
        row = [repr(t + i * step) if (j == 0 and draw(st.booleans())) else draw(cells) for j in range(width)]
        if draw(st.integers(0, 3)) and width:  # mostly numbers
            row = [c if j == 0 else str(draw(st.integers(-100, 100))) for j, c in enumerate(row)]
        rows.append(",".join(row))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join([",".join(header)] + rows) + draw(st.sampled_from(["", eol]))


@_settings(400)
@given(text=almost_csv())
def test_almost_valid_csv(work, text):
    path = work / "almost.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _check_csv(path)


def test_almost_valid_csv_can_be_valid(work):
    """The generator above does produce readable files (the property is not vacuous)."""
    path = work / "valid.csv"
    path.write_text("timestamps,TP9,AF7,Marker0\n" + "".join(f"{i / 256},{i},{-i},{i % 3}\n" for i in range(20)))
    rec = read_csv(path)
    assert rec.data.shape == (2, 20) and round(rec.sfreq) == 256 and len(rec.markers) == 13


# ---------------------------------------------------------------------------
# the classes of bad input, one example each (the messages users see)
# ---------------------------------------------------------------------------
_H = "timestamps,TP9,AF7,Marker0\n"
_ROWS = "".join(f"{i / 256},{i % 7},{i % 5},{1 if i % 50 == 0 else 0}\n" for i in range(300))


@pytest.mark.parametrize("data,needle", [
    ((_H + _ROWS).encode() + "1,2,3,\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at line 302)"),
    ((_H + _ROWS).encode() + b"1,2\x00,3,0\n", "NUL bytes at line 302"),
    ((_H + _ROWS + "1,2,3\n").encode(), "line 302 has 3 cells, the header has 4 columns"),
    ((_H.strip() + ",extra\n" + _ROWS).encode(), "rows have 4 cells, the header has 5 columns"),
    (b"", "empty file"),
    (b"\n1,2,3\n", "empty header line"),
    (b",,,\n1,2,3,4\n", "column 1 of the header has no name"),
    (b"timestamps,TP9,TP9,Marker0\n1,2,3,4\n2,3,4,5\n", "column 'TP9' appears twice in the header"),
    ((_H + _ROWS + "5,abc,3,0\n").encode(), "line 302, column TP9: not a number: 'abc'"),
    ((_H + "0,1,nan,0\n1,2,3,0\n2,nan,inf,0\n").encode(),
     "2 non-finite values (NaN/inf) in channel AF7, first at row 1; clean or interpolate them first"),
    ((_H + "0,1,1,0\nnan,2,3,0\n2,1,1,0\n").encode(), "1 non-finite value (NaN/inf) in timestamps, first at row 2"),
    ((",".join(f"c{i}" for i in range(5000)) + "\n").encode(), "5000 columns in the header, at most 4096"),
    ((_H + "1,2,3,0\n").encode(), "no samples (fewer than 2 rows)"),
    ((_H + "1.0,1,1,0\n" * 10).encode(), "timestamps do not increase (first 1, last 1): no sampling rate"),
    ((_H + "-1e308,1,1,0\n1e308,1,1,0\n").encode(), "timestamps span no finite duration"),
    ((_H + "0,1e300,1,0\n1,1,1,0\n").encode(), "channel TP9 has values beyond the float32 range"),
    (b"timestamps,Marker0\n1,0\n2,0\n", "no channel columns besides 'timestamps' and 'Marker0'"),
    (b"a,b,Marker\n1,2,3\n", "no 'timestamps' column (columns: a, b, Marker)"),
    (b"x" * (5 << 20), "the header line is longer than 4 MiB"),
])
def test_csv_bad_inputs(work, data, needle):
    path = work / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(EegloopError) as exc:
        read_csv(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and needle in msg and "\n" not in msg, msg


def test_csv_valid_variants(work):
    for name, data in [("plain", _H + _ROWS), ("crlf", (_H + _ROWS).replace("\n", "\r\n")),
                       ("bom", "\ufeff" + _H + _ROWS)]:
        path = work / f"{name}.csv"
        path.write_bytes(data.encode())
        rec = read_csv(path)
        assert rec.ch_names == ["TP9", "AF7"] and rec.data.shape == (2, 300) and len(rec.markers) == 6
        assert round(rec.sfreq, 6) == 256


@pytest.mark.parametrize("spec,needle", [
    ("1=house,1=face", "--events: marker value '1' is given twice"),
    ("1=house,,2=face", "--events: an empty entry (two commas?) is not VALUE=CLASS"),
    ("1=house, ,2=face", "--events: an empty entry (two commas?) is not VALUE=CLASS"),
    ("=house", "--events: empty marker value in '=house'"),
    ("1= ", "--events: empty class name in '1= '"),
    ("house", "--events: 'house' is not VALUE=CLASS (e.g. 1=house,2=face)"),
    ("1=" + "x" * 200, "class name 'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx' is longer than 128 characters"),
    ("1=a\tb", "--events: class name 'a\\tb' has control characters"),
    ("missing.yaml", "--events: missing.yaml: events file not found"),
])
def test_events_bad_strings(spec, needle):
    with pytest.raises(EegloopError) as exc:
        parse_events(spec)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("data,needle", [
    (b"1: house\n1: face\n", "line 2, column 1: not valid YAML (duplicate key '1')"),
    (b"1: house\n'1': face\n", "not valid YAML (duplicate key '1')"),
    (b"1: [house]\n", "must map marker values to class names (plain values, e.g. 1: house), got 1: ['house']"),
    (b"1: {a: b}\n", "got 1: {'a': 'b'}"),
    (b"- 1\n- 2\n", "must map marker values to classes (e.g. 1: house), got [1, 2]"),
    (b"", "got an empty file"),
    ("1: h\xe9\n".encode("latin-1"), "events file is not UTF-8 text"),
    (b"1: [house\n", "line 2, column 1: not valid YAML (expected ',' or ']'"),
    (b"#" * (2 << 20), "events file is larger than 1 MiB"),
    (b"1:\n", "got 1: None"),
    (b'1: "a\\nb"\n', "class name 'a\\nb' has control characters"),
])
def test_events_bad_files(work, data, needle):
    path = work / "ev.yaml"
    path.write_bytes(data)
    with pytest.raises(EegloopError) as exc:
        parse_events(str(path))
    msg = str(exc.value)
    assert msg.startswith(f"--events: {path}") and needle in msg and "\n" not in msg, msg


def test_events_valid(work):
    assert parse_events("1=house, 2 = face") == {"1": "house", "2": "face"}
    assert parse_events("1=x.yaml") == {"1": "x.yaml"}  # not a file name: a class called x.yaml
    path = work / "ok.yml"
    path.write_text("1: house\n2: face\nstim_3: car\n")
    assert parse_events(str(path)) == {"1": "house", "2": "face", "stim_3": "car"}
