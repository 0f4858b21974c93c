"""Recordings in any format MNE reads (FIF, BrainVision, EDF/BDF, EEGLAB .set)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import clip_text
from .recording import DataImportError, Recording, RecordingError, pick_channels


def read_mne(path: str | Path, channels: Optional[Sequence[str]] = None,
             channel_types: Optional[dict] = None) -> Recording:
    """Anything MNE reads (FIF, BrainVision, EDF/BDF, EEGLAB .set): events from annotations or a stim channel.

    Every channel is kept with MNE's type (retyped by ``channel_types``); electrodes (EEG, EOG, ECG, EMG) are
    scaled from volts to µV, other channels kept in MNE's values.
    """
    import mne

    path = Path(path)
    try:
        raw = mne.io.read_raw(str(path), preload=False, verbose=False)
    except Exception as exc:
        raise RecordingError(f"{path}: MNE cannot read it ({type(exc).__name__}: {clip_text(str(exc), 200)})") from None
    sf = raw.info["sfreq"]
    t = raw.times + (raw.first_samp / sf)
    markers = [(float(a["onset"] + raw.first_samp / sf), str(a["description"])) for a in raw.annotations]
    stim = mne.pick_types(raw.info, stim=True, eeg=False)
    if not markers and len(stim):
        ev = mne.find_events(raw, stim_channel=raw.ch_names[stim[0]], verbose=False)
        markers = [(float(t[s - raw.first_samp]), str(v)) for s, _, v in ev]
    from ..acquisition import _LSL_TYPES, channel_scales
    from ..acquisition import channel_types as type_channels

    labels = list(raw.ch_names)
    declared = [t if t in _LSL_TYPES else "misc" for t in raw.get_channel_types()]
    units = ["V" if t in ("eeg", "eog", "ecg", "emg") else "n/a" for t in declared]  # MNE's values are SI
    where = clip_text(str(path), 300)
    types = type_channels(labels, declared, channel_types or {}, where, error=DataImportError,
                          field="amplifier.channel_types / --channel-types")
    scale, units = channel_scales(labels, types, units, where, error=DataImportError)
    scale = np.asarray(scale, np.float64)[:, None]
    # read in pieces into float32 (electrodes in microvolts): a long recording never lives as float64 in memory
    data = np.empty((len(labels), raw.n_times), np.float32)
    step = max(1, int(2**24 // max(len(labels), 1)))
    try:
        for a in range(0, raw.n_times, step):
            b = min(raw.n_times, a + step)
            data[:, a:b] = raw.get_data(start=a, stop=b) * scale
    except Exception as exc:  # a data file shorter than its header says, unreadable bytes
        raise RecordingError(f"{path}: MNE cannot read its samples ({type(exc).__name__}: "
                             f"{clip_text(str(exc), 200)}): a damaged or truncated file") from None
    rec = Recording(data, t, sf, labels, markers, str(path), types, units)
    return pick_channels(rec, channels)
