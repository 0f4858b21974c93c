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
from sqlalchemy import create_engine, delete, event, func, inspect, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from .. import __version__
from ..errors import DatabaseError, clip_text
from ..montage import DEFAULT_MONTAGE
from ..types import BlockRecord, Epoch, EpochSet
from .models import (
    BlockRow,
    EpochRow,
    EventRow,
    FeedbackTrialRow,
    ModelRow,
    RejectedEpochRow,
    RunRow,
    SessionRow,
    SourceFileRow,
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
    "SessionClaimedError",
    "CLAIM_OWNER",
    "encode_array",
    "decode_array",
]

_CODE = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")  # letters and digits: a valid BIDS label ("sub-<label>")
MIGRATIONS = Path(__file__).parent / "migrations"


class SessionClaimedError(DatabaseError):
    """Another process is recording this session (its claim is fresh)."""


# who this process is, in session claims: host, pid and a random part (pids are reused)
CLAIM_OWNER = f"{__import__('socket').gethostname()[:64]}:{os.getpid()}:{__import__('uuid').uuid4().hex[:8]}"
DONE_STATUSES = ("done", "imported")  # 'imported': blocks of databases from before revision 0002


def check_subject_code(code: str) -> str:
    """``code`` if it is a valid subject code (1-64 ASCII letters and digits, a valid BIDS label), else
    :class:`DatabaseError` with a one-line message."""
    if not isinstance(code, str) or not _CODE.match(code):
        from ..errors import short_repr

        raise DatabaseError(
            f"subject code {short_repr(code, 70)}: use a pseudonymous code of 1-64 letters and digits only "
            "(A-Z, a-z, 0-9, e.g. S01 or P007: no spaces, '-', '_' or '.'; never the subject's name)"
        )
    return code


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
    # per connection, and none of them writes to the file: WAL mode (persistent, a write to the file's header)
    # is switched on by Database.upgrade, once the file is known to be an eegloop database or a new one
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _masked_url(raw: str) -> str:
    """A URL that did not parse, for a message: anything that could be a password hidden, length bounded."""
    s = str(raw)
    at = s.rfind("@")
    if at >= 0:  # whatever stands before the last '@' (after a scheme) may hold the password
        scheme = s.find("://", 0, at)
        s = (s[: scheme + 3] if scheme >= 0 else "") + "***" + s[at:]
    s = re.sub(r"(?i)((?:password|passwd|pwd)=)[^&]*", r"\1***", s)
    return clip_text(s)


def _safe_url(url) -> str:
    """A parsed URL for a message: password hidden (also a ``?password=`` option), length bounded."""
    if any(k.lower() in ("password", "passwd", "pwd") for k in url.query):
        url = url.set(query={k: ("***" if k.lower() in ("password", "passwd", "pwd") else v)
                             for k, v in url.query.items()})
    return clip_text(url.render_as_string(hide_password=True))


def _one_line(exc: BaseException, secret: str | None = None, limit: int = 300) -> str:
    """A driver's error message on one line (psycopg's span several), without ``secret``, bounded."""
    text = "; ".join(" ".join(line.split()) for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return clip_text(text, limit)


_DRIVER_HINTS = {
    "postgresql": "pip install 'psycopg[binary]' and use a postgresql+psycopg:// URL",
    "mysql": "pip install pymysql and use a mysql+pymysql:// URL",
    "mariadb": "pip install pymysql and use a mariadb+pymysql:// URL",
    "mssql": "pip install pyodbc and use a mssql+pyodbc:// URL",
    "oracle": "pip install oracledb and use an oracle+oracledb:// URL",
}


def _remove_created(created: Sequence[Path]) -> None:
    """Undo a failed open: the SQLite file it created (with SQLite's side files), then its new empty folders."""
    for p in reversed(created):
        try:
            if p.is_dir():
                p.rmdir()  # only if empty
            else:
                for side in ("", "-wal", "-shm", "-journal"):
                    Path(f"{p}{side}").unlink(missing_ok=True)
        except OSError:
            pass


def _montage_of(protocol_yaml: str) -> Optional[str]:
    """A stored protocol's ``amplifier.montage`` (the default when it does not say)."""
    import yaml

    try:
        amp = (yaml.safe_load(protocol_yaml) or {}).get("amplifier") or {}
    except yaml.YAMLError:
        return DEFAULT_MONTAGE
    m = amp.get("montage", DEFAULT_MONTAGE) if isinstance(amp, dict) else DEFAULT_MONTAGE
    return m if isinstance(m, str) or m is None else DEFAULT_MONTAGE


def _event_row(session_id: int, run_id: Optional[int], block_id: Optional[int], m: dict, t: float) -> EventRow:
    """The row of marker ``m`` received at LSL time ``t``."""
    return EventRow(session_id=session_id, run_id=run_id, block_id=block_id, kind=str(m.get("event", "marker")),
                    lsl_time=float(t), trial=m.get("trial"),
                    class_id=str(m["class"]) if m.get("class") is not None else None, payload=m)


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
    create : bool
        ``False`` for commands that only use an existing database: nothing is
        created (no SQLite file, no folder) and nothing is migrated; a missing
        database, or one whose schema is not this eegloop's, is a one-line
        :class:`DatabaseError` saying what to run.
    busy_timeout_s : float
        SQLite: how long a statement waits for another program's write lock
        before failing with "database ... is locked".

    Every failure to open (bad URL, missing driver, not a database, server
    unreachable, locked) is a one-line :class:`DatabaseError` whose URL hides
    the password, and leaves an existing file as it was.
    """

    def __init__(self, url: str | None = None, data_dir: str | Path | None = None, upgrade: bool = True,
                 create: bool = True, busy_timeout_s: float = 5.0):
        self.url = url or default_url(data_dir)
        self.create = create
        self.busy_timeout_s = float(busy_timeout_s)
        self.sqlite_path: Optional[Path] = None  # the SQLite file, when the database is one
        self._password: Optional[str] = None
        created: list[Path] = []  # folders and the file this open made: removed again if it fails
        self.engine: Engine = self._open_engine()
        try:
            if self.sqlite_path is not None:
                self._check_sqlite_file(created)
            default_dir = self.sqlite_path.parent if self.sqlite_path is not None else default_data_dir()
            self.data_dir = Path(data_dir) if data_dir is not None else default_dir
            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
            if not create:
                self.check_schema()
            elif upgrade:
                self.upgrade()
            elif self.sqlite_path is not None:
                self._prepare_sqlite(self.revision())
        except BaseException:
            self.engine.dispose()
            _remove_created(created)
            raise

    def _open_engine(self) -> Engine:
        try:
            u = make_url(self.url)
        except (ArgumentError, ValueError):
            raise DatabaseError(f"--db: cannot use database URL {_masked_url(self.url)}: not a URL like "
                                "sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE") from None
        self._password = u.password
        shown = _safe_url(u)
        backend = u.get_backend_name()
        kw: dict = {}
        if backend == "sqlite":
            kw["connect_args"] = {"check_same_thread": False, "timeout": self.busy_timeout_s}
            if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
                self.sqlite_path = Path(u.database)
        else:
            kw["pool_pre_ping"] = True
            if backend == "postgresql" and "connect_timeout" not in u.query:
                kw["connect_args"] = {"connect_timeout": 10}  # an unreachable server fails in seconds, not minutes
        try:
            engine = create_engine(u, **kw)
        except NoSuchModuleError:
            raise DatabaseError(f"--db: cannot use database URL {shown}: SQLAlchemy knows no database "
                                f"'{clip_text(u.drivername, 40)}' (e.g. sqlite:///PATH, "
                                "postgresql+psycopg://USER@HOST/DATABASE)") from None
        except ImportError as exc:
            missing = exc.name or _one_line(exc)
            hint = _DRIVER_HINTS.get(backend, f"pip install {missing}")
            raise DatabaseError(f"--db: cannot use database URL {shown}: its driver, the Python package "
                                f"'{clip_text(missing, 40)}', is not installed ({hint})") from None
        except ArgumentError as exc:
            raise DatabaseError(f"--db: cannot use database URL {shown}: {_one_line(exc, self._password)}") from None
        if backend == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _check_sqlite_file(self, created: list) -> None:
        """Before SQLite touches it: the file is a SQLite database (or is created, 0600, when allowed)."""
        path = self.sqlite_path
        where = clip_text(path)
        hint = "create one with: eegloop db init, or give --db/--data"
        try:
            if path.is_dir():
                raise DatabaseError(f"--db: {where} is a folder, not a database file")
            if not path.exists():
                if not self.create:
                    raise DatabaseError(f"no eegloop database at {where} ({hint})")
                from .._files import FILE_MODE, private_dir

                private_dir(path.parent, created)
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
                except FileExistsError:  # another process made it meanwhile: it is theirs
                    return
                created.append(path)
                os.chmod(path, FILE_MODE)  # SQLite gives its -wal and -shm files the same mode
                return
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise DatabaseError(f"cannot open database {where}: {exc.strerror or _one_line(exc)}") from None
        if not head:
            if not self.create:
                raise DatabaseError(f"no eegloop database at {where}: the file is empty ({hint})")
        elif head != _SQLITE_MAGIC:
            raise DatabaseError(f"--db: {where} is not a SQLite database (it does not begin with 'SQLite format 3'); "
                                "give --db/--data an eegloop database or a new path")

    def _prepare_sqlite(self, current: str | None) -> None:
        """Refuse another program's SQLite database; then WAL mode (kept by the file) -- the first write."""
        with self._db_errors():
            if current is None:
                tables = sorted(t for t in inspect(self.engine).get_table_names() if t != "alembic_version")
                if tables:
                    raise DatabaseError(
                        f"--db: {clip_text(self.sqlite_path)} is the SQLite database of another program (tables "
                        f"{clip_text(', '.join(tables), 80)}), not an eegloop one; give --db/--data a new path")
            raw = self.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.close()
            finally:
                raw.close()

    def user_error(self, exc: BaseException, opening: bool = False) -> Optional[str]:
        """A one-line message (password hidden) for a database failure the user can act on: locked,
        unreachable, not a database, damaged, read-only, full, permission denied; ``None`` for anything
        else, which is a bug and keeps its traceback. ``opening``: any driver error while opening counts."""
        if not isinstance(exc, sa_exc.DBAPIError):
            return None
        orig = exc.orig if exc.orig is not None else exc
        text = _one_line(orig, self._password)
        low = text.lower()
        where = f"database {self.safe_url}"
        if "database is locked" in low or "database table is locked" in low:
            return (f"{where} is locked by another program (a write has held it for more than "
                    f"{self.busy_timeout_s:g} s: another eegloop, a database browser, a backup?); "
                    "try again once it is done")
        if "file is not a database" in low:
            return f"{where} is not a SQLite database ({text})"
        if "malformed" in low:
            return f"{where} is damaged ({text}); restore it from a backup"
        if "readonly database" in low:
            return f"{where} is read-only for this user ({text}): check the permissions of the file and its folder"
        if "disk is full" in low or "disk full" in low:
            return f"{where}: the disk is full ({text})"
        if "unable to open database file" in low:
            return f"cannot open {where} ({text}): does its folder exist, and may this user write there?"
        sqlstate = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        if sqlstate == "42501" or sqlstate.startswith("28"):  # insufficient privilege, authorization
            return f"{where}: permission denied ({text})"
        driver_level = isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or \
            type(exc) is sa_exc.DatabaseError
        lost = driver_level and (exc.connection_invalidated or any(
            k in low for k in ("connection", "server closed", "terminating", "could not connect", "timeout expired",
                               "timed out")))
        if lost or (opening and driver_level):
            return f"cannot use {where}: {text}"
        return None

    @contextmanager
    def _db_errors(self) -> Iterator[None]:
        try:
            yield
        except sa_exc.DBAPIError as exc:
            msg = self.user_error(exc, opening=True)
            if msg is None:
                raise
            raise DatabaseError(msg) from None

    # -- schema ----------------------------------------------------------------
    def _alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def _known_revision(self, rev: str) -> bool:
        from alembic.script import ScriptDirectory
        from alembic.script.revision import RevisionError
        from alembic.util import CommandError

        try:
            return ScriptDirectory.from_config(self._alembic_config()).get_revision(rev) is not None
        except (CommandError, RevisionError, KeyError, ValueError):
            return False

    def _unknown_revision_error(self, rev: str) -> DatabaseError:
        return DatabaseError(
            f"database {self.safe_url} has schema revision '{clip_text(rev, 40)}', which eegloop {__version__} does "
            f"not know (its newest is {self.head_revision()}): it was written by a newer eegloop; upgrade eegloop")

    def check_schema(self) -> str:
        """The schema revision if it is this eegloop's newest; else a one-line :class:`DatabaseError` saying
        what to run. Reads only (the check of read-only opens)."""
        rev = self.revision()
        head = self.head_revision()
        if rev == head:
            return rev
        if rev is None:
            raise DatabaseError(f"database {self.safe_url} has no eegloop tables (create them with: eegloop db init, "
                                "with the same --db/--data)")
        if not self._known_revision(rev):
            raise self._unknown_revision_error(rev)
        raise DatabaseError(f"database {self.safe_url} has schema revision {clip_text(rev, 40)}, older than this "
                            f"eegloop's {head}: run eegloop db upgrade (with the same --db/--data) first")

    def upgrade(self, revision: str = "head") -> str:
        """Create the schema or upgrade it (Alembic); returns the revision reached.

        A database of a newer eegloop, or (SQLite) of another program, is refused before anything is written.
        """
        from alembic import command

        current = self.revision()
        if current is not None and not self._known_revision(current):
            raise self._unknown_revision_error(current)
        if self.sqlite_path is not None:
            self._prepare_sqlite(current)
        cfg = self._alembic_config()
        with self._db_errors():
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        return self.revision()

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self._db_errors():
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    @property
    def safe_url(self) -> str:
        """The URL for messages: any password hidden, at most 200 characters."""
        return _safe_url(self.engine.url)

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
        """Add a subject by pseudonymous code (1-64 letters and digits; no names)."""
        check_subject_code(code)
        try:
            with self.session() as s:
                row = SubjectRow(code=code)
                s.add(row)
                s.flush()
                return SubjectInfo(row.id, row.code, row.created_at, 0)
        except IntegrityError:
            raise DatabaseError(f"subject {code!r} already exists") from None

    def check_new_subject(self, code: str) -> None:
        """Raise the one-line code error unless ``code`` is valid or already in the database (codes added
        before the letters-and-digits rule stay usable). Writes nothing."""
        try:
            check_subject_code(code)
        except DatabaseError as exc:
            try:
                self.get_subject(code)
            except DatabaseError:
                raise exc from None

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

    def update_session_info(self, session_id: int, **info: Any) -> None:
        """Merge ``info`` into the session's info (its status unchanged)."""
        with self.session() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise DatabaseError(f"unknown session {session_id}")
            row.info = {**(row.info or {}), **info}

    def delete_session(self, session_id: int) -> None:
        """Remove a session and everything recorded in it (runs, blocks, events, epochs, feedback)."""
        with self.session() as s:
            s.execute(delete(SessionRow).where(SessionRow.id == session_id))

    # -- claims: one visit, one owner ----------------------------------------------------
    def claim_session(self, session_id: int, owner: str = CLAIM_OWNER, ttl_s: float = 10.0) -> None:
        """Claim ``session_id`` for ``owner``; raise :class:`SessionClaimedError` if another owner holds a
        claim renewed less than ``ttl_s`` ago (a crashed owner's claim expires). One atomic UPDATE, so two
        processes racing for the same session cannot both win."""
        import time as _time

        for attempt in (1, 2):  # a holder releasing between our UPDATE and our look is not a refusal
            now = _time.time()
            with self.session() as s:
                res = s.execute(update(SessionRow).where(
                    SessionRow.id == session_id,
                    or_(SessionRow.claim_owner.is_(None), SessionRow.claim_owner == owner,
                        SessionRow.claim_heartbeat.is_(None), SessionRow.claim_heartbeat < now - ttl_s))
                    .values(claim_owner=owner, claim_heartbeat=now))
                if res.rowcount == 1:
                    return
                row = s.get(SessionRow, session_id)
                if row is None:
                    raise DatabaseError(f"unknown session {session_id}")
                if row.claim_owner is not None:
                    break
        host, pid = (row.claim_owner or "?:?").split(":")[:2]
        age = now - (row.claim_heartbeat or now)
        raise SessionClaimedError(
            f"session {session_id} is being recorded by another process (host {host}, pid {pid}, alive "
            f"{age:.0f} s ago); wait for it to end, or stop it; a crashed process's claim expires after {ttl_s:g} s")

    def renew_claim(self, session_id: int, owner: str = CLAIM_OWNER) -> bool:
        with self.session() as s:
            return self._touch_claim(s, session_id, owner)

    @staticmethod
    def _touch_claim(s: Session, session_id: int, owner: str) -> bool:
        """Renew ``owner``'s claim inside transaction ``s``; False if ``owner`` does not hold it."""
        import time as _time

        res = s.execute(update(SessionRow).where(SessionRow.id == session_id, SessionRow.claim_owner == owner)
                        .values(claim_heartbeat=_time.time()))
        return res.rowcount == 1

    def release_claim(self, session_id: int, owner: str = CLAIM_OWNER) -> None:
        with self.session() as s:
            s.execute(update(SessionRow).where(SessionRow.id == session_id, SessionRow.claim_owner == owner)
                      .values(claim_owner=None, claim_heartbeat=None))

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
                self._fence(s, session_id, owner)
            return self._store_block(s, session_id, run_id, record)

    @classmethod
    def _fence(cls, s: Session, session_id: int, owner: str) -> None:
        if not cls._touch_claim(s, session_id, owner):
            raise SessionClaimedError(f"session {session_id}: this process no longer holds its claim (another "
                                      "process took the session over); nothing more is written")

    def finish_run(self, session_id: int, run_id: int, events: Sequence[tuple[dict, float]], status: str,
                   info: dict, owner: Optional[str] = None, **fields: Any) -> None:
        """A run's markers outside any block and its final accounting, in one transaction (so a retried
        write never stores the markers twice)."""
        with self.session() as s:
            if owner is not None:
                self._fence(s, session_id, owner)
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
        s.add_all(self._epoch_rows(session_id, rec.epochs, block.id))
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
                if not _CODE.match(subject):
                    self.add_subject(subject)  # raises the one-line error about the code
                subj = SubjectRow(code=subject)
                s.add(subj)
                s.flush()
            sess = SessionRow(subject_id=subj.id, kind="imported", protocol_name=protocol.name,
                              protocol_yaml=protocol.to_yaml(), protocol_sha256=protocol.sha256, status="imported",
                              software_version=__version__, info=dict(info or {}),
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

    # -- epochs ----------------------------------------------------------------
    @staticmethod
    def _epoch_rows(session_id: int, epochs: Sequence[Epoch], block_id: int | None = None) -> list[EpochRow]:
        rows = []
        for e in epochs:
            blob, digest = encode_array(e.data)
            rows.append(EpochRow(
                session_id=session_id, event_id=e.event_id, block_id=block_id, run_index=e.run, block_index=e.block,
                trial=e.trial, label=e.label, onset_lsl=e.onset_lsl, tmin=e.tmin, sfreq=e.sfreq,
                n_channels=e.data.shape[0], n_times=e.data.shape[1], channel_names=list(e.channel_names),
                data=blob, sha256=digest))
        return rows

    def add_epochs(self, session_id: int, epochs: Sequence[Epoch], block_id: int | None = None) -> list[int]:
        """Store epochs (compressed float32 + checksum) in one transaction (blocks use :meth:`store_block`)."""
        with self.session() as s:
            rows = self._epoch_rows(session_id, epochs, block_id)
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def count_epochs(self, session_id: int) -> int:
        with self.session() as s:
            return s.scalar(select(func.count(EpochRow.id)).where(EpochRow.session_id == session_id))

    def get_epochs(self, session_id: int, done_only: bool = False) -> list[Epoch]:
        """A session's stored epochs; ``done_only``: only those of blocks whose accounting is complete
        (what training and evaluation use)."""
        with self.session() as s:
            q = select(EpochRow).where(EpochRow.session_id == session_id).order_by(EpochRow.id)
            if done_only:
                q = q.join(BlockRow, BlockRow.id == EpochRow.block_id).where(BlockRow.status.in_(DONE_STATUSES))
            rows = list(s.scalars(q))
            blobs = [(r.data, (r.n_channels, r.n_times), r.sha256) for r in rows]
        # decompressing and checking is most of loading (5 of 7 s for 2000 x 128 x 1000 epochs on 2 cores);
        # zlib and hashlib release the GIL, so the cores share it
        if len(blobs) > 64 and (os.cpu_count() or 1) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(os.cpu_count()) as pool:
                arrays = list(pool.map(lambda b: decode_array(*b), blobs))
        else:
            arrays = [decode_array(*b) for b in blobs]
        return [self._epoch(r, a) for r, a in zip(rows, arrays)]

    @staticmethod
    def _epoch(r: EpochRow, data: np.ndarray) -> Epoch:
        return Epoch(data=data, label=r.label,
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
            es = self.get_epochs(info.id, done_only=True)
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
        return EpochSet.from_epochs(epochs, sessions=sess, classes=ordered,
                                    montage=_montage_of(sessions[0].protocol_yaml))

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

    def latest_model(self, subject: str, encoder: bool = False) -> ModelRecord:
        """The subject's latest classifier, or with ``encoder`` its latest EEG -> embedding encoder."""
        with self.session() as s:
            subj = self._subject_row(s, subject)
            q = select(ModelRow).where(ModelRow.subject_id == subj.id)
            q = q.where(ModelRow.kind == "eeg_encoder") if encoder else q.where(ModelRow.kind != "eeg_encoder")
            row = s.scalar(q.order_by(ModelRow.id.desc()).limit(1))
            if row is None:
                if encoder:
                    raise DatabaseError(f"subject {subject!r} has no trained EEG encoder (run: eegloop train "
                                        f"--subject {subject} --encoder)")
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
