"""The session database: a small repository-style API over SQLAlchemy.

Other packages call :class:`Database` methods; they never write SQL. SQLite by
default (one file in the data folder, WAL mode, foreign keys on); any
SQLAlchemy URL through ``--db`` or ``EEGLOOP_DB`` (e.g. PostgreSQL for a
shared lab server). The schema is created and upgraded by Alembic migrations.

Examples
--------
>>> db = Database("sqlite:///eegloop-data/eegloop.db")  # doctest: +SKIP
>>> db.upgrade()  # doctest: +SKIP
>>> db.add_subject("S01")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import os
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from sqlalchemy import create_engine, delete, event, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .. import __version__
from ..errors import DatabaseError
from ..types import Epoch, EpochSet
from .models import (
    BlockRow,
    EpochRow,
    EventRow,
    FeedbackTrialRow,
    ModelRow,
    RunRow,
    SessionRow,
    StimulusRow,
    SubjectRow,
    TrialTimingRow,
)

__all__ = [
    "Database",
    "default_data_dir",
    "default_url",
    "SubjectInfo",
    "SessionInfo",
    "ModelRecord",
    "encode_array",
    "decode_array",
]

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIGRATIONS = Path(__file__).parent / "migrations"


def default_data_dir() -> Path:
    """``$EEGLOOP_DATA`` or ``./eegloop-data``."""
    return Path(os.environ.get("EEGLOOP_DATA", "eegloop-data"))


def default_url(data_dir: str | Path | None = None) -> str:
    """``$EEGLOOP_DB``, else a SQLite file ``eegloop.db`` in the data folder."""
    if os.environ.get("EEGLOOP_DB") and data_dir is None:
        return os.environ["EEGLOOP_DB"]
    d = Path(data_dir) if data_dir is not None else default_data_dir()
    return f"sqlite:///{(d / 'eegloop.db').as_posix()}"


def encode_array(a: np.ndarray) -> tuple[bytes, str]:
    """float32 C-order bytes compressed with zlib, and the SHA-256 of the raw bytes."""
    raw = np.ascontiguousarray(a, dtype=np.float32).tobytes()
    return zlib.compress(raw, 1), hashlib.sha256(raw).hexdigest()


def decode_array(blob: bytes, shape: tuple[int, ...], sha256: str) -> np.ndarray:
    raw = zlib.decompress(blob)
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise DatabaseError("epoch data does not match its checksum (the database file is damaged)")
    return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()


@dataclass(frozen=True)
class SubjectInfo:
    id: int
    code: str
    created_at: datetime
    n_sessions: int


@dataclass(frozen=True)
class SessionInfo:
    id: int
    subject: str
    kind: str
    protocol_name: str
    protocol_yaml: str
    protocol_sha256: str
    status: str
    started_at: datetime
    ended_at: Optional[datetime]
    software_version: str
    info: dict


@dataclass(frozen=True)
class ModelRecord:
    id: int
    subject: str
    session_ids: list
    kind: str
    checkpoint_path: str
    config: dict
    metrics: dict
    created_at: datetime


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Database:
    """Repository over one eegloop database.

    Parameters
    ----------
    url : str | None
        SQLAlchemy URL; default :func:`default_url`.
    data_dir : path | None
        Data folder; relative paths stored in the database (raw files, models,
        images) are relative to it. Default: the SQLite file's folder, or
        :func:`default_data_dir`.
    upgrade : bool
        Create or upgrade the schema to the newest migration on open.
    """

    def __init__(self, url: str | None = None, data_dir: str | Path | None = None, upgrade: bool = True):
        self.url = url or default_url(data_dir)
        try:
            if self.url.startswith("sqlite:///"):
                path = Path(self.url[len("sqlite:///"):])
                path.parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = create_engine(self.url, connect_args={"check_same_thread": False,
                                                                            "timeout": 30})
                event.listen(self.engine, "connect", _sqlite_pragmas)
                default_dir = path.parent
            else:
                self.engine = create_engine(self.url, pool_pre_ping=True)
                default_dir = default_data_dir()
        except (ArgumentError, NoSuchModuleError) as exc:
            raise DatabaseError(f"--db: cannot use database URL {self.url!r} ({exc})") from None
        self.data_dir = Path(data_dir) if data_dir is not None else default_dir
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if upgrade:
            self.upgrade()

    # -- schema ----------------------------------------------------------------
    def _alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def upgrade(self, revision: str = "head") -> str:
        """Create the schema or upgrade it (Alembic); returns the revision reached."""
        from alembic import command

        cfg = self._alembic_config()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except OperationalError as exc:
            raise DatabaseError(f"cannot open database {self.safe_url}: {exc.orig}") from None
        return self.revision()

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except Exception:
            s.rollback()
            raise
        finally:
            s.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- paths -----------------------------------------------------------------
    def relpath(self, p: str | Path) -> str:
        """Store paths relative to the data folder when they are inside it."""
        p = Path(p).resolve()
        try:
            return p.relative_to(self.data_dir.resolve()).as_posix()
        except ValueError:
            return str(p)

    def abspath(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.data_dir / p

    # -- subjects --------------------------------------------------------------
    def add_subject(self, code: str) -> SubjectInfo:
        """Add a subject by pseudonymous code (letters, digits, ``_.-``; no names)."""
        if not _CODE.match(code):
            raise DatabaseError(
                f"subject code {code!r}: use a pseudonymous code of letters, digits, '_', '.', '-' "
                "(max 64, no spaces, never the subject's name)"
            )
        try:
            with self.session() as s:
                row = SubjectRow(code=code)
                s.add(row)
                s.flush()
                return SubjectInfo(row.id, row.code, row.created_at, 0)
        except IntegrityError:
            raise DatabaseError(f"subject {code!r} already exists") from None

    def get_or_add_subject(self, code: str) -> SubjectInfo:
        try:
            return self.get_subject(code)
        except DatabaseError:
            return self.add_subject(code)

    def _subject_row(self, s: Session, code: str) -> SubjectRow:
        row = s.scalar(select(SubjectRow).where(SubjectRow.code == code))
        if row is None:
            raise DatabaseError(f"unknown subject {code!r} (add it with: eegloop subject add {code})")
        return row

    def get_subject(self, code: str) -> SubjectInfo:
        with self.session() as s:
            row = self._subject_row(s, code)
            n = s.scalar(select(func.count(SessionRow.id)).where(SessionRow.subject_id == row.id))
            return SubjectInfo(row.id, row.code, row.created_at, n)

    def list_subjects(self) -> list[SubjectInfo]:
        with self.session() as s:
            q = (select(SubjectRow, func.count(SessionRow.id)).outerjoin(SessionRow)
                 .group_by(SubjectRow.id).order_by(SubjectRow.code))
            return [SubjectInfo(r.id, r.code, r.created_at, n) for r, n in s.execute(q)]

    # -- sessions --------------------------------------------------------------
    def create_session(self, subject: str, protocol, kind: str = "recorded", info: dict | None = None) -> int:
        """Start a session for ``subject`` with the complete protocol stored as YAML."""
        with self.session() as s:
            subj = self._subject_row(s, subject)
            row = SessionRow(subject_id=subj.id, kind=kind, protocol_name=protocol.name,
                             protocol_yaml=protocol.to_yaml(), protocol_sha256=protocol.sha256,
                             status="created", software_version=__version__, info=dict(info or {}))
            s.add(row)
            s.flush()
            return row.id

    def set_session_status(self, session_id: int, status: str, ended: bool = False, **info: Any) -> None:
        with self.session() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise DatabaseError(f"unknown session {session_id}")
            row.status = status
            if ended:
                row.ended_at = datetime.now().astimezone()
            if info:
                row.info = {**(row.info or {}), **info}

    def delete_session(self, session_id: int) -> None:
        """Remove a session and everything recorded in it (runs, blocks, events, epochs, feedback)."""
        with self.session() as s:
            s.execute(delete(SessionRow).where(SessionRow.id == session_id))

    def _session_info(self, row: SessionRow, code: str) -> SessionInfo:
        return SessionInfo(row.id, code, row.kind, row.protocol_name, row.protocol_yaml, row.protocol_sha256,
                           row.status, row.started_at, row.ended_at, row.software_version, dict(row.info or {}))

    def get_session(self, session_id: int) -> SessionInfo:
        with self.session() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise DatabaseError(f"unknown session {session_id}")
            return self._session_info(row, row.subject.code)

    def list_sessions(self, subject: str | None = None) -> list[SessionInfo]:
        with self.session() as s:
            q = select(SessionRow, SubjectRow.code).join(SubjectRow).order_by(SessionRow.id)
            if subject is not None:
                self._subject_row(s, subject)
                q = q.where(SubjectRow.code == subject)
            return [self._session_info(r, code) for r, code in s.execute(q)]

    # -- runs and blocks -------------------------------------------------------
    def add_run(self, session_id: int, index: int, raw_path: str | Path | None = None, **fields: Any) -> int:
        with self.session() as s:
            row = RunRow(session_id=session_id, index=index,
                         raw_path=self.relpath(raw_path) if raw_path else None, **fields)
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
                    v = self.relpath(v)
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

    def add_trial_timings(self, timings: Sequence[dict]) -> None:
        with self.session() as s:
            s.add_all([TrialTimingRow(**t) for t in timings])

    def add_trial_timings_by_trial(self, session_id: int, timings: Sequence[dict]) -> int:
        """Store timings keyed by ``trial``; each is linked to that trial's ``stim_on`` event."""
        with self.session() as s:
            ev = dict(s.execute(select(EventRow.trial, EventRow.id).where(
                EventRow.session_id == session_id, EventRow.kind == "stim_on")).all())
            rows = []
            for t in timings:
                t = dict(t)
                eid = ev.get(t.pop("trial"))
                if eid is not None:
                    rows.append(TrialTimingRow(event_id=eid, **t))
            s.add_all(rows)
            return len(rows)

    def get_trial_timings(self, session_id: int) -> list[TrialTimingRow]:
        with self.session() as s:
            q = (select(TrialTimingRow).join(EventRow).where(EventRow.session_id == session_id)
                 .order_by(EventRow.lsl_time))
            return list(s.scalars(q))

    # -- epochs ----------------------------------------------------------------
    def add_epochs(self, session_id: int, epochs: Sequence[Epoch]) -> list[int]:
        """Store epochs (compressed float32 + checksum) in one transaction."""
        with self.session() as s:
            rows = []
            for e in epochs:
                blob, digest = encode_array(e.data)
                rows.append(EpochRow(
                    session_id=session_id, event_id=e.event_id, run_index=e.run, block_index=e.block,
                    trial=e.trial, label=e.label, onset_lsl=e.onset_lsl, tmin=e.tmin, sfreq=e.sfreq,
                    n_channels=e.data.shape[0], n_times=e.data.shape[1], channel_names=list(e.channel_names),
                    data=blob, sha256=digest))
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def count_epochs(self, session_id: int) -> int:
        with self.session() as s:
            return s.scalar(select(func.count(EpochRow.id)).where(EpochRow.session_id == session_id))

    def get_epochs(self, session_id: int) -> list[Epoch]:
        with self.session() as s:
            q = select(EpochRow).where(EpochRow.session_id == session_id).order_by(EpochRow.id)
            return [self._epoch(r) for r in s.scalars(q)]

    @staticmethod
    def _epoch(r: EpochRow) -> Epoch:
        return Epoch(data=decode_array(r.data, (r.n_channels, r.n_times), r.sha256), label=r.label,
                     sfreq=r.sfreq, tmin=r.tmin, channel_names=list(r.channel_names), run=r.run_index,
                     block=r.block_index, trial=r.trial, onset_lsl=r.onset_lsl, event_id=r.event_id)

    def load_epochs(self, subject: str, session_ids: Sequence[int] | None = None) -> EpochSet:
        """All epochs of a subject (or of the given sessions) as one :class:`EpochSet`."""
        sessions = self.list_sessions(subject)
        if session_ids:
            known = {x.id for x in sessions}
            bad = [i for i in session_ids if i not in known]
            if bad:
                raise DatabaseError(f"--sessions: session {bad[0]} does not belong to subject {subject!r}")
            sessions = [x for x in sessions if x.id in set(session_ids)]
        epochs, sess, classes = [], [], {}
        with self.session() as s:
            sha_by_name = {(r.class_id, Path(r.path).name): r.sha256 for r in s.scalars(select(StimulusRow))}
        for info in sessions:
            es = self.get_epochs(info.id)
            with self.session() as s:
                images = {r.id: (r.payload or {}).get("image") for r in s.scalars(
                    select(EventRow).where(EventRow.session_id == info.id, EventRow.kind == "stim_on"))}
            for e in es:
                name = images.get(e.event_id)
                if name:
                    e.image = sha_by_name.get((e.label, name))
            epochs += es
            sess += [info.id] * len(es)
            classes.update(_classes_of(info.protocol_yaml))
        if not epochs:
            raise DatabaseError(f"subject {subject!r} has no epochs yet (record or import a session first)")
        present = set(e.label for e in epochs)
        ordered = {c: n for c, n in classes.items() if c in present}
        ordered.update({c: c for c in sorted(present) if c not in ordered})
        return EpochSet.from_epochs(epochs, sessions=sess, classes=ordered)

    # -- models ----------------------------------------------------------------
    def add_model(self, subject: str, session_ids: Sequence[int], checkpoint_path: str | Path,
                  config: dict, metrics: dict, kind: str = "kd_stft") -> int:
        with self.session() as s:
            subj = self._subject_row(s, subject)
            row = ModelRow(subject_id=subj.id, session_ids=list(session_ids), kind=kind,
                           checkpoint_path=self.relpath(checkpoint_path), config=config, metrics=metrics)
            s.add(row)
            s.flush()
            return row.id

    def _model_record(self, row: ModelRow, code: str) -> ModelRecord:
        return ModelRecord(row.id, code, list(row.session_ids), row.kind, row.checkpoint_path,
                           dict(row.config), dict(row.metrics), row.created_at)

    def latest_model(self, subject: str) -> ModelRecord:
        with self.session() as s:
            subj = self._subject_row(s, subject)
            row = s.scalar(select(ModelRow).where(ModelRow.subject_id == subj.id)
                           .order_by(ModelRow.id.desc()).limit(1))
            if row is None:
                raise DatabaseError(f"subject {subject!r} has no trained model (run: eegloop train --subject {subject})")
            return self._model_record(row, subject)

    def get_model(self, model_id: int) -> ModelRecord:
        with self.session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise DatabaseError(f"unknown model {model_id}")
            code = s.get(SubjectRow, row.subject_id).code
            return self._model_record(row, code)

    # -- feedback --------------------------------------------------------------
    def add_feedback_trial(self, session_id: int, **fields: Any) -> int:
        with self.session() as s:
            row = FeedbackTrialRow(session_id=session_id, **fields)
            s.add(row)
            s.flush()
            return row.id

    def get_feedback_trials(self, session_id: int) -> list[FeedbackTrialRow]:
        with self.session() as s:
            q = select(FeedbackTrialRow).where(FeedbackTrialRow.session_id == session_id)
            return list(s.scalars(q.order_by(FeedbackTrialRow.trial)))


def _classes_of(protocol_yaml: str) -> dict[str, str]:
    import yaml

    data = yaml.safe_load(protocol_yaml) or {}
    return dict(((data.get("stimuli") or {}).get("classes") or {}))
