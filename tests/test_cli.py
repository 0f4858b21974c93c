"""The CLI as a user types it: exit codes and one-line errors, no tracebacks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def eegloop(*args, cwd=None, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "eegloop", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=120)


def test_help_on_every_command():
    for args in (["--help"], ["protocol", "check", "--help"], ["db", "init", "--help"],
                 ["subject", "add", "--help"], ["stimuli", "synth", "--help"]):
        r = eegloop(*args)
        assert r.returncode == 0 and "usage: eegloop" in r.stdout


def test_design_only_ferrante():
    r = eegloop("protocol", "check", "--design-only", REPO / "protocols" / "ferrante2023.yaml")
    assert r.returncode == 0, r.stderr
    assert "classes:          40" in r.stdout and "2000" in r.stdout and "23.3 min" in r.stdout


def test_design_only_says_what_calibration_min_cuts(tmp_path):
    """session.calibration_min in `protocol check`: the block the recording ends after (whole blocks until that
    many minutes of stimuli, as the visit counts them), or that it changes nothing."""
    data = yaml.safe_load((REPO / "protocols" / "ferrante2023.yaml").read_text())
    for minutes, says in ((5, "session.calibration_min 5: the recording ends after block 12 of 40 (5.0 of 16.7 min "
                                "of stimuli); the quick-train and feedback follow"),
                          (30, "session.calibration_min 30: the design holds 16.7 min of stimuli, so every block is "
                               "shown (it changes nothing)")):
        data.setdefault("session", {})["calibration_min"] = minutes
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
        r = eegloop("protocol", "check", "--design-only", tmp_path / "p.yaml", "--data", tmp_path / "d")
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == says, r.stdout + r.stderr
    assert not (tmp_path / "d").exists()


def test_missing_images_exit_nonzero():
    r = eegloop("protocol", "check", REPO / "protocols" / "ferrante2023.yaml")
    assert r.returncode != 0
    assert "stimuli.folder" in r.stderr and "images/eeg-imagenet" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_broken_protocol_one_line(tmp_path):
    data = yaml.safe_load((REPO / "protocols" / "demo.yaml").read_text())
    data["paradigm"]["image_s"] = "slow"
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump(data))
    r = eegloop("protocol", "check", p)
    assert r.returncode == 2
    assert r.stderr.strip() == f"eegloop: error: {p}: paradigm.image_s: must be a number, got 'slow'"


def test_db_and_subjects(tmp_path):
    r = eegloop("db", "init", "--data", tmp_path)
    assert r.returncode == 0 and "schema at revision" in r.stdout
    assert (tmp_path / "eegloop.db").is_file()
    assert eegloop("subject", "add", "P001", "--data", tmp_path).returncode == 0
    r = eegloop("subject", "add", "P001", "--data", tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert eegloop("subject", "add", "P002", "--db", url).returncode == 0
    r = eegloop("subject", "list", env={"EEGLOOP_DB": url})
    assert "P002" in r.stdout and "P001" not in r.stdout


def test_stimuli_synth_then_check(tmp_path):
    r = eegloop("stimuli", "synth", "--classes", "3", "--per-class", "5", "--out", tmp_path / "s", "--size", "32")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["circle", "square", "triangle"]
    proto = {"stimuli": {"folder": "s"}, "paradigm": {"block_s": 2.5, "images_per_class": 5, "runs": 3}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto))
    r = eegloop("protocol", "check", tmp_path / "p.yaml")
    assert r.returncode == 0, r.stderr
    assert "15 images in 3 classes" in r.stdout
