"""Raw continuous recordings written as they arrive, in BrainVision format.

Why BrainVision: it is appendable (a text header written once, a binary data
file that only grows, a text marker file that only grows), MNE reads it with
``mne.io.read_raw_brainvision`` (the sample count comes from the data file's
size, so a file cut short by a crash is still readable up to its last whole
sample), and most EEG tools (EEGLAB, FieldTrip, BrainVision Analyzer) open it.
Data are float32, multiplexed, in microvolts. The data and marker files are
flushed at least every second.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

__all__ = ["BrainVisionWriter"]


class BrainVisionWriter:
    """Append-only BrainVision writer.

    Parameters
    ----------
    vhdr : path
        Header file to create (``.vhdr``); ``.eeg`` and ``.vmrk`` sit beside it.
    ch_names : list of str
    sfreq : float
    units : list of str | None
        Unit per channel (default microvolts).
    flush_s : float
        Flush data and markers to disk at least this often.
    """

    def __init__(self, vhdr: str | Path, ch_names: list[str], sfreq: float, units: list[str] | None = None,
                 flush_s: float = 1.0):
        from .._files import private_dir, private_file

        self.vhdr = Path(vhdr)
        private_dir(self.vhdr.parent)  # raw/...: 0700 when eegloop creates it
        self.eeg = self.vhdr.with_suffix(".eeg")
        self.vmrk = self.vhdr.with_suffix(".vmrk")
        for f in (self.vhdr, self.eeg, self.vmrk):  # a subject's recording: 0600 from its first byte
            private_file(f, create=True)
        self.n_channels = len(ch_names)
        self.sfreq = sfreq
        self.n_samples = 0
        self.n_markers = 1
        self.flush_s = flush_s
        self._last_flush = time.monotonic()
        units = units or ["µV"] * len(ch_names)
        chans = "\n".join(
            f"Ch{i + 1}={name.replace(',', chr(92) + '1')},,1,{unit}" for i, (name, unit) in enumerate(zip(ch_names, units))
        )
        self.vhdr.write_text(
            "Brain Vision Data Exchange Header File Version 1.0\n"
            "; written by eegloop\n\n"
            "[Common Infos]\nCodepage=UTF-8\n"
            f"DataFile={self.eeg.name}\nMarkerFile={self.vmrk.name}\n"
            "DataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
            f"NumberOfChannels={len(ch_names)}\n"
            f"SamplingInterval={1e6 / sfreq:.6f}\n\n"
            "[Binary Infos]\nBinaryFormat=IEEE_FLOAT_32\n\n"
            "[Channel Infos]\n" + chans + "\n",
            encoding="utf-8",
        )
        self._eeg = open(self.eeg, "wb")
        self._mrk = open(self.vmrk, "w", encoding="utf-8")
        self._mrk.write(
            "Brain Vision Data Exchange Marker File Version 1.0\n\n"
            "[Common Infos]\nCodepage=UTF-8\n"
            f"DataFile={self.eeg.name}\n\n[Marker Infos]\n"
            "Mk1=New Segment,,1,1,0\n"
        )
        self._flush(force=True)

    def write(self, data: np.ndarray) -> None:
        """Append samples, ``data`` of shape (n_channels, n_times)."""
        if data.shape[0] != self.n_channels:
            raise ValueError(f"{data.shape[0]} channels, file has {self.n_channels}")
        self._eeg.write(np.ascontiguousarray(data.T, dtype="<f4").tobytes())
        self.n_samples += data.shape[1]
        self._flush()

    def marker(self, sample: int, description: str, kind: str = "Stimulus") -> None:
        """Add a marker at 0-based ``sample`` (BrainVision counts from 1)."""
        self.n_markers += 1
        desc = description.replace(",", r"\1").replace("\n", " ")
        self._mrk.write(f"Mk{self.n_markers}={kind},{desc},{int(sample) + 1},1,0\n")
        self._flush()

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_flush >= self.flush_s:
            for fh in (self._eeg, self._mrk):
                fh.flush()
                os.fsync(fh.fileno())
            self._last_flush = now

    def close(self) -> None:
        if not self._eeg.closed:
            self._flush(force=True)
            self._eeg.close()
            self._mrk.close()
