"""THE reader of continuous recordings (:func:`read_recording`), by the registry of formats (:mod:`.registry`).

A *recording* format is a continuous file: it is read here (:func:`read_recording`), then cut into epochs
(:mod:`.cutting`). A *dataset* format is a published dataset's epochs, read by its adapter
(:mod:`.eeg_imagenet`, :mod:`.things_eeg2`) and stored as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...errors import EegloopError, short_repr
from ...protocol import Protocol
from .recording import Recording, RecordingError, check_recording, path_exists
from .registry import RECORDING, format_names, format_of, formats, one_of



def read_recording(path: str | Path, fmt: Optional[str] = None, channels=None, eeg_stream=None,
                   marker_stream=None, channel_types: Optional[dict] = None,
                   protocol: Optional[Protocol] = None) -> Recording:
    """Read a recording, its channels typed and electrodes in µV, and decide whether it is usable
    (:func:`check_recording`): THE reader of recordings.

    ``import``, ``replay`` and ``export bids`` all read through here, so one file is accepted or refused
    with the same sentence everywhere: a damaged or truncated file, a missing EEG or marker stream, no
    samples, NaN/inf samples or timestamps, missing, empty or repeated channel names, EEG channel names
    other than the protocol's ``amplifier.channel_names`` (when ``protocol`` lists them), no markers.
    ``channel_types`` retypes channels (``amplifier.channel_types``, ``--channel-types``). Raises
    :class:`RecordingError` (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: {'is not a regular file' if path_exists(path) else 'file not found'}")
    fmt = format_of(path, fmt)
    reader = next((f.reader for f in formats(RECORDING) if f.name == fmt), None)
    if reader is None:
        raise EegloopError(f"--format: must be {one_of(format_names(RECORDING))}, got {short_repr(fmt)}")
    rec = reader(path, channels, eeg_stream, marker_stream, channel_types)
    expect = list(protocol.amplifier.channel_names) if protocol is not None else None
    return check_recording(rec, expect_channels=expect or None)
