"""One reader decides whether a recording is usable: import and replay (and export, tests/test_bids.py) accept or
refuse the same file with the same sentence."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from eegloop.cli import main
from eegloop.recorder.importers import RecordingError, read_recording

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
XDF = DATA / "xdf" / "clock_resets.xdf"


def _xdf(path: Path, labels=("C3", "C4", "Cz"), nan=False, n=1000) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from xdfkit import write_xdf

    x = np.random.default_rng(0).standard_normal((len(labels), n)).astype(np.float32) * 10
    if nan:
        x[1, 300:340] = np.nan  # a run of NaN samples
    return write_xdf(path, x, 100.0, 50.0, [(50.0 + k, "1" if k % 2 else "2") for k in range(1, 9)], list(labels))


def _chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, tag) of every chunk of an XDF file."""
    out, i = [], 4
    while i < len(data):
        nb = data[i]
        length = int.from_bytes(data[i + 1:i + 1 + nb], "little")
        out.append((i, struct.unpack("<H", data[i + 1 + nb:i + 3 + nb])[0]))
        i += 1 + nb + length
    return out


def _protocol(tmp: Path, names=("C3", "C4", "Cz")) -> Path:
    p = tmp / "p.yaml"
    p.write_text(yaml.safe_dump({
        "stimuli": {"folder": "x"}, "paradigm": {"block_s": 20, "image_s": 1},
        "amplifier": {"channels": 3, "sfreq": 100, "channel_names": list(names)},
        "epochs": {"tmin": 0.0, "tmax": 0.3, "margin_s": 0.1},
        "preprocessing": {"bandpass_hz": [0.5, 40], "notch_hz": None, "stft_window_ms": 200, "stft_hop_ms": 100}}))
    return p


def _both(capsys, tmp: Path, f: Path, proto: Path) -> str:
    """The line `import` and `replay` give for ``f``: the same one, and neither wrote or streamed anything."""
    data = tmp / "data"
    rc_i = main(["import", str(f), "--subject", "S1", "--events", "1=a,2=b", "--protocol", str(proto),
                 "--data", str(data)])
    _, err_i = capsys.readouterr()
    rc_r = main(["replay", str(f), "--events", "1=a,2=b", "--protocol", str(proto), "--speed", "1000"])
    out_r, err_r = capsys.readouterr()
    assert rc_i == rc_r == 2, (err_i, err_r)
    assert err_i == err_r and err_i.count("\n") == 1 and err_i.startswith("eegloop: error: "), (err_i, err_r)
    assert "replaying" not in out_r and not data.exists()  # refused before any outlet, any database
    return err_i


@pytest.mark.skipif(not XDF.is_file(), reason="shared/data not beside the checkout")
@pytest.mark.parametrize("cut", [300_000, 600_000, 1_000_000, 1_181_000])
def test_truncated_xdf_is_refused(tmp_path, cut):
    """pyxdf reads a cut file without complaint (it logs and scans on); eegloop refuses it."""
    f = tmp_path / "cut.xdf"
    f.write_bytes(XDF.read_bytes()[:cut])
    with pytest.raises(RecordingError, match="damaged or truncated XDF|truncated XDF"):
        read_recording(f)


def test_xdf_cut_at_a_chunk_boundary_or_damaged_is_refused(tmp_path, capsys):
    good = _xdf(tmp_path / "good.xdf")
    proto = _protocol(tmp_path)
    rec = read_recording(good, protocol=None)
    assert rec.ch_names == ["C3", "C4", "Cz"] and len(rec.markers) == 8
    data = good.read_bytes()
    chunks = _chunks(data)
    first_footer = next(o for o, tag in chunks if tag == 6)
    (tmp_path / "nofooter.xdf").write_bytes(data[:first_footer])  # the recorder died before closing the file
    line = _both(capsys, tmp_path, tmp_path / "nofooter.xdf", proto)
    assert "has no footer: a truncated XDF file" in line
    samples = [o for o, tag in chunks if tag == 3]
    (tmp_path / "short.xdf").write_bytes(data[:samples[3]] + data[samples[4]:])  # a chunk of samples lost
    assert "samples its footer counts: a truncated XDF file" in _both(capsys, tmp_path, tmp_path / "short.xdf", proto)
    bad = bytearray(data)
    mid = samples[2] + 40
    bad[mid:mid + 64] = b"\xff" * 64  # damaged bytes inside a chunk
    (tmp_path / "damaged.xdf").write_bytes(bytes(bad))
    with pytest.raises(RecordingError):
        read_recording(tmp_path / "damaged.xdf")
    assert "damaged.xdf" in _both(capsys, tmp_path, tmp_path / "damaged.xdf", proto)


def test_nan_names_and_streams_get_one_sentence_everywhere(tmp_path, capsys):
    proto = _protocol(tmp_path)
    line = _both(capsys, tmp_path, _xdf(tmp_path / "nan.xdf", nan=True), proto)
    assert "40 non-finite samples (NaN/inf), first in channel 'C4' at sample 300" in line
    line = _both(capsys, tmp_path, _xdf(tmp_path / "names.xdf", labels=("C3", "Cz", "C4")), proto)
    assert "channels C3, Cz, C4, the protocol names C3, C4, Cz" in line and "first difference at channel 2" in line
    line = _both(capsys, tmp_path, _xdf(tmp_path / "twice.xdf", labels=("C3", "C3", "Cz")), proto)
    assert "channel name 'C3' appears twice" in line
    # --channels picks and orders them: the same file is then usable, in both
    rec = read_recording(tmp_path / "names.xdf", channels=["C3", "C4", "Cz"], protocol=None)
    assert rec.ch_names == ["C3", "C4", "Cz"]
    if (DATA / "xdf" / "empty_streams.xdf").is_file():
        assert "has no samples" in _both(capsys, tmp_path, DATA / "xdf" / "empty_streams.xdf", proto)
