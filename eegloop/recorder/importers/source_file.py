"""An imported run's source file re-read as it was imported and written as BrainVision (for the BIDS export)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import clip_text
from ...stimuli import file_sha256
from .formats import read_recording
from .recording import DataImportError


@dataclass(frozen=True)
class SourceRun:
    """An imported run's continuous recording, re-read from its source file (for the BIDS export)."""

    vhdr: Path  # the recording as a BrainVision file (every channel, electrodes in µV, one marker per stimulus)
    ch_types: list  # per channel, MNE's names
    n_events: int


def source_as_brainvision(run_info: dict, events: Sequence[tuple[float, str, int]], out_vhdr: Path,
                          digests: Optional[set] = None, channel_types: Optional[dict] = None) -> SourceRun:
    """Re-read an imported run's source file as it was imported and write it as BrainVision.

    ``run_info`` is the run's stored info (the source path, its format, the channels kept and their types);
    ``events`` the run's stimulus events as (time on the file's clock, class, trial): each becomes a
    ``Stimulus`` marker ``stim_on/<class>/trial<n>`` at its nearest sample, as the recorder writes them.
    ``digests``: the sha256 the import recorded; a source whose content changed since is refused (its samples
    would not be the ones the epochs came from). Raises :class:`DataImportError` with one line.
    """
    from ..rawfile import BrainVisionWriter

    src = run_info.get("source")
    if not src:
        raise DataImportError("no source file recorded with the run (imported from a dataset's epochs, "
                              "not a recording)")
    path = Path(src)
    if not path.is_file():
        raise DataImportError(f"its source file {clip_text(src, 200)} is not here any more")
    if digests is not None and file_sha256(path) not in digests:
        raise DataImportError(f"its source file {clip_text(src, 200)} changed since it was imported")
    names = run_info.get("channels") or None
    types = dict(zip(names, run_info["ch_types"])) if names and run_info.get("ch_types") else channel_types
    rec = read_recording(path, run_info.get("format"), names, run_info.get("eeg_stream"),
                         run_info.get("marker_stream"), types)
    w = BrainVisionWriter(out_vhdr, rec.ch_names, rec.sfreq, units=rec.units)
    try:
        w.write(rec.data)
        for t, cls, trial in events:
            i = int(np.clip(np.searchsorted(rec.times, t), 0, len(rec.times) - 1))
            if i > 0 and abs(rec.times[i - 1] - t) <= abs(rec.times[i] - t):
                i -= 1
            w.marker(i, f"stim_on/{cls}/trial{trial}")
    finally:
        w.close()
    return SourceRun(w.vhdr, list(rec.ch_types), len(events))
