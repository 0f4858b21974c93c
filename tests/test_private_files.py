"""Everything eegloop writes in the data folder is its owner's alone, whatever the umask (issue 25). A whole visit's
folder (raw files, generated and bank images, drawn stimuli, CLIP features, models) is walked by
tests/feedback/test_feedback.py::test_closed_loop_block and the demo's by tests/test_session.py."""
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
