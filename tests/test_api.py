"""The Python API: what the command line does, ``import eegloop`` does; the examples run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_is_light_and_every_public_name_resolves():
    code = ("import sys, eegloop; light = not ({'torch', 'psychopy', 'pylsl'} & set(sys.modules)); "
            "[getattr(eegloop, n) for n in eegloop.__all__]; print(light, len(eegloop.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    light, n = r.stdout.split()
    assert light == "True" and int(n) > 20
    import eegloop

    assert {"load_protocol", "Database", "EpochSet", "quick_train", "evaluate", "OnlineDecoder",
            "VirtualAmplifier", "simulate_epochs"} <= set(eegloop.__all__) == set(dir(eegloop))
    assert eegloop.evaluate is __import__("eegloop.decoder", fromlist=["evaluate"]).evaluate
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        eegloop.nope  # noqa: B018


@pytest.mark.slow
def test_example_scripts_run(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "examples" / "simulated_subject.py"), str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "chance" in r.stdout and "xDAWN covariances" in r.stdout
    png = tmp_path / "erp.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_load_subject_example_on_a_database(tmp_path):
    """The second example reads a subject back from a database (here: simulated epochs stored through the
    Python API, as an import would), scores it with a shuffled control and draws the ERP on the head."""
    import eegloop

    proto = eegloop.load_protocol(REPO / "protocols" / "demo.yaml")
    stimuli = eegloop.synthesize_stimuli(tmp_path / "images", dict(proto.stimuli.classes), per_class=10, size=32)
    proto = proto.replace(paradigm=__import__("dataclasses").replace(proto.paradigm, images_per_class=10, runs=2))
    es = eegloop.simulate_epochs(proto, eegloop.make_schedule(proto, stimuli))
    db = eegloop.Database(f"sqlite:///{tmp_path / 'eegloop.db'}", data_dir=tmp_path)
    eegloop.import_epochset(db, "S01", proto, es)
    r = subprocess.run([sys.executable, str(REPO / "examples" / "load_subject.py"), str(tmp_path), "S01",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "40 epochs of 4 classes, 32 channels" in r.stdout and "shuffled-label control" in r.stdout
    png = tmp_path / "out" / "erp_topomap.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_to_mne_carries_metadata_positions_and_real_onsets():
    import numpy as np

    import eegloop

    n = 12
    onsets = 1000.0 + np.arange(n) * 0.53 + np.r_[np.zeros(6), np.full(6, 40.0)]  # a 40 s pause in the middle
    es = eegloop.EpochSet(np.ones((n, 3, 50), np.float32), np.where(np.arange(n) % 2, "b", "a"), 100.0, -0.1,
                          ["C3", "C4", "E99"], np.arange(n) // 6 + 1, np.arange(n) // 3 + 1, np.full(n, 7),
                          {"a": "A", "b": "B"}, np.array([f"sha{i}" for i in range(n)]), onsets=onsets,
                          trials=np.arange(n) + 1)
    ep = es.to_mne()
    assert list(ep.metadata.columns) == ["class", "session", "run", "block", "trial", "image", "onset_lsl"]
    assert len(ep["run == 2"]) == 6 and set(ep["block == 1"].metadata["image"]) == {"sha0", "sha1", "sha2"}
    assert len(ep["b"]) == 6 and np.allclose(ep.get_data(copy=False), 1e-6)
    # the events sit at the real onsets (sample = time x sfreq from the first), not at invented positions
    assert np.array_equal(ep.events[:, 0], np.round((onsets - onsets[0]) * 100).astype(int))
    assert np.allclose(ep.metadata["onset_lsl"], onsets) and list(ep.metadata["trial"]) == list(range(1, 13))
    # positions from the montage for the channels it knows (C3, C4), none for the one it does not
    pos = ep.get_montage().get_positions()["ch_pos"]
    assert {c for c, xyz in pos.items() if np.isfinite(xyz).all()} == {"C3", "C4"} and pos["C3"][0] < 0 < pos["C4"][0]
    assert es.to_mne(montage=None).get_montage() is None
    # a session's epochs loaded from the database carry their onsets and the protocol's montage
    sub = es.subset(np.arange(6, 12))
    assert np.allclose(sub.onsets, onsets[6:]) and sub.to_mne().events[0, 0] == 0


def test_installed_package_carries_its_protocols(tmp_path):
    """`pip install .` (not editable): the templates ship inside the package; the demo and `protocol new`
    find them with no source checkout around (run from elsewhere, the checkout's copy shadowed)."""
    import os

    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (target / "eegloop" / "protocols").glob("*.yaml")) == [
        "demo.yaml", "ferrante2023.yaml", "interleaved.yaml", "n170.yaml", "p300.yaml", "things-eeg2.yaml",
        "zero-shot.yaml"]
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import eegloop, eegloop.demo as d; print(eegloop.__file__); print(d.demo_protocol_path()); "
            "print(eegloop.load_protocol(d.demo_protocol_path()).name)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    where, demo, name = r.stdout.split()
    assert where.startswith(str(target)) and demo.startswith(str(target)) and name == "demo"
    r = subprocess.run([sys.executable, "-m", "eegloop", "protocol", "new", "mine.yaml", "--from", "ferrante2023"],
                       capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "eegloop", "protocol", "check", "mine.yaml", "--design-only"],
                       capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0 and "40" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "eegloop", "protocol", "new", "mine.yaml"],
                       capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 2 and r.stderr.strip() == "eegloop: error: mine.yaml: exists already (--force replaces it)"
