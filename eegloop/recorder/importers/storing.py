"""Storing an import: read, check and cut every file first, then write ONE session in one transaction."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..._logging import logger
from ...errors import short_repr
from ...protocol import Protocol
from ...stimuli import file_sha256
from ...types import BlockRecord, Epoch
from .cutting import cut_epochs
from .events import IGNORE
from .formats import read_recording
from .registry import format_of
from .recording import DataImportError


@dataclass
class PreparedImport:
    """Files read, checked and cut, not yet written (:func:`prepare_import`, then :func:`store_import`)."""

    subject: str
    protocol: Protocol
    runs: list  # [(run index, run row fields, [BlockRecord])]
    files: list  # [(absolute path, sha256, size)]
    events: dict
    info: dict = field(default_factory=dict)  # merged into the session's info (e.g. a dataset's official split)

    @property
    def n_epochs(self) -> int:
        return sum(len(br.epochs) for _, _, blocks in self.runs for br in blocks)

    @property
    def ignored(self) -> Counter:
        """Marker value -> how many markers the events map sent to ``ignore``."""
        return Counter(ev.get("value") for _, _, blocks in self.runs for br in blocks for ev, _ in br.events
                       if ev.get("event") == "marker" and self.events.get(ev.get("value")) == IGNORE)


def file_digests(files: Sequence[str | Path]) -> list[tuple[str, str, int]]:
    out, seen = [], {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise DataImportError(f"{path}: file not found")
        digest, size = file_sha256(path), path.stat().st_size
        if digest in seen:
            raise DataImportError(f"{path}: the same file as {seen[digest]} (identical content) is given twice")
        seen[digest] = path
        out.append((str(path.resolve()), digest, size))
    return out


def prepare_import(subject: str, protocol: Protocol, files: Sequence[str | Path], fmt: Optional[str] = None,
                   events: Optional[dict] = None, channels: Optional[Sequence[str]] = None,
                   eeg_stream: Optional[str] = None, marker_stream: Optional[str] = None,
                   channel_types: Optional[dict] = None) -> PreparedImport:
    """Read, check and cut every file (one run per file); nothing is written.

    Channel types: the file's own (XDF descriptions, MNE), then the protocol's ``amplifier.channel_types``, then
    ``channel_types`` (``--channel-types``); only EEG channels are cut into epochs.
    """
    from ...database import check_subject_code

    check_subject_code(subject)
    events = dict(events or {})
    sources = file_digests(files)
    runs = []
    block_offset = trial_offset = 0
    retype = {**protocol.amplifier.channel_types, **(channel_types or {})}
    for run, f in enumerate(files, start=1):
        rec = read_recording(f, fmt, channels, eeg_stream, marker_stream, retype, protocol=protocol)
        blocks, n_blocks = cut_epochs(rec, protocol, events, run, block_offset, trial_offset=trial_offset)
        fields = dict(status="imported", samples_received=int(rec.data.shape[1]),
                      samples_expected=int(round(rec.duration * rec.sfreq)) + 1, lost_samples=None,
                      info={"source": str(Path(f).resolve()), "sfreq": rec.sfreq, "channels": rec.ch_names,
                            "ch_types": rec.ch_types, "units": rec.units, "format": format_of(f, fmt),
                            "eeg_stream": eeg_stream, "marker_stream": marker_stream})
        runs.append((run, fields, blocks))
        block_offset += n_blocks
        trial_offset = max([ev.get("trial") or 0 for br in blocks for ev, _ in br.events] + [trial_offset])
    return PreparedImport(subject, protocol, runs, sources, events)


def store_import(db, prepared: PreparedImport, force: bool = False) -> int:
    """Write a prepared import as one session in ONE transaction; returns the session id.

    A file already imported (same bytes) is refused unless ``force``: two copies of one recording
    would fall into different folds and inflate every score.
    """
    if not force:
        for path, digest, _ in prepared.files:
            prior = db.find_source_file(digest)
            if prior is not None:
                raise DataImportError(f"{path}: already imported as session {prior[0]} (identical content, from "
                                      f"{short_repr(prior[1], 120)}); a second copy would inflate cross-validated "
                                      "scores; use --force to import it anyway")
    sid = db.import_session(prepared.subject, prepared.protocol, prepared.runs, files=prepared.files,
                            info={"files": [f[0] for f in prepared.files], "events": prepared.events,
                                  **prepared.info})
    logger.info("imported %d files as session %d (%d epochs)", len(prepared.files), sid, prepared.n_epochs)
    return sid


def import_recordings(db, subject: str, protocol: Protocol, files: Sequence[str | Path], fmt: Optional[str] = None,
                      events: Optional[dict] = None, channels: Optional[Sequence[str]] = None,
                      eeg_stream: Optional[str] = None, marker_stream: Optional[str] = None,
                      force: bool = False, channel_types: Optional[dict] = None) -> int:
    """Import ``files`` as one session of ``subject`` (one run per file); returns the session id.

    All files are read and cut first (:func:`prepare_import`), then the session is written in ONE
    transaction (:func:`store_import`; blocks stored by the same function the recorder uses): a bad
    file, or a failure while writing, leaves the database as it was.
    """
    return store_import(db, prepare_import(subject, protocol, files, fmt, events, channels, eeg_stream,
                                           marker_stream, channel_types), force=force)


def import_epochset(db, subject: str, protocol: Protocol, es, source: str | Sequence[str] = "", force: bool = False,
                    info: Optional[dict] = None) -> int:
    """Store an :class:`~eegloop.types.EpochSet` read from a file (e.g. EEG-ImageNet, THINGS-EEG2) as an imported
    session, in one transaction.

    Parameters
    ----------
    source : str or list of str
        The file (or files) the epochs came from: their content hashes are kept, so the same bytes are not
        imported twice (unless ``force``).
    info : dict, optional
        Merged into the session's info (e.g. ``{"format": "things-eeg2", "zero_shot_test_classes": [...]}``).
    """
    from ...database import check_subject_code

    check_subject_code(subject)
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    files = file_digests([f for f in sources if f and Path(f).is_file()])
    shown = str(source) if isinstance(source, (str, Path)) else [str(f) for f in sources]
    runs, trial = [], 0
    for run in np.unique(es.runs):
        in_run = es.runs == run
        blocks = []
        for block in np.unique(es.blocks[in_run]):
            idx = np.flatnonzero(in_run & (es.blocks == block))
            br = BlockRecord(run=int(run), block=int(block), ended=True)
            for i in idx:
                trial += 1
                onset = float(es.onsets[i]) if np.isfinite(es.onsets[i]) else None  # the file's own times, if any
                br.events.append(({"event": "stim_on", "class": str(es.labels[i]), "image": str(es.images[i]),
                                   "trial": trial}, float(trial) if onset is None else onset))
                br.epochs.append(Epoch(data=es.data[i], label=str(es.labels[i]), sfreq=es.sfreq, tmin=es.tmin,
                                       channel_names=list(es.channel_names), run=int(run), block=int(block),
                                       trial=trial, onset_lsl=onset))
            blocks.append(br)
        runs.append((int(run), dict(status="imported", info={"source": shown}), blocks))
    return store_import(db, PreparedImport(subject, protocol, runs, files, {}, dict(info or {})), force=force)
