"""A recording as stored: runs, blocks (each stored whole, in one transaction), markers, trial timings,
rejected epochs, stimuli, and imported sessions with their source files."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .._version import __version__
from ..types import BlockRecord
from .engine import Repository
from .epochs import epoch_rows
from .models import (
    BlockRow,
    EventRow,
    RejectedEpochRow,
    RunRow,
    SessionRow,
    SourceFileRow,
    StimulusRow,
    SubjectRow,
    TrialTimingRow,
)
from .records import SessionStatus, info_json
from .sessions import fence
from .subjects import check_subject_code

__all__ = ["Recording"]


def _event_row(session_id: int, run_id: Optional[int], block_id: Optional[int], m: dict, t: float) -> EventRow:
    """The row of marker ``m`` received at LSL time ``t``."""
    return EventRow(session_id=session_id, run_id=run_id, block_id=block_id, kind=str(m.get("event", "marker")),
                    lsl_time=float(t), trial=m.get("trial"),
                    class_id=str(m["class"]) if m.get("class") is not None else None, payload=m)


class Recording(Repository):
    """Runs, blocks, markers, timings, stimuli and imports of sessions."""

    # -- runs and blocks -------------------------------------------------------
    def add_run(self, session_id: int, index: int, raw_path: str | Path | None = None, **fields: Any) -> int:
        with self.session() as s:
            row = RunRow(session_id=session_id, index=index,
                         raw_path=self.store.relpath(raw_path) if raw_path else None, **fields)
            s.add(row)
            s.flush()
            return row.id

    def find_run(self, session_id: int, index: int) -> Optional[int]:
        with self.session() as s:
            return s.scalar(select(RunRow.id).where(RunRow.session_id == session_id, RunRow.index == index))

    def update_run(self, run_id: int, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(RunRow, run_id)
            for k, v in fields.items():
                if k == "raw_path" and v is not None:
                    v = self.store.relpath(v)
                setattr(row, k, v)

    def get_runs(self, session_id: int) -> list[RunRow]:
        with self.session() as s:
            return list(s.scalars(select(RunRow).where(RunRow.session_id == session_id).order_by(RunRow.index)))

    def add_block(self, run_id: int, index: int, classes: Sequence[str] = (), **fields: Any) -> int:
        with self.session() as s:
            row = BlockRow(run_id=run_id, index=index, classes=list(classes), **fields)
            s.add(row)
            s.flush()
            return row.id

    def store_block(self, session_id: int, run_id: int, record: BlockRecord,
                    owner: Optional[str] = None) -> tuple[int, str, Optional[str]]:
        """Store a whole block in ONE transaction: its row, events, epochs, rejected epochs and trial timings.

        A block already stored under the same (run, index) — an incomplete one being re-recorded after
        ``--resume`` — is replaced in the same transaction. The status is ``done`` only when the record's
        accounting adds up (:meth:`BlockRecord.accounting`); otherwise ``incomplete`` with the reason.

        With ``owner``, the write is fenced: it happens only while ``owner`` still holds the session's
        claim (in the same transaction), so a process that lost its claim can never overwrite the blocks
        of the process that took the session over.

        Returns
        -------
        block_id, status, reason
        """
        with self.session() as s:
            if owner is not None:
                fence(s, session_id, owner)
            return self._store_block(s, session_id, run_id, record)

    def finish_run(self, session_id: int, run_id: int, events: Sequence[tuple[dict, float]], status: str,
                   info: dict, owner: Optional[str] = None, **fields: Any) -> None:
        """A run's markers outside any block and its final accounting, in one transaction (so a retried
        write never stores the markers twice)."""
        with self.session() as s:
            if owner is not None:
                fence(s, session_id, owner)
            s.add_all([_event_row(session_id, run_id, None, m, t) for m, t in events])
            if run_id is not None:
                row = s.get(RunRow, run_id)
                row.status = status
                row.info = {**(row.info or {}), **info}
                for k, v in fields.items():
                    setattr(row, k, v)

    def _store_block(self, s: Session, session_id: int, run_id: int, rec: BlockRecord):
        status, reason = rec.accounting()
        old = s.scalar(select(BlockRow.id).where(BlockRow.run_id == run_id, BlockRow.index == rec.block))
        if old is not None:  # ON DELETE CASCADE takes its events, epochs, rejected epochs and timings along
            s.execute(delete(BlockRow).where(BlockRow.id == old))
            s.flush()
        classes = sorted({str(m["class"]) for m, _ in rec.events if m.get("event") == "stim_on" and "class" in m})
        block = BlockRow(run_id=run_id, index=rec.block, classes=classes, status=status, reason=reason,
                         started_lsl=rec.started_lsl, ended_lsl=rec.ended_lsl, n_stimuli=rec.n_stimuli,
                         n_epochs=len(rec.epochs), n_rejected=len(rec.rejected))
        s.add(block)
        s.flush()
        events = [_event_row(session_id, run_id, block.id, m, t) for m, t in rec.events]
        for ev in events:
            if ev.kind == "stim_on" and ev.trial is not None:
                ev.photon_delay_ms = rec.photon_delays.get(ev.trial)
        s.add_all(events)
        s.flush()
        by_trial = {ev.trial: ev.id for ev in events if ev.kind == "stim_on" and ev.trial is not None}
        for e in rec.epochs:
            e.event_id = by_trial.get(e.trial)
        s.add_all(epoch_rows(session_id, rec.epochs, block.id))
        s.add_all([RejectedEpochRow(session_id=session_id, block_id=block.id, event_id=by_trial.get(r.trial),
                                    run_index=r.run, block_index=r.block, trial=r.trial, label=r.label,
                                    onset_lsl=r.onset_lsl, reason=r.reason, detail=(r.detail or "")[:500])
                   for r in rec.rejected])
        timings = []
        for t in rec.timings:
            t = dict(t)
            eid = by_trial.get(t.pop("trial"))
            if eid is not None:
                timings.append(TrialTimingRow(event_id=eid, **t))
        s.add_all(timings)
        s.flush()
        return block.id, status, reason

    def get_rejected(self, session_id: int) -> list[RejectedEpochRow]:
        with self.session() as s:
            q = select(RejectedEpochRow).where(RejectedEpochRow.session_id == session_id)
            return list(s.scalars(q.order_by(RejectedEpochRow.id)))

    def rejected_by_reason(self, session_id: int) -> dict[str, int]:
        with self.session() as s:
            q = (select(RejectedEpochRow.reason, func.count(RejectedEpochRow.id))
                 .where(RejectedEpochRow.session_id == session_id).group_by(RejectedEpochRow.reason))
            return {r: int(n) for r, n in s.execute(q)}

    # -- imports ---------------------------------------------------------------------
    def find_source_file(self, sha256: str) -> Optional[tuple[int, str]]:
        """(session id, path) of an imported file with this content hash, if any."""
        with self.session() as s:
            row = s.scalar(select(SourceFileRow).where(SourceFileRow.sha256 == sha256).limit(1))
            return (row.session_id, row.path) if row is not None else None

    def source_files(self, session_id: int) -> list[tuple[str, str]]:
        """(sha256, path) of every file imported into a session."""
        with self.session() as s:
            rows = s.scalars(select(SourceFileRow).where(SourceFileRow.session_id == session_id))
            return [(r.sha256, r.path) for r in rows]

    def import_session(self, subject: str, protocol, runs: Sequence[tuple[int, dict, Sequence[BlockRecord]]],
                       files: Sequence[tuple[str, str, int]] = (), info: dict | None = None) -> int:
        """Store an imported session in ONE transaction: nothing is written unless everything is.

        Parameters
        ----------
        runs : list of (run index, run row fields, block records)
        files : list of (path, sha256, size) of the imported files
        """
        with self.session() as s:
            subj = s.scalar(select(SubjectRow).where(SubjectRow.code == subject))
            if subj is None:
                check_subject_code(subject)  # the one-line error about the code
                subj = SubjectRow(code=subject)
                s.add(subj)
                s.flush()
            sess = SessionRow(subject_id=subj.id, kind="imported", protocol_name=protocol.name,
                              protocol_yaml=protocol.to_yaml(), protocol_sha256=protocol.sha256,
                              status=SessionStatus.IMPORTED.value,
                              software_version=__version__, info=info_json(dict(info or {})),
                              ended_at=datetime.now().astimezone())
            s.add(sess)
            s.flush()
            for path, digest, size in files:
                s.add(SourceFileRow(session_id=sess.id, sha256=digest, path=str(path)[:1024], size=int(size)))
            for index, fields, blocks in runs:
                run = RunRow(session_id=sess.id, index=index, **fields)
                s.add(run)
                s.flush()
                for rec in blocks:
                    self._store_block(s, sess.id, run.id, rec)
            return sess.id

    def update_block(self, block_id: int, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(BlockRow, block_id)
            for k, v in fields.items():
                setattr(row, k, v)

    def get_blocks(self, session_id: int) -> list[BlockRow]:
        with self.session() as s:
            q = (select(BlockRow).join(RunRow).where(RunRow.session_id == session_id)
                 .order_by(BlockRow.index))
            return list(s.scalars(q))

    # -- stimuli ---------------------------------------------------------------
    def add_stimuli(self, stimuli) -> dict[str, int]:
        """Register a :class:`~eegloop.stimuli.StimulusSet`; returns ``{path: id}`` (existing rows reused)."""
        out: dict[str, int] = {}
        with self.session() as s:
            for st in stimuli.images:
                path = str(st.path)
                row = s.scalar(select(StimulusRow).where(StimulusRow.sha256 == st.sha256,
                                                         StimulusRow.path == path))
                if row is None:
                    row = StimulusRow(path=path, sha256=st.sha256, class_id=st.class_id,
                                      class_name=stimuli.classes[st.class_id])
                    s.add(row)
                    s.flush()
                out[path] = row.id
        return out

    def get_stimuli(self) -> list[StimulusRow]:
        with self.session() as s:
            return list(s.scalars(select(StimulusRow).order_by(StimulusRow.id)))

    # -- events and timings ----------------------------------------------------
    def add_events(self, session_id: int, events: Sequence[dict]) -> list[int]:
        """Store markers; each dict has ``kind``, ``lsl_time`` and optional ``run_id``, ``block_id``,
        ``stimulus_id``, ``trial``, ``class_id``, ``payload``."""
        with self.session() as s:
            rows = [EventRow(session_id=session_id, **e) for e in events]
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def get_events(self, session_id: int, kind: str | None = None) -> list[EventRow]:
        with self.session() as s:
            q = select(EventRow).where(EventRow.session_id == session_id)
            if kind:
                q = q.where(EventRow.kind == kind)
            return list(s.scalars(q.order_by(EventRow.lsl_time, EventRow.id)))

    def photon_delays(self, session_id: int) -> tuple[list[float], int]:
        """The session's measured marker-to-photon delays (ms, in event order) and its number of stimuli."""
        with self.session() as s:
            rows = list(s.execute(select(EventRow.photon_delay_ms).where(EventRow.session_id == session_id,
                                                                         EventRow.kind == "stim_on")))
        return [r[0] for r in rows if r[0] is not None], len(rows)

    def add_trial_timings(self, timings: Sequence[dict]) -> None:
        with self.session() as s:
            s.add_all([TrialTimingRow(**t) for t in timings])

    def get_trial_timings(self, session_id: int) -> list[TrialTimingRow]:
        with self.session() as s:
            q = (select(TrialTimingRow).join(EventRow).where(EventRow.session_id == session_id)
                 .order_by(EventRow.lsl_time))
            return list(s.scalars(q))
