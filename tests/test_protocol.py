"""Protocol validation: defaults, shipped protocols, and every class of bad file."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eegloop.errors import ProtocolError
from eegloop.protocol import Protocol, load_protocol, protocol_from_dict
from eegloop.stimuli import load_stimuli, synthesize_stimuli

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = REPO / "protocols"


def write(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def base(tmp_path: Path, **over) -> dict:
    d = {
        "stimuli": {"folder": "imgs", "classes": {"circle": "red circle", "square": "blue square"}},
        "paradigm": {"block_s": 2, "image_s": 0.5, "images_per_class": 4, "runs": 2, "pause_s": 1},
    }
    for k, v in over.items():
        d.setdefault(k, {}).update(v)
    return d


def test_defaults_are_the_papers():
    p = protocol_from_dict({"stimuli": {"folder": "x"}})
    assert (p.paradigm.block_s, p.paradigm.image_s, p.paradigm.pause_s) == (25.0, 0.5, 10.0)
    assert p.preprocessing.bandpass_hz == [14.0, 70.0] and p.preprocessing.notch_hz == 50.0
    assert (p.preprocessing.stft_window_ms, p.preprocessing.stft_hop_ms) == (40.0, 20.0)
    t = p.training
    assert (t.alpha, t.temperature, t.lr, t.batch_size, t.grad_clip, t.patience, t.max_epochs) == \
        (0.5, 1.0, 3e-4, 64, 1.0, 10, 50)
    assert p.feedback.prompt == "an image of a {class}"
    assert p.amplifier.lsl_scope == "machine"


def test_round_trip_yaml():
    p = load_protocol(PROTOCOLS / "ferrante2023.yaml")
    q = protocol_from_dict(yaml.safe_load(p.to_yaml()))
    assert q == p
    assert q.sha256 == p.sha256


@pytest.mark.parametrize("name,order", [("ferrante2023", "blocked"), ("interleaved", "interleaved")])
def test_shipped_paper_protocols(name, order):
    p = load_protocol(PROTOCOLS / f"{name}.yaml")
    d = p.design()
    assert p.paradigm.order == order
    assert (d.n_classes, d.images_per_class, d.n_trials, d.n_blocks, d.runs, d.blocks_per_run) == \
        (40, 50, 2000, 40, 4, 10)
    assert d.total_s == 1400 and round(d.total_min, 1) == 23.3


@pytest.mark.skipif(not (REPO.parent / "shared/data/eeg-imagenet-40-classes.csv").is_file(),
                    reason="shared/data/eeg-imagenet-40-classes.csv not beside the checkout")
@pytest.mark.parametrize("name", ["ferrante2023", "interleaved"])
def test_shipped_paper_protocols_name_the_eeg_imagenet_classes(name):
    """Only this comparison needs the shared list; the design above is checked without it."""
    p = load_protocol(PROTOCOLS / f"{name}.yaml")
    csv = REPO.parent / "shared/data/eeg-imagenet-40-classes.csv"
    rows = [line.split(",", 1) for line in csv.read_text().splitlines()[1:]]
    assert p.stimuli.classes == {k: v for k, v in rows}


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"paradigm": {"blok_s": 3}}, "paradigm.blok_s: unknown field (did you mean 'block_s'?)"),
        ({"paradigm": {"image_s": "fast"}}, "paradigm.image_s: must be a number, got 'fast'"),
        ({"paradigm": {"image_s": "5e-1"}}, "paradigm.image_s: must be a number, got '5e-1' (YAML 1.1 reads 5e-1 as "
                                            "text: write it with a point, e.g. 1.0e9)"),
        ({"paradigm": {"image_s": -0.5}}, "paradigm.image_s: must be > 0, got -0.5"),
        ({"paradigm": {"order": "random"}}, "paradigm.order: must be one of 'blocked', 'interleaved'"),
        ({"paradigm": {"runs": 1.5}}, "paradigm.runs: must be an integer, got 1.5"),
        ({"paradigm": {"runs": 3}}, "paradigm.runs: 3 runs"),
        ({"paradigm": {"block_s": 1.2}}, "paradigm.block_s: 1.2 s is not a whole number of images"),
        ({"training": {"alpha": 1.5}}, "training.alpha: must be <= 1, got 1.5"),
        ({"paradigm": {"fixation": "yes"}}, "paradigm.fixation: must be true or false"),
        ({"preprocessing": {"bandpass_hz": [14, 600]}}, "preprocessing.bandpass_hz: high edge 600.0 Hz must be below Nyquist"),
        ({"epochs": {"tmin": 0.5, "tmax": 0.1}}, "epochs.tmax: must be > epochs.tmin"),
        ({"feedback": {"prompt": "a picture"}}, "feedback.prompt: must contain '{class}'"),
        ({"amplifier": {"simulate": {"snr": "high"}}}, "amplifier.simulate.snr: must be a number"),
        ({"amplifier": {"lsl_scope": "world"}}, "amplifier.lsl_scope: must be one of"),
    ],
)
def test_bad_fields_are_named(tmp_path, patch, needle):
    path = write(tmp_path, base(tmp_path, **patch))
    with pytest.raises(ProtocolError) as exc:
        load_protocol(path)
    msg = str(exc.value)
    assert msg.startswith(str(path) + ": ")
    assert needle in msg
    assert "\n" not in msg


def test_unknown_section_and_bad_yaml(tmp_path):
    with pytest.raises(ProtocolError, match="paradigms: unknown field \\(did you mean 'paradigm'\\?\\)"):
        load_protocol(write(tmp_path, {"paradigms": {}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("paradigm: [1, 2\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match="protocol file not found"):
        load_protocol(tmp_path / "none.yaml")


def test_missing_stimulus_folder(tmp_path):
    p = load_protocol(write(tmp_path, base(tmp_path)))
    with pytest.raises(ProtocolError, match=r"stimuli.folder: folder '.*imgs' does not exist"):
        load_stimuli(p)


def test_too_few_images_for_the_design(tmp_path):
    synthesize_stimuli(tmp_path / "imgs", {"circle": "c", "square": "s"}, per_class=3, size=32)
    p = load_protocol(write(tmp_path, base(tmp_path)))
    with pytest.raises(ProtocolError, match="stimuli: class 'circle' has 3 images, the design needs 4"):
        load_stimuli(p)


def test_unknown_class_in_folder(tmp_path):
    synthesize_stimuli(tmp_path / "imgs", {"circle": "c", "star": "s"}, per_class=4, size=32)
    p = load_protocol(write(tmp_path, base(tmp_path)))
    with pytest.raises(ProtocolError, match="stimuli.classes: no images for class square"):
        load_stimuli(p)


def test_stimuli_from_folder_and_manifest(tmp_path):
    st = synthesize_stimuli(tmp_path / "imgs", {"circle": "c", "square": "s"}, per_class=4, size=32)
    p = load_protocol(write(tmp_path, base(tmp_path)))
    loaded = load_stimuli(p)
    assert loaded.counts() == {"circle": 4, "square": 4}
    assert {s.sha256 for s in loaded.images} == {s.sha256 for s in st.images}
    lines = ["path,class"] + [f"imgs/{s.class_id}/{s.path.name},{s.class_id}" for s in st.images]
    (tmp_path / "m.csv").write_text("\n".join(lines))
    d = base(tmp_path)
    d["stimuli"] = {"manifest": "m.csv", "classes": {"circle": "red circle", "square": "blue square"}}
    loaded2 = load_stimuli(load_protocol(write(tmp_path, d, "q.yaml")))
    assert loaded2.counts() == loaded.counts()
    assert loaded2.classes["circle"] == "red circle"


def test_synthesized_classes_differ(tmp_path):
    import numpy as np
    from PIL import Image

    st = synthesize_stimuli(tmp_path, 4, per_class=2, size=64)
    means = {c: np.mean([np.asarray(Image.open(s.path), float).mean((0, 1)) for s in v], 0)
             for c, v in st.by_class().items()}
    cs = list(means)
    for i in range(len(cs)):
        for j in range(i + 1, len(cs)):
            assert np.abs(means[cs[i]] - means[cs[j]]).max() > 10
    assert len({s.sha256 for s in st.images}) == 8


def test_immutable():
    p = Protocol()
    with pytest.raises(Exception):
        p.name = "x"  # type: ignore[misc]


# ---------------------------------------------------------------------------
# bounds on every numeric field, cross-checks, hostile files
# ---------------------------------------------------------------------------
def _numeric_fields(cls=Protocol, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        inner = [a for a in (tp, *typing.get_args(tp)) if a is not type(None)]
        sub = [a for a in inner if dataclasses.is_dataclass(a)]
        if sub:
            yield from _numeric_fields(sub[0], f"{prefix}{f.name}.")
            continue
        # Optional[float], list[int], Optional[list[float]] ...: the numbers inside
        flat = set(inner)
        for a in inner:
            flat.update(typing.get_args(a))
        num = {int, float} & flat
        if num:
            yield f"{prefix}{f.name}", num.pop(), f.metadata


def test_every_numeric_field_is_bounded():
    fields = list(_numeric_fields())
    assert len(fields) >= 60
    names = {n for n, _, _ in fields}
    assert {"paradigm.screen.size", "epochs.baseline", "preprocessing.bandpass_hz", "amplifier.buffer_s",
            "amplifier.simulate.chunk_ms", "training.quick_train_after_min"} <= names
    for name, tp, meta in fields:
        assert meta.get("le") is not None or meta.get("lt") is not None, f"{name} has no upper bound"
        assert meta.get("ge") is not None or meta.get("gt") is not None, f"{name} has no lower bound"
        if name.endswith("seed"):
            assert meta["ge"] == 0 and meta["lt"] == 2 ** 32, name


def test_new_amplifier_fields():
    a = Protocol().amplifier
    assert (a.source_id, a.hostname, a.buffer_s, a.stall_timeout_s) == (None, None, 30.0, 5.0)
    p = protocol_from_dict({"stimuli": {"folder": "x"}, "amplifier": {
        "source_id": "BrainAmp-1234", "hostname": "amp-pc", "buffer_s": 60, "stall_timeout_s": 2.5}})
    assert (p.amplifier.source_id, p.amplifier.hostname, p.amplifier.buffer_s, p.amplifier.stall_timeout_s) == \
        ("BrainAmp-1234", "amp-pc", 60.0, 2.5)
    assert protocol_from_dict(yaml.safe_load(p.to_yaml())) == p


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"paradigm": {"block_s": 601}}, "paradigm.block_s: must be <= 600, got 601"),
        ({"paradigm": {"repeats": 1001}}, "paradigm.repeats: must be <= 1000, got 1001"),
        ({"paradigm": {"seed": -1}}, "paradigm.seed: must be >= 0, got -1"),
        ({"training": {"seed": 2 ** 32}}, "training.seed: must be < 4294967296, got 4294967296"),
        ({"amplifier": {"sfreq": 200_000}}, "amplifier.sfreq: must be <= 100000, got 200000.0"),
        ({"amplifier": {"buffer_s": 1}}, "amplifier.buffer_s: must be > 1, got 1.0"),
        ({"amplifier": {"stall_timeout_s": 0}}, "amplifier.stall_timeout_s: must be > 0, got 0.0"),
        ({"amplifier": {"simulate": {"noise_uv": 1e7}}}, "amplifier.simulate.noise_uv: must be <= 1000000.0"),
        ({"epochs": {"tmin": -11}}, "epochs.tmin: must be >= -10, got -11.0"),
        ({"paradigm": {"screen": {"size": [0, 600]}}}, "paradigm.screen.size[0]: must be >= 1, got 0"),
        ({"paradigm": {"screen": {"background": [0, 2, 0]}}}, "paradigm.screen.background[1]: must be <= 1, got 2.0"),
        ({"training": {"lr": 11}}, "training.lr: must be <= 10, got 11.0"),
        ({"feedback": {"trials": 100_001}}, "feedback.trials: must be <= 100000, got 100001"),
        ({"training": {"quick_train_after_min": 1441}}, "training.quick_train_after_min: must be <= 1440"),
        ({"paradigm": {"runs": 10 ** 4000}}, "paradigm.runs: must be <= 1000, got <integer of about 4001 digits>"),
        ({"paradigm": {"image_s": 10 ** 400}}, "paradigm.image_s: must be a number, got <integer of about 401"),
        ({"timing": {"static_offset_ms": 1001}}, "timing.static_offset_ms: must be <= 1000, got 1001.0"),
        ({"amplifier": {"simulate": {"display_jitter_ms": -1}}}, "amplifier.simulate.display_jitter_ms: must be >= 0"),
        # cross-checks: things that would crash later
        ({"amplifier": {"channel_types": {"EXG1": "eye"}}},
         "amplifier.channel_types: 'EXG1' has type 'eye'; choose from eeg, eog, ecg, emg, misc, stim, resp"),
        ({"timing": {"photodiode_channel": "Photo"}},
         "timing.photodiode_channel: needs paradigm.photodiode: true"),
        ({"amplifier": {"channels": 8, "simulate": {"high_impedance_channels": [9]}}},
         "amplifier.simulate.high_impedance_channels: channel 9 is not one of 1..8"),
        ({"epochs": {"tmin": -10, "tmax": 10, "margin_s": 5}},
         "epochs.tmax: the epoch -10..10 s plus its margins (5 s, 5 s) (30 s) must be shorter than "
         "amplifier.buffer_s (30 s)"),
        ({"epochs": {"tmin": -10, "tmax": 10, "margin_s": 1, "right_margin_s": 9}},
         "epochs.tmax: the epoch -10..10 s plus its margins (1 s, 9 s) (30 s) must be shorter than "
         "amplifier.buffer_s (30 s)"),
        ({"amplifier": {"buffer_s": 5}, "epochs": {"tmax": 4, "margin_s": 1}},
         "must be shorter than amplifier.buffer_s"),
        ({"amplifier": {"sfreq": 10}, "epochs": {"tmax": 0.1}},
         "epochs.tmax: the window 0..0.1 s holds 1 samples at amplifier.sfreq 10 Hz; it needs at least 2"),
        ({"preprocessing": {"notch_hz": 1, "notch_width_hz": 4}},
         "preprocessing.notch_width_hz: a 4 Hz wide notch at 1 Hz reaches 0 Hz"),
        ({"amplifier": {"sfreq": 250}, "preprocessing": {"bandpass_hz": [124, 124.9], "notch_hz": None}},
         "preprocessing.bandpass_hz: low edge 124.0 Hz must be below 0.99 x Nyquist"),
        ({"paradigm": {"block_s": 600, "image_s": 1e-5}}, "paradigm.image_s: a block of 600 s must hold 1 to 1000000"),
        ({"paradigm": {"block_s": 1e-9, "image_s": 1}}, "paradigm.image_s: a block of 1e-09 s must hold 1 to"),
        ({"paradigm": {"images_per_class": 100_000, "repeats": 1000, "block_s": 1, "image_s": 1}},
         "paradigm.images_per_class: 2 classes x 100000 images x 1000 repeats = 200000000 trials, at most"),
        ({"preprocessing": {"representation": "erp", "erp_bin_ms": 600}},
         "preprocessing.erp_bin_ms: one bin (600 samples at 1000 Hz) is longer than the epoch (500 samples)"),
    ],
)
def test_bounds_and_cross_checks(tmp_path, patch, needle):
    path = write(tmp_path, base(tmp_path, **patch))
    with pytest.raises(ProtocolError) as exc:
        load_protocol(path)
    msg = str(exc.value)
    assert msg.startswith(str(path) + ": ")
    assert needle in msg
    assert "\n" not in msg and len(msg) < 400


def _hostile(tmp_path, text: str | bytes, name="h.yaml") -> str:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ProtocolError) as exc:
        load_protocol(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg and len(msg) < 400, msg
    return msg


def test_billion_laughs_stays_small_and_fast(tmp_path):
    import resource
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines += ["description: *a9"]
    merges = ["m0: &m0 {a: 1, b: 2}"]  # the same with merge keys (<<): exponential in plain PyYAML
    merges += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 60)]
    merges += ["name: *m59"]
    for doc in ("\n".join(lines), "\n".join(merges), "description: &a [*a, *a]"):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        msg = _hostile(tmp_path, doc)
        assert time.perf_counter() - t < 2
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # kB
        assert "expands to more than" in msg or "must be a string" in msg or "unknown field" in msg


@pytest.mark.parametrize(
    "text,needle",
    [
        ("paradigm: {runs: " + "9" * 5000 + "}",
         "line 1, column 18: not valid YAML (an integer of more than 4300 digits)"),
        ("name: 0x" + "f" * 4000, "an integer of more than 4300 digits"),
        ("name: 1" + ":1" * 20000, "an integer of more than 4300 digits"),
        (b"name: caf\xe9\n", "protocol file is not UTF-8 text (byte 0xe9 at offset 9)"),
        (b"\xff\xfe" + "name: x".encode("utf-16-le"), "not UTF-8 text"),
        (b"#" * (1 << 20) + b"\n", "protocol file is larger than 1 MiB"),
        ("a: " + "[" * 50_000 + "]" * 50_000, "not valid YAML (nested too deeply)"),
        ("name: !!python/object/apply:os.system [ls]",
         "line 1, column 7: not valid YAML (could not determine a constructor for the tag"),
        ("name: !" + "x" * 5000 + " 1", "could not determine a constructor for the tag"),
        ("? [a, b]\n: 1\n", "not valid YAML (found unhashable key)"),
        ("1: x\n", "1: unknown field (known: name, description"),
        ("~: x\n", "None: unknown field"),
        ("- a\n- b\n", "the protocol must be a YAML mapping of sections, got list"),
        ("just text\n", "the protocol must be a YAML mapping of sections, got str"),
        ("name: a\x00b\n", "not valid YAML (unacceptable character #x0000"),
        ("name: 2024-02-30\n", "not valid YAML (day is out of range for month)"),
        ('? "' + "x" * 500 + '\\u2028"\n: 1\n', ": unknown field (known: name,"),
        ('stimuli:\n  folder: x\n  classes:\n    ? "' + "a" * 10_000 + '\\n"\n    : [1]\n',
         "stimuli.classes.'aaaaaaaaaa"),
        ("description: [" + ", ".join(["x" * 1000] * 200) + "]", "description: must be a string, got ['xxxx"),
        ("paradigm: {order: \"" + "x\\n" * 1000 + "\"}",
         "paradigm.order: must be one of 'blocked', 'interleaved', got 'x\\nx"),
    ],
)
def test_hostile_files_give_one_line(tmp_path, text, needle):
    assert needle in _hostile(tmp_path, text)


def test_folder_and_unreadable_files(tmp_path):
    import os

    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ProtocolError, match=r"d.yaml: is a folder, not a file$"):
        load_protocol(tmp_path / "d.yaml")
    if os.geteuid() != 0:  # root reads anything
        p = write(tmp_path, base(tmp_path))
        p.chmod(0)
        with pytest.raises(ProtocolError, match="cannot read the protocol file"):
            load_protocol(p)


def test_short_repr_is_bounded():
    from eegloop.errors import short_repr

    loop: list = []
    loop.append(loop)
    assert short_repr(loop) == "[[[[...]]]]"
    assert short_repr(10 ** 10000) == "<integer of about 10001 digits>"
    assert short_repr(-0.5) == "-0.5" and short_repr("fast") == "'fast'"
    for v in ("x\n" * 10 ** 6, {i: list(range(1000)) for i in range(1000)}, b"\x00" * 10 ** 6, "a\u2028b\x85c"):
        s = short_repr(v)
        assert len(s) <= 80 and len(s.splitlines()) == 1
    assert len(short_repr("y" * 1000, limit=20)) == 20


def test_stored_protocol_reads_back_what_a_session_stored(tmp_path):
    """Strict: the stored YAML is validated as a file is (a YAML error names where it was read); tolerant: what a
    report or the database's epochs need is read from any stored text, field by field, without raising."""
    from eegloop.montage import DEFAULT_MONTAGE
    from eegloop.protocol import stored_protocol

    p = protocol_from_dict(base(tmp_path, amplifier={"montage": "biosemi64", "simulate": {"flat_channels": [2]}},
                                timing={"static_offset_ms": 12.5}))
    assert stored_protocol(p.to_yaml()) == p
    assert stored_protocol(p.to_yaml(), tolerant=True) == p
    with pytest.raises(ProtocolError, match=r"^session 3's protocol: line 1, column 11: not valid YAML"):
        stored_protocol("timing: [1", "session 3's protocol")
    with pytest.raises(ProtocolError, match="^stimuli: give a folder"):
        stored_protocol("name: p")

    hand = stored_protocol("name: p\nbogus: 1\namplifier: {montage: biosemi64, channels: many, simulate: true}\n"
                           "timing: {static_offset_ms: 3}\nstimuli: {classes: {a: A, b: 2}}", tolerant=True)
    assert (hand.name, hand.amplifier.montage, hand.amplifier.channels) == ("p", "biosemi64", 128)
    assert hand.amplifier.simulate is not None and hand.timing.static_offset_ms == 3.0
    assert hand.stimuli.classes == {"a": "A", "b": "2"} and hand.stimuli.folder is None  # no cross-checks
    for text in ("timing: [1", "- a list", "", "amplifier: 5\ntiming: {static_offset_ms: huge}"):
        got = stored_protocol(text, tolerant=True)
        assert got.amplifier.montage == DEFAULT_MONTAGE and got.timing.static_offset_ms == 0.0


def test_calibration_blocks_counts_whole_blocks_and_what_a_resume_kept():
    """session.calibration_min's rule (the visit's and `protocol check`'s): whole blocks in order until that many
    minutes of stimuli are in, the blocks a resumed session already has counted first."""
    from eegloop.protocol.design import calibration_blocks

    assert calibration_blocks(1, [25] * 4) == 3  # 25, 50, then 75 s >= 60 s
    assert calibration_blocks(1, [25] * 4, have_s=50) == 1
    assert calibration_blocks(1, [25] * 4, have_s=60) == 0
    assert calibration_blocks(50, [25] * 4) == 4  # more than the design holds: every block
    assert calibration_blocks(0.5, [30, 10]) == 1  # exactly reached by the first block
