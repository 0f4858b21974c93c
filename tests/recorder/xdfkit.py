"""A minimal XDF writer for tests: files shaped like LabRecorder's, read back by the real reader (pyxdf).

No XDF writer is packaged for Python (pyxdf only reads), so this one follows the specification
(https://github.com/sccn/xdf/wiki/Specifications): magic ``XDF:``, then chunks of
[length-bytes][length][tag][content] — file header, stream headers, samples, clock offsets, footers.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def _chunk(tag: int, content: bytes) -> bytes:
    n = len(content) + 2
    return bytes([8]) + struct.pack("<Q", n) + struct.pack("<H", tag) + content


def _varlen(n: int) -> bytes:
    return bytes([8]) + struct.pack("<Q", n)


def write_xdf(path: Path, eeg: np.ndarray, sfreq: float, t0: float, markers: list[tuple[float, str]],
              labels: list[str] | None = None, units: str | list = "microvolts",
              types: list[str] | None = None) -> Path:
    """``eeg`` (channels, samples) float32 at ``sfreq`` from LSL time ``t0``; ``markers`` (time, string);
    each channel's label, unit and type in the stream's description (one unit for all, or one each)."""
    n_ch, n = eeg.shape
    units = [units] * n_ch if isinstance(units, str) else list(units)
    chans = "".join(f"<channel><label>{lab}</label><unit>{u}</unit><type>{t}</type></channel>"
                    for lab, u, t in zip(labels or [f"Ch{i + 1}" for i in range(n_ch)], units,
                                         types or ["EEG"] * n_ch))
    heads = {1: (f"<?xml version=\"1.0\"?><info><name>Amp</name><type>EEG</type><channel_count>{n_ch}"
                 f"</channel_count><nominal_srate>{sfreq}</nominal_srate><channel_format>float32</channel_format>"
                 f"<source_id>amp1</source_id><created_at>{t0}</created_at><desc><channels>{chans}</channels>"
                 "</desc></info>"),
             2: ("<?xml version=\"1.0\"?><info><name>Markers</name><type>Markers</type><channel_count>1"
                 "</channel_count><nominal_srate>0</nominal_srate><channel_format>string</channel_format>"
                 f"<source_id>mk1</source_id><created_at>{t0}</created_at></info>")}
    out = bytearray(b"XDF:")
    out += _chunk(1, b"<?xml version=\"1.0\"?><info><version>1.0</version></info>")
    for sid, xml in heads.items():
        out += _chunk(2, struct.pack("<I", sid) + xml.encode())
    times = t0 + np.arange(n) / sfreq
    step = max(1, int(sfreq))  # one chunk a second, as LabRecorder writes them
    for a in range(0, n, step):
        b = min(n, a + step)
        body = bytearray(struct.pack("<I", 1) + _varlen(b - a))
        for i in range(a, b):
            body += bytes([8]) + struct.pack("<d", times[i]) + eeg[:, i].astype("<f4").tobytes()
        out += _chunk(3, bytes(body))
    body = bytearray(struct.pack("<I", 2) + _varlen(len(markers)))
    for t, s in markers:
        raw = s.encode()
        body += bytes([8]) + struct.pack("<d", t) + _varlen(len(raw)) + raw
    out += _chunk(3, bytes(body))
    for sid in heads:  # a zero clock offset at the start and the end, as LabRecorder measures it
        for t in (t0, times[-1]):
            out += _chunk(4, struct.pack("<I", sid) + struct.pack("<dd", t, 0.0))
    for sid, (first, last, count) in {1: (times[0], times[-1], n),
                                      2: (markers[0][0], markers[-1][0], len(markers))}.items():
        xml = (f"<?xml version=\"1.0\"?><info><first_timestamp>{first}</first_timestamp><last_timestamp>{last}"
               f"</last_timestamp><sample_count>{count}</sample_count></info>")
        out += _chunk(6, struct.pack("<I", sid) + xml.encode())
    path.write_bytes(bytes(out))
    return path
