"""The registry of the formats ``import`` reads (:func:`formats`: the CLI's ``--format`` choices).

A *recording* format is a continuous file: it is read (:func:`~eegloop.recorder.importers.formats.read_recording`),
then cut into epochs (:mod:`.cutting`). A *dataset* format is a published dataset's epochs, read by its adapter
(:mod:`.eeg_imagenet`, :mod:`.things_eeg2`) and stored as they are. This module imports nothing heavy: the CLI's
parser reads it on every command line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

if TYPE_CHECKING:
    from .recording import Recording

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


# The readers are imported when a file is read, not with the registry: the CLI's parser lists the formats on
# every command line, and pyxdf, MNE's readers and the datasets' adapters would slow each one down.

def _xdf(path: Path, channels, eeg_stream, marker_stream, channel_types) -> Recording:
    from .xdf_reader import read_xdf

    return read_xdf(path, eeg_stream, marker_stream, channels, channel_types)


def _mne(path: Path, channels, eeg_stream, marker_stream, channel_types) -> Recording:
    from .mne_reader import read_mne

    return read_mne(path, channels, channel_types)


def _csv(path: Path, channels, eeg_stream, marker_stream, channel_types) -> Recording:
    from .csv_reader import read_csv

    return read_csv(path, channels, channel_types=channel_types)


def _eeg_imagenet(*args, **kwargs):
    from .eeg_imagenet import read_eeg_imagenet

    return read_eeg_imagenet(*args, **kwargs)


def _things_eeg2(*args, **kwargs):
    from .things_eeg2 import read_things_eeg2

    return read_things_eeg2(*args, **kwargs)


_FORMATS = (
    ImportFormat("xdf", RECORDING, _xdf, "XDF (LabRecorder), read with pyxdf", (".xdf",)),
    ImportFormat("mne", RECORDING, _mne, "anything MNE reads (FIF, BrainVision, EDF/BDF, EEGLAB .set)"),
    ImportFormat("csv", RECORDING, _csv, "CSV with a timestamp column, channel columns and a marker column",
                 (".csv",)),
    ImportFormat("eeg-imagenet", DATASET, _eeg_imagenet, "EEG-ImageNet's .pth file (Spampinato et al. 2017)"),
    ImportFormat("things-eeg2", DATASET, _things_eeg2,
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


def one_of(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


def format_of(path: str | Path, fmt: Optional[str]) -> str:
    """``fmt`` when given, else the recording format the file's suffix names (``mne`` for any other)."""
    suffix = Path(path).suffix.lower()
    return fmt or next((f.name for f in formats(RECORDING) if suffix in f.suffixes), _DEFAULT_RECORDING)
