"""The formats ``import`` reads, in one registry (:func:`formats`), and THE reader of continuous recordings.

A *recording* format is a continuous file: it is read here (:func:`read_recording`), then cut into epochs
(:mod:`.cutting`). A *dataset* format is a published dataset's epochs, read by its adapter
(:mod:`.eeg_imagenet`, :mod:`.things_eeg2`) and stored as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ...errors import EegloopError, short_repr
from ...protocol import Protocol
from .csv_reader import read_csv
from .eeg_imagenet import read_eeg_imagenet
from .mne_reader import read_mne
from .recording import Recording, RecordingError, check_recording, path_exists
from .things_eeg2 import read_things_eeg2
from .xdf_reader import read_xdf

RECORDING = "recording"  # a continuous file, cut into epochs on import
DATASET = "dataset"  # a published dataset's epochs, stored as they are


@dataclass(frozen=True)
class ImportFormat:
    """One format ``import`` reads (a ``--format`` choice).

    ``reader`` of a recording format is called as ``reader(path, channels, eeg_stream, marker_stream,
    channel_types)`` and returns a :class:`Recording`; a dataset format's reader is its adapter's own
    (:func:`read_eeg_imagenet`, :func:`read_things_eeg2`). ``suffixes`` pick a recording format from the file
    name when ``--format`` is not given.
    """

    name: str
    kind: str  # RECORDING or DATASET
    reader: Callable
    description: str
    suffixes: tuple[str, ...] = ()


def _xdf(path: Path, channels, eeg_stream, marker_stream, channel_types) -> Recording:
    return read_xdf(path, eeg_stream, marker_stream, channels, channel_types)


def _mne(path: Path, channels, eeg_stream, marker_stream, channel_types) -> Recording:
    return read_mne(path, channels, channel_types)


def _csv(path: Path, channels, eeg_stream, marker_stream, channel_types) -> Recording:
    return read_csv(path, channels, channel_types=channel_types)


_FORMATS = (
    ImportFormat("xdf", RECORDING, _xdf, "XDF (LabRecorder), read with pyxdf", (".xdf",)),
    ImportFormat("mne", RECORDING, _mne, "anything MNE reads (FIF, BrainVision, EDF/BDF, EEGLAB .set)"),
    ImportFormat("csv", RECORDING, _csv, "CSV with a timestamp column, channel columns and a marker column",
                 (".csv",)),
    ImportFormat("eeg-imagenet", DATASET, read_eeg_imagenet, "EEG-ImageNet's .pth file (Spampinato et al. 2017)"),
    ImportFormat("things-eeg2", DATASET, read_things_eeg2,
                 "one subject's preprocessed THINGS-EEG2 files (Gifford et al. 2022)"),
)
_DEFAULT_RECORDING = "mne"  # a recording whose suffix no format claims


def formats(kind: Optional[str] = None) -> tuple[ImportFormat, ...]:
    """The formats ``import`` reads, in the CLI's order; only those of ``kind`` (``"recording"`` or
    ``"dataset"``) when given. ``[f.name for f in formats()]`` are ``import --format``'s choices,
    ``formats("recording")`` those of ``replay --format``."""
    return tuple(f for f in _FORMATS if kind is None or f.kind == kind)


def format_names(kind: Optional[str] = None) -> list[str]:
    """The names of :func:`formats` (``--format`` choices)."""
    return [f.name for f in formats(kind)]


def _one_of(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


def format_of(path: str | Path, fmt: Optional[str]) -> str:
    """``fmt`` when given, else the recording format the file's suffix names (``mne`` for any other)."""
    suffix = Path(path).suffix.lower()
    return fmt or next((f.name for f in formats(RECORDING) if suffix in f.suffixes), _DEFAULT_RECORDING)


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
        raise EegloopError(f"--format: must be {_one_of(format_names(RECORDING))}, got {short_repr(fmt)}")
    rec = reader(path, channels, eeg_stream, marker_stream, channel_types)
    expect = list(protocol.amplifier.channel_names) if protocol is not None else None
    return check_recording(rec, expect_channels=expect or None)
