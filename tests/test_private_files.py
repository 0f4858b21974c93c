"""Everything eegloop writes in the data folder is its owner's alone, whatever the umask (issue 25): raw
BrainVision files, feedback images (generated per trial and the bank), drawn stimuli, CLIP features, models,
reports."""
from __future__ import annotations

import os
import stat

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX modes")


def _modes(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_a_visit_writes_only_private_files(tmp_path, display, short_protocol):
    from eegloop.database import Database
    from eegloop.decoder import quick_train
    from eegloop.feedback.loop import run_feedback
    from eegloop.feedback.tiny import build_tiny_pipeline
    from eegloop.report import write_report
    from eegloop.session import record_session

    sd = build_tiny_pipeline(tmp_path / "tiny-sd")
    data = tmp_path / "data"
    old = os.umask(0o022)
    try:
        proto = short_protocol(stimuli={"folder": str(data / "stimuli")},  # drawn inside it, as the demo does
                               paradigm={"block_s": 1.0, "images_per_class": 10},
                               decoder={"model": "kd_erp"}, training={"max_epochs": 3},
                               teacher={"enabled": True, "model": "tiny-random-clip", "pretrained": None},
                               feedback={"trials": 2, "generator": str(sd), "size_px": 64, "bank_per_class": 1,
                                         "display_s": 0.1, "steps": 1})
        db = Database(None, data_dir=data)
        rec = record_session(proto, "P1", db, simulate=True, progress=None)
        quick_train(db, "P1", progress=False)
        for mode in ("live", "bank"):
            run_feedback(proto, "P1", db, simulate=True, session_id=rec.session_id, progress=None, mode=mode,
                         trial_offset=100 if mode == "bank" else 0)
        write_report(db, rec.session_id)
    finally:
        os.umask(old)
    modes = _modes(data)
    kinds = {p.split(os.sep)[0] for p in modes}
    assert {"raw", "images", "models", "reports", "cache", "stimuli"} <= kinds, kinds
    assert any(p.endswith(".eeg") for p in modes) and any("trial-" in p for p in modes)
    assert any("bank_" in p for p in modes) and any(p.endswith(".npy") for p in modes)
    wrong = {p: oct(m) for p, m in modes.items()
             if m != (0o700 if os.path.isdir(data / p) else 0o600)}
    assert not wrong, wrong


def test_raw_files_are_private_from_their_first_byte(tmp_path):
    """The BrainVision writer itself makes its three files 0600 before writing the header (not a chmod after)."""
    import numpy as np

    from eegloop.recorder.rawfile import BrainVisionWriter

    old = os.umask(0o022)
    try:
        w = BrainVisionWriter(tmp_path / "raw" / "r.vhdr", ["C3", "C4"], 250.0)
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (w.vhdr, w.eeg, w.vmrk)}
        w.write(np.zeros((2, 10), np.float32))
        w.close()
    finally:
        os.umask(old)
    assert modes == {"r.vhdr": 0o600, "r.eeg": 0o600, "r.vmrk": 0o600}
    assert stat.S_IMODE((tmp_path / "raw").stat().st_mode) == 0o700
