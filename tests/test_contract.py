"""The bad-argument contract, for every option of every command, derived from the parser itself.

The test walks ``eegloop.cli.build_parser()`` (every command, every option and positional), derives bad values
from each option's declared type (:mod:`eegloop.cli.types`: its bounds, lengths and kind of path) or its
``choices``, and runs each through ``eegloop.cli.main()`` in-process, in a throw-away folder with a database
holding rows. Every case must give exit status 2 and one line ``eegloop: error: ...`` naming the option, no
traceback, nothing on stdout, no file created or changed, the database's rows unchanged. An option whose type
declares no range (a plain ``str``/``int``/``float``/``Path`` type, or none) fails the test, so a new option is
covered, or refused, by itself.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sqlite3
import time
from pathlib import Path

import pytest

from eegloop.cli import types as T
from eegloop.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
NON_UTF8 = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Python hands a Latin-1 byte on the command line
UNDER_PROC = "/proc/eegloop-contract-x"  # a path under /proc: nothing can be created there, not even by root


# -- walking the parser -----------------------------------------------------------------------------------
def commands(parser: argparse.ArgumentParser, path: tuple = ()):
    """(command words, leaf parser) for every command, e.g. (('export', 'bids'), parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for a in subs:
        for name, sub in a.choices.items():
            yield from commands(sub, path + (name,))


def takes_value(a: argparse.Action) -> bool:
    return a.nargs != 0


def name_of(a: argparse.Action) -> str:
    return max(a.option_strings, key=len) if a.option_strings else (a.metavar or a.dest)


def names_of(a: argparse.Action) -> list[str]:
    return list(a.option_strings) or [a.metavar or a.dest]


def undeclared(a: argparse.Action) -> bool:
    """True for a value-taking option with no declared range: neither an eegloop type nor choices."""
    return takes_value(a) and not isinstance(a.type, T.ArgType) and not a.choices


# -- values derived from the declared types ---------------------------------------------------------------
def valid_value(a: argparse.Action, w: Path) -> str:
    t = a.type
    if a.choices and not isinstance(t, T.ArgType):
        return str(next(iter(a.choices)))
    k = t.kind
    if k == "number":
        return f"{(t.lo + t.hi) / 2:g}"
    if k in ("integer", "port"):
        return str(t.lo)
    if k == "db_url":
        return f"sqlite:///{w / 'data' / 'eegloop.db'}"
    if k == "events":
        return "1=a,2=b"
    if k == "channel types":
        return "Right AUX=misc"
    if k == "text":
        return "S1" if isinstance(t, T.SubjectCode) else "x"
    if k == "list":
        return "S1,S2" if isinstance(t.item, T.SubjectCode) else "a,b"
    if k == "host":
        return "127.0.0.1"
    if k == "in_file":
        return str(w / ("proto.yaml" if not t.suffixes else "file" + t.suffixes[0]))
    if k == "in_folder":
        return str(w / "dir")
    if k == "in_path":
        return str(w / "rec.csv")
    if k == "out_file":
        return str(w / ("new" + (t.suffixes[0] if t.suffixes else ".out")))
    if k in ("out_folder", "data_folder"):
        return str(w / "newdir")
    raise AssertionError(f"{name_of(a)}: type kind {k!r} unknown to the contract test: teach it bad values")


def bad_values(a: argparse.Action, w: Path) -> list[str]:
    """Values the option's declared type (or choices) must refuse."""
    t = a.type
    out = ["", NON_UTF8]
    if a.choices and not isinstance(t, T.ArgType):
        return out + ["nonsense", "x" * 5000, "a\nb"]
    k = t.kind
    if k == "number":
        below = f"{t.lo:g}" if t.lo_open else f"{t.lo - max(1.0, abs(t.lo)):g}"
        above = f"{t.hi:g}" if t.hi_open else f"{t.hi * 10 + 1:g}"
        out += ["nan", "inf", "-inf", "abc", "1e999", "9" * 400, below, above, "1,5"]
        out += [v for v in ("0", "-1") if not _inside(t, float(v))]
    elif k in ("integer", "port"):
        out += ["abc", "1.5", "nan", "inf", str(t.lo - 1), str(t.hi + 1), "9" * 5000, "0x10"]
        out += [v for v in ("0", "-1") if not t.lo <= int(v) <= t.hi]
    elif k in ("text", "db_url", "events", "channel types"):
        out += [" ", "a\nb", "tab\there", "x" * (t.max_chars + 1)]
        if k == "channel types":
            out += ["=", "AUX=", "=misc", "AUX", "AUX=brain", "AUX=misc,X"]
        if getattr(t, "pattern", None) is not None:
            out += [v for v in ("a b", "a-b", "!", "é") if not t.pattern.fullmatch(v)]
        if k == "events":
            out += ["=", "1=", "1=a,1=b", "1", str(w / "missing.yaml"), str(w / "dir" / "x.yaml")]
    elif k == "list":
        good = valid_value(a, w).split(",")
        out += [",", f"{good[0]},", f"{good[0]},,{good[1]}", f"{good[0]},{good[0]}", f",{good[0]}", "a\nb",
                ",".join(["x"] * (t.max_items + 1))]
        if t.item.pattern is not None:
            out += [f"{good[0]},{v}" for v in ("a b", "!") if not t.item.pattern.fullmatch(v)]
    elif k == "host":
        out += ["999.1.1.1", "1.2.3", "256.0.0.1", "-bad", "a..b", "a b", "x" * 254, "host_name"]
    elif k == "in_file":
        out += [str(w / "missing.yaml"), str(w / "dir"), str(w / "fifo"), UNDER_PROC, str(w / "afile" / "x")]
        if t.suffixes:
            out.append(str(w / "afile"))
    elif k == "in_folder":
        out += [str(w / "missing"), str(w / "afile"), str(w / "fifo"), UNDER_PROC]
    elif k == "in_path":
        out += [str(w / "missing.csv"), str(w / "fifo"), UNDER_PROC, str(w / "afile" / "x")]
    elif k == "out_file":
        sfx = t.suffixes[0] if t.suffixes else ".out"
        out += [str(w / "dir"), str(w / "fifo"), UNDER_PROC + sfx, UNDER_PROC + "/deeper" + sfx, str(w / "missing" / ("x" + sfx)),
                str(w / "afile" / ("x" + sfx))]
        if t.suffixes:
            out += [str(w / "x.wrong"), str(w / "x")]
    elif k in ("out_folder", "data_folder"):
        out += [str(w / "afile"), str(w / "fifo"), UNDER_PROC, UNDER_PROC + "/deeper", str(w / "afile" / "sub")]
    else:
        raise AssertionError(f"{name_of(a)}: type kind {k!r} unknown to the contract test: teach it bad values")
    if k in ("in_file", "in_folder", "in_path", "out_file", "out_folder", "data_folder"):
        out += [str(w / ("x" * 256)), str(w / ("é" * 128) / "x"), "x" * (T.PATH_MAX_CHARS + 1)]  # names too long
    return out


def _inside(t: T.Number, x: float) -> bool:
    return (t.lo < x if t.lo_open else t.lo <= x) and (x < t.hi if t.hi_open else x <= t.hi)


# -- one command line per case ----------------------------------------------------------------------------
def base_argv(words: tuple, parser: argparse.ArgumentParser, w: Path, skip: argparse.Action) -> tuple[list, list]:
    """(options, positionals) that make the command line valid but for ``skip``'s value."""
    groups = [g for g in parser._mutually_exclusive_groups]
    rivals = {id(x) for g in groups if skip in g._group_actions for x in g._group_actions}
    opts, pos = [], []
    for g in groups:  # a required group: its first member, unless the option under test is one of them
        if g.required and id(skip) not in rivals:
            first = g._group_actions[0]
            opts += [first.option_strings[-1]] + ([valid_value(first, w)] if takes_value(first) else [])
    for a in parser._actions:
        if a is skip or id(a) in rivals or isinstance(a, argparse._HelpAction):
            continue
        if not a.option_strings:
            if a.nargs != "?":
                pos.append(valid_value(a, w))
        elif a.required:
            opts += [f"{a.option_strings[-1]}={valid_value(a, w)}"]
    if "--data" in {s for a in parser._actions for s in a.option_strings} and skip.dest not in ("data", "db"):
        opts += [f"--data={w / 'data'}"]  # if a case ever got through, it would meet the throw-away database
    return opts, pos


def cases_for(words, parser, a, w):
    """(argv, what) for every bad value of option ``a`` of command ``words``."""
    opts, pos = base_argv(words, parser, w, a)
    out = []
    if not takes_value(a):  # a flag: a value given to it is refused
        for s in a.option_strings:
            if s.startswith("--"):
                out.append(([*words, *opts, f"{s}=x", *pos], f"{s}=x"))
        return out
    for v in bad_values(a, w):
        if a.option_strings:
            argv = [*words, *opts, f"{a.option_strings[-1]}={v}", *pos]
        else:
            at = [x for x in parser._actions if not x.option_strings].index(a)
            p = list(pos)
            p.insert(at, v)
            argv = [*words, *opts, *p]
        out.append((argv, repr(v)[:60]))
    if isinstance(a, T.UniqueItems) or a.nargs == "+":
        v = valid_value(a, w)
        if a.option_strings:
            out.append(([*words, *opts, a.option_strings[-1], v, v, *pos], "repeated"))
        else:
            at = [x for x in parser._actions if not x.option_strings].index(a)
            out.append(([*words, *opts, *pos[:at], v, v, *pos[at:]], "repeated"))
    return out


# -- the world a case must leave as it was ------------------------------------------------------------------
def snapshot(w: Path, content: bool = False) -> dict:
    """Every path under ``w`` with its kind, size and modification time (and its bytes' hash with ``content``)."""
    out = {}
    for root, dirs, files in os.walk(w):
        for n in dirs + files:
            p = Path(root) / n
            st = p.lstat()
            if p.is_file() and not p.is_symlink():
                out[str(p)] = (st.st_size, st.st_mtime_ns) + ((hashlib.sha256(p.read_bytes()).hexdigest(),) if content
                                                               else ())
            else:
                out[str(p)] = (st.st_mode, st.st_mtime_ns)
    return out


def db_rows(db: Path) -> dict:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


@pytest.fixture
def world(tmp_path, monkeypatch, capsys):
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.chdir(w)  # defaults (./eegloop-data, ./eegloop-demo) land here, where they are watched
    (w / "dir").mkdir()
    (w / "afile").write_text("x")
    (w / "proto.yaml").write_bytes((REPO / "protocols" / "demo.yaml").read_bytes())
    (w / "rec.csv").write_text("timestamps,C3,Marker0\n0,1,0\n0.01,2,1\n")
    os.mkfifo(w / "fifo")
    assert main(["subject", "add", "S1", "--data", str(w / "data")]) == 0
    assert main(["subject", "add", "S2", "--data", str(w / "data")]) == 0
    capsys.readouterr()
    return w


@pytest.mark.slow
def test_every_option_refuses_its_bad_values(world, capsys):
    w = world
    parser = build_parser()
    found = list(commands(parser))
    assert len(found) >= 25, [" ".join(c) for c, _ in found]
    missing = [f"eegloop {' '.join(words)} {name_of(a)}" for words, p in found for a in p._actions
               if undeclared(a) and not isinstance(a, argparse._HelpAction)]
    assert not missing, ("options whose type declares no range (give them a type from eegloop.cli.types, or "
                         f"choices): {', '.join(missing)}")
    rows = db_rows(w / "data" / "eegloop.db")  # (reading it touches SQLite's -shm file: before the snapshot)
    before, first = snapshot(w), snapshot(w, content=True)
    t0 = time.monotonic()
    n_options = n_cases = 0
    failures = []
    for words, p in found:
        for a in p._actions:
            if isinstance(a, argparse._HelpAction) and not a.option_strings:
                continue
            cases = cases_for(words, p, a, w)
            assert cases, f"eegloop {' '.join(words)} {name_of(a)}: no bad value derived"
            n_options += 1
            for argv, what in cases:
                n_cases += 1
                try:
                    rc = main(argv)
                except SystemExit as exc:  # argparse's own exit: not the contract's one line
                    rc = f"SystemExit({exc.code})"
                out, err = capsys.readouterr()
                lines = err.strip().splitlines()
                problem = None
                if rc != 2:
                    problem = f"exit {rc}"
                elif len(lines) != 1 or not lines[0].startswith("eegloop: error: "):
                    problem = f"not one 'eegloop: error:' line: {err[:300]!r}"
                elif not any(n in lines[0] for n in names_of(a)):
                    problem = f"the line does not name {name_of(a)}: {lines[0][:300]!r}"
                elif "Traceback" in err or out:
                    problem = f"output: {out[:200]!r} {err[:200]!r}"
                if problem:
                    failures.append(f"eegloop {' '.join(words)} {name_of(a)} {what}: {problem}")
                    continue
                now = snapshot(w)
                if now != before:
                    changed = sorted(set(now.items()) ^ set(before.items()))[:3]
                    failures.append(f"eegloop {' '.join(words)} {name_of(a)} {what}: files changed: {changed}")
                    before = now
    assert snapshot(w) == before and snapshot(w, content=True) == first  # every byte as it was
    assert db_rows(w / "data" / "eegloop.db") == rows
    seconds = time.monotonic() - t0
    with capsys.disabled():
        print(f"\ncontract: {len(found)} commands, {n_options} options, {n_cases} bad values refused "
              f"in {seconds:.1f} s")
    assert not failures, f"{len(failures)} of {n_cases} cases broke the contract:\n" + "\n".join(failures[:40])
    assert seconds < 60


def test_the_issues_examples(world, capsys):
    """The examples the contract was first broken with (issue 29), each refused as the issue asks."""
    w = world
    rec = w / "rec.csv"
    expect = [
        (["replay", rec, "--speed=0"], "--speed: must be a number > 0 and at most 1000"),
        (["replay", rec, "--speed=-1"], "--speed:"),
        (["replay", rec, "--speed=inf"], "--speed:"),
        (["replay", rec, "--speed=nan"], "--speed:"),
        (["replay", rec, "--wait=-5"], "--wait: must be a number from 0 to 3600 seconds"),
        (["stimuli", "synth", "--size=0", "--out", w / "s"], "--size: must be a whole number from 16 to 2048"),
        (["stimuli", "synth", "--size=1000000", "--out", w / "s"], "--size:"),
        (["stimuli", "synth", "--per-class=0", "--out", w / "s"], "--per-class:"),
        (["stimuli", "synth", "--out", "/proc/x"], "--out: cannot create it in /proc"),
        (["simulate", "--sfreq=0"], "--sfreq:"),
        (["simulate", "--channels=0"], "--channels:"),
        (["simulate", "--duration=-1"], "--duration:"),
        (["evaluate", "--subjects", "S2,S2"], "--subjects: 'S2' is given twice"),
        (["evaluate", "--subjects", "S2,,"], "--subjects: item 2 is empty"),
        (["evaluate", "--subject", "S1", "--methods", "riemann,riemann"], "--methods: 'riemann' is given twice"),
        (["protocol", "new", "--from", "ferrante2023", "/proc/x.yaml"], "FILE: cannot write in folder /proc"),
        (["report", "--session", "1", "--out", "/proc/x"], "--out: cannot create it in /proc"),
        (["check-timing", "--protocol", w / "proto.yaml", "--plot", "/proc/x.png"], "--plot: cannot write in folder"),
        (["check-timing", "--protocol", w / "proto.yaml", "--plot", w / "dir"], "--plot: is a folder"),
        (["console", "--console-host", "999.1.1.1"], "--console-host: must be an IPv4 address"),
        (["console", "--console-host", "192.0.2.1"], "--console-host: 192.0.2.1 is not an address of this machine"),
    ]
    before = snapshot(w)
    for argv, needle in expect:
        rc = main([str(x) for x in argv] + ["--data", str(w / "data")])
        out, err = capsys.readouterr()
        assert rc == 2 and err.count("\n") == 1 and needle in err and not out, (argv, rc, out, err)
    assert snapshot(w) == before


def test_a_port_in_use_blames_the_port(world, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = main(["console", "--console-port", str(port), "--data", str(world / "data")])
    out, err = capsys.readouterr()
    assert rc == 2 and f"--console-port: port {port} is in use" in err and "--console-host" not in err, err


def test_types_accept_what_they_declare(tmp_path):
    """The other side of the contract: values inside the declared range pass, as they did before."""
    assert T.Number(0, 1000, lo_open=True)("0.5") == 0.5 and T.Number(0, 1000, lo_open=True)("1000") == 1000
    assert T.Integer(1, 10)(" 3 ") == 3 and T.Port()("0") == 0 and T.Port()("65535") == 65535
    assert T.Host()("localhost") == "localhost" and T.Host()("::1") == "::1" and T.Host()("lab-pc.local") == "lab-pc.local"
    assert T.CommaList(T.Text("a name", 64), "names")("TP9, AF7,AF8") == ["TP9", "AF7", "AF8"]
    assert T.SubjectCode(legacy=True)("old-code") == "old-code"
    (tmp_path / "d").mkdir()
    assert T.OutputFolder()(str(tmp_path / "d")) == tmp_path / "d"
    assert T.OutputFolder()(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert T.OutputFile(suffixes=(".png",))(str(tmp_path / "x.PNG")) == tmp_path / "x.PNG"
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # probes leave nothing
    assert math.isclose(T.Number(-10, 10)("-2.5e0"), -2.5)
