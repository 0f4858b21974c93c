"""A continuous recording read from a file, its errors, and the one decision whether it is usable.

:class:`Recording` is what every reader (:mod:`.csv_reader`, :mod:`.xdf_reader`, :mod:`.mne_reader`)
returns: every channel with its type (MNE's names), electrodes in µV. :func:`check_recording` is the one
decision whether a recording is usable, shared by ``import``, ``replay`` and ``export bids``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import EegloopError, clip_text, short_repr


class DataImportError(EegloopError):
    """A file cannot be imported; the message names the file and the problem."""


class RecordingError(DataImportError):
    """A recording is not usable (:func:`check_recording`): the same sentence for import, replay and export."""


@dataclass
class Recording:
    """A continuous recording read from a file: every channel with its type (MNE's names); electrodes in µV.

    Only the ``eeg`` channels are cut into epochs and decoded (:attr:`eeg_idx`); EOG, ECG, EMG, misc, resp and
    stim channels stay with the recording (its source file, the BIDS export).
    """

    data: np.ndarray  # (n_channels, n_times) float32
    times: np.ndarray  # (n_times,) seconds, the file's clock (clock-corrected for XDF)
    sfreq: float
    ch_names: list
    markers: list = field(default_factory=list)  # [(time, value str)]
    source: str = ""
    ch_types: list = field(default_factory=list)  # per channel: eeg, eog, ecg, emg, misc, resp, stim (default eeg)
    units: list = field(default_factory=list)  # per channel, the unit its values are in (µV for electrodes)

    def __post_init__(self) -> None:
        n = len(self.ch_names)
        self.ch_types = list(self.ch_types) or ["eeg"] * n
        self.units = list(self.units) or ["µV"] * n

    @property
    def eeg_idx(self) -> list:
        return [i for i, t in enumerate(self.ch_types) if t == "eeg"]

    @property
    def eeg_names(self) -> list:
        return [self.ch_names[i] for i in self.eeg_idx]

    @property
    def duration(self) -> float:
        return float(self.times[-1] - self.times[0]) if len(self.times) else 0.0


def path_exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def listed_names(names: Sequence, n: int = 12) -> str:
    """Column or channel names for a message: at most ``n``, each clipped."""
    shown = ", ".join(clip_text(str(x), 40) for x in list(names[:n]))
    return shown + (f", … (+{len(names) - n})" if len(names) > n else "")


def pick_channels(rec: Recording, channels: Optional[Sequence[str]]) -> Recording:
    if not channels:
        return rec
    missing = [c for c in channels if c not in rec.ch_names]
    if missing:
        raise RecordingError(f"{clip_text(rec.source, 300)}: channel {clip_text(str(missing[0]), 60)} not found "
                           f"(has: {listed_names(rec.ch_names)})")
    idx = [rec.ch_names.index(c) for c in channels]
    return Recording(rec.data[idx], rec.times, rec.sfreq, list(channels), rec.markers, rec.source,
                     [rec.ch_types[i] for i in idx], [rec.units[i] for i in idx])


def parse_channel_types(spec: Optional[str]) -> dict:
    """``--channel-types``: ``'Right AUX=misc,EXG1=eog'`` -> {label: type}; types as in amplifier.channel_types."""
    from ...protocol import CHANNEL_TYPES

    out: dict = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        label, sep, typ = part.rpartition("=")
        label, typ = label.strip(), typ.strip().lower()
        if not sep or not label:
            raise EegloopError(f"--channel-types: {short_repr(part.strip(), 40)} is not LABEL=TYPE")
        if typ not in CHANNEL_TYPES:
            raise EegloopError(f"--channel-types: {short_repr(label, 40)}: type {short_repr(typ, 20)} is not one of "
                               f"{', '.join(CHANNEL_TYPES)}")
        out[label] = typ
    return out


def typed_channels(data: np.ndarray, labels: list, declared: list, units: list, overrides: Optional[dict],
           where: str) -> tuple[np.ndarray, list, list]:
    """Final channel types (``overrides`` first, then the declared ones, EEG by default) and the data with every
    voltage scaled to µV (:func:`~eegloop.recorder.acquisition.channel_scales`, as live acquisition does)."""
    from ..acquisition import channel_scales, channel_types

    types = channel_types(labels, declared, overrides or {}, where, error=DataImportError,
                          field="amplifier.channel_types / --channel-types")
    scale, out_units = channel_scales(labels, types, units, where, error=DataImportError)
    if any(f != 1.0 for f in scale):
        with np.errstate(over="ignore"):
            data = (data.astype(np.float64) * np.asarray(scale)[:, None]).astype(np.float32)
    return data, types, out_units


def check_recording(rec: Recording, expect_channels: Optional[Sequence[str]] = None) -> Recording:
    """The one decision whether a recording read from a file is usable; returns it, or raises
    :class:`RecordingError` with one line naming the file and the first problem."""
    src = clip_text(rec.source, 300)
    data = np.asarray(rec.data)
    if data.ndim != 2 or data.shape[1] < 2 or len(rec.times) != data.shape[1]:
        raise RecordingError(f"{src}: the EEG stream has no samples" if data.ndim == 2 and data.shape[1] < 2 else
                             f"{src}: {len(rec.times)} timestamps for {data.shape[-1]} samples")
    if not (np.isfinite(rec.sfreq) and rec.sfreq > 0):
        raise RecordingError(f"{src}: no usable sampling rate ({rec.sfreq!r})")
    names = [str(c) for c in rec.ch_names]
    if len(names) != data.shape[0]:
        raise RecordingError(f"{src}: {len(names)} channel names for {data.shape[0]} channels")
    empty = [i for i, c in enumerate(names) if not c.strip()]
    if empty:
        raise RecordingError(f"{src}: channel {empty[0] + 1} has no name")
    dup = next((c for c, n in Counter(names).items() if n > 1), None)
    if dup is not None:
        raise RecordingError(f"{src}: channel name {short_repr(dup, 40)} appears twice")
    eeg = [names[i] for i in rec.eeg_idx]  # other channels (EOG, misc, ...) are kept, never decoded
    if expect_channels is not None and eeg != list(expect_channels):
        wrong = next((i for i, (a, b) in enumerate(zip(eeg, expect_channels)) if a != b), min(len(eeg), len(expect_channels)))
        raise RecordingError(f"{src}: EEG channels {listed_names(eeg)}, the protocol names {listed_names(list(expect_channels))} "
                             f"(amplifier.channel_names; first difference at channel {wrong + 1}); choose and order "
                             "them with --channels")
    _check_finite(rec)
    if not rec.markers:
        raise RecordingError(f"{src}: no markers")
    return rec


def _check_finite(rec: Recording) -> None:
    """Refuse NaN/inf samples or timestamps, in any format (training would die on them much later)."""
    bad_t = ~np.isfinite(rec.times)
    if bad_t.any():
        raise RecordingError(f"{rec.source}: {int(bad_t.sum())} non-finite timestamps (NaN/inf), first at sample "
                           f"{int(np.flatnonzero(bad_t)[0])}")
    bad = ~np.isfinite(rec.data)
    if bad.any():
        ch = int(np.flatnonzero(bad.any(axis=1))[0])
        first = int(np.flatnonzero(bad[ch])[0])
        raise RecordingError(f"{rec.source}: {int(bad.sum())} non-finite samples (NaN/inf), first in channel "
                           f"{short_repr(rec.ch_names[ch], 40)} at sample {first}; clean or interpolate them first")
