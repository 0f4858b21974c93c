"""BIDS export, read back with MNE-BIDS and compared with the database, and checked by the official validator."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
VALIDATOR_VERSION = "1.15.0"  # the npm package bids-validator, as .ci/run installs it
VALIDATOR_HOME = REPO / ".ci" / "bids-validator"  # gitignored


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, display):
    """A short simulated session, recorded once for this module: (data folder, session id, protocol)."""
    from eegloop.database import Database
    from eegloop.lsl import configure_lsl
    from eegloop.protocol import protocol_from_dict
    from eegloop.session import record_session

    configure_lsl("machine")
    tmp = tmp_path_factory.mktemp("bids-session")
    tag = uuid.uuid4().hex[:8]
    proto = protocol_from_dict({
        "name": "short",
        "stimuli": {"folder": str(tmp / "stim"), "synthesize": True, "synth_size_px": 64,
                    "classes": {"circle": "red circle", "square": "blue square"}},
        "paradigm": {"block_s": 1.0, "image_s": 0.1, "pause_s": 0.1, "images_per_class": 10, "runs": 2,
                     "order": "interleaved", "wait_for_space": False, "instructions": "",
                     "screen": {"fullscreen": False, "size": [320, 240], "image_size_px": 128}},
        "amplifier": {"stream_name": f"eeg-{tag}", "marker_stream_name": f"mk-{tag}", "channels": 32,
                      "sfreq": 250, "simulate": {"seed": 2, "snr": 0.6}},
        "epochs": {"tmin": 0.0, "tmax": 0.3, "margin_s": 0.1},
        "teacher": {"enabled": False},
        "signal_check": {"before_visit": False},
    }, source=str(tmp / "short.yaml"))
    db = Database(f"sqlite:///{tmp / 'e.db'}", data_dir=tmp)
    rec = record_session(proto, "S07", db, simulate=True, progress=None)
    db.close()
    return tmp, rec.session_id, proto


def _db(data: Path):
    from eegloop.database import Database

    return Database(f"sqlite:///{data / 'e.db'}", data_dir=data)


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_export_bids_reads_back_like_the_database(tmp_path, recorded):
    from mne_bids import BIDSPath, read_raw_bids

    import mne

    from eegloop.bids import export_bids
    from eegloop.cli import main

    data, sid, proto = recorded
    db = _db(data)
    out = tmp_path / "bids"
    res = export_bids(db, "S07", out)
    runs = db.get_runs(sid)
    assert len(res.runs) == len(runs) >= 2 and not res.skipped
    stim = db.get_events(sid, "stim_on")
    assert res.n_events == len(stim)
    task = "".join(ch for ch in proto.name if ch.isalnum())
    for run in runs:
        bp = BIDSPath(subject="S07", session=f"{sid:04d}", task=task, run=run.index, datatype="eeg", root=out)
        raw = read_raw_bids(bp, verbose="error")
        mine = mne.io.read_raw_brainvision(db.abspath(run.raw_path), verbose="error")
        assert raw.ch_names == mine.ch_names and raw.info["sfreq"] == mine.info["sfreq"]
        assert np.allclose(raw.get_data(), mine.get_data())  # the same samples, in volts
        shown = [e.payload for e in stim if e.payload.get("run") == run.index]
        assert sorted(raw.annotations.description) == sorted(p["class"] for p in shown)
        with open(bp.copy().update(suffix="events", extension=".tsv").fpath, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert [r["trial_type"] for r in rows] == [p["class"] for p in sorted(shown, key=lambda p: p["trial"])]
        assert [r["stim_file"] for r in rows] == [f"{p['class']}/{p['image']}"
                                                  for p in sorted(shown, key=lambda p: p["trial"])]
        # every stim_file is in the dataset's stimuli/ folder, the very image that was shown
        for r in rows:
            copy = out / "stimuli" / r["stim_file"]
            assert copy.read_bytes() == (Path(proto.stimuli.folder) / r["stim_file"]).read_bytes()
        # the sample column points at each marker's sample in the raw file
        onsets = {round(o, 3) for o in mine.annotations.onset}
        assert all(round(int(r["sample"]) / raw.info["sfreq"], 3) in onsets for r in rows)
    assert (out / "participants.tsv").read_text().count("sub-S07") == 1
    assert (out / "dataset_description.json").is_file()
    assert not [p for p in tmp_path.iterdir() if "eegloop-export" in p.name]  # the temporary folder is gone
    # a second export into the same dataset: the same files, participants listed once
    before = _tree(out)
    export_bids(db, "S07", out)
    assert _tree(out).keys() == before.keys() and (out / "participants.tsv").read_text().count("sub-S07") == 1
    assert not [p for p in out.iterdir() if "eegloop-export" in p.name]
    # the command line: bad subject is one line and exit 2
    rc = main(["export", "bids", "--subject", "nobody", "--out", str(tmp_path / "b2"),
               "--db", f"sqlite:///{data / 'e.db'}"])
    assert rc == 2 and not (tmp_path / "b2").exists()
    # an --out that cannot hold a dataset: one line, exit 2, before any work
    (tmp_path / "afile").write_text("")
    rc = main(["export", "bids", "--subject", "S07", "--out", str(tmp_path / "afile" / "x"),
               "--db", f"sqlite:///{data / 'e.db'}", "--data", str(data)])
    assert rc == 2


def _validator() -> list[str]:
    """The command that runs bids-validator: $EEGLOOP_BIDS_VALIDATOR, the copy .ci/run installs, or one
    installed here now from the npm registry. Skips only where node is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Debian: apt-get install nodejs npm): bids-validator is a node program")
    given = os.environ.get("EEGLOOP_BIDS_VALIDATOR")
    if given:
        return [given]
    exe = VALIDATOR_HOME / "node_modules" / ".bin" / "bids-validator"
    pkg = VALIDATOR_HOME / "node_modules" / "bids-validator" / "package.json"
    if not (exe.exists() and pkg.is_file() and json.loads(pkg.read_text())["version"] == VALIDATOR_VERSION):
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not: install npm, or run .ci/run"
        p = subprocess.run([npm, "install", "--prefix", str(VALIDATOR_HOME), "--no-audit", "--no-fund",
                            "--loglevel=error", f"bids-validator@{VALIDATOR_VERSION}"],
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"npm install bids-validator@{VALIDATOR_VERSION} failed: {p.stderr[-2000:]}"
    return [str(exe)]


def test_official_validator_finds_no_errors(tmp_path, recorded):
    """bids-validator (the npm package, 1.15) on the export of a recorded session: 0 errors; its warnings are
    the ones README lists."""
    from eegloop.cli import main

    cmd = _validator()
    data, sid, _ = recorded
    out = tmp_path / "bids"
    assert main(["export", "bids", "--subject", "S07", "--out", str(out), "--db", f"sqlite:///{data / 'e.db'}",
                 "--data", str(data)]) == 0
    p = subprocess.run([*cmd, str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert p.stdout.strip(), p.stderr[-2000:]
    issues = json.loads(p.stdout)["issues"]
    errors = [(i["key"], i.get("reason")) for i in issues["errors"]]
    assert errors == [], errors
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("<!-- bids-validator-warnings -->"):]
    unlisted = [i["key"] for i in issues["warnings"] if f"`{i['key']}`" not in section]
    assert not unlisted, f"bids-validator warns {unlisted}: list them in README (bids-validator-warnings)"
    assert [f for f in (out / "stimuli").rglob("*.png")]


def test_an_unusable_raw_file_is_refused_with_the_readers_sentence(tmp_path, recorded, capsys):
    """A raw file with NaN samples: export refuses it before writing anything, with the sentence replay gives."""
    from eegloop.cli import main

    data, sid, _ = recorded
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    db = _db(copy)
    raw = db.abspath(db.get_runs(sid)[1].raw_path)
    db.close()
    eeg = raw.with_suffix(".eeg")
    x = np.fromfile(eeg, dtype="<f4")
    x[100:140] = np.nan  # a run of NaN samples in the second run
    x.tofile(eeg)
    out = tmp_path / "bids"
    rc = main(["export", "bids", "--subject", "S07", "--out", str(out), "--db", f"sqlite:///{copy / 'e.db'}",
               "--data", str(copy)])
    _, export_err = capsys.readouterr()
    assert rc == 2 and not out.exists() and "non-finite samples (NaN/inf)" in export_err
    assert main(["replay", str(raw), "--speed", "1000"]) == 2
    _, replay_err = capsys.readouterr()
    assert export_err == replay_err  # one reader, one sentence
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def _limited(args, limit: int):
    """``eegloop ARGS`` in a child process whose files cannot grow past ``limit`` bytes (a full disk)."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "eegloop", *map(str, args)], preexec_fn=cap, capture_output=True,
                          text=True, timeout=300, env=env)


def test_a_failed_export_leaves_the_dataset_as_it_was(tmp_path, recorded):
    """The disk fills while the dataset is written (RLIMIT_FSIZE: no file past 40 kB; SQLite's 32 kB -shm fits,
    each run's 32-channel raw data do not): one line, exit 2; a new --out is not created, an existing dataset
    keeps every byte."""
    data, sid, _ = recorded
    db = _db(data)
    assert all(db.abspath(r.raw_path).with_suffix(".eeg").stat().st_size > 40_000 for r in db.get_runs(sid))
    url = f"sqlite:///{data / 'e.db'}"
    out = tmp_path / "bids"
    p = _limited(["export", "bids", "--subject", "S07", "--out", out, "--db", url, "--data", data], 40_000)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("eegloop")]
    assert p.returncode == 2 and len(lines) == 1 and "File too large" in lines[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr and list(tmp_path.iterdir()) == []
    from eegloop.bids import export_bids

    export_bids(_db(data), "S07", out)
    before = _tree(out)
    p = _limited(["export", "bids", "--subject", "S07", "--out", out, "--db", url, "--data", data], 40_000)
    assert p.returncode == 2 and "File too large" in p.stderr, p.stderr[-2000:]
    assert _tree(out) == before
