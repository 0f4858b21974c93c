"""Opening a database: URL, driver, SQLite file and pragmas, Alembic schema, units of work, paths.

:class:`Store` is an open database; the repositories (:mod:`.subjects`,
:mod:`.sessions`, :mod:`.recording`, :mod:`.epochs`, :mod:`.trained_models`,
:mod:`.feedback`) work through its :meth:`Store.session` and
:class:`~eegloop.database.Database` puts them behind one facade.

SQLite by default (one file in the data folder, WAL mode, foreign keys on); any
SQLAlchemy URL through ``--db`` or ``EEGLOOP_DB`` (e.g. PostgreSQL for a shared
lab server). The schema is created and upgraded by Alembic migrations.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from .._version import __version__
from ..errors import DatabaseError, clip_text

__all__ = ["Store", "Repository", "default_data_dir", "default_url", "MIGRATIONS"]

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


class Store:
    """An open eegloop database: its engine, schema, units of work and data folder.

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
            self._unit_of_work = sessionmaker(self.engine, expire_on_commit=False)
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
        s = self._unit_of_work()
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


class Repository:
    """Base of the repositories: the queries of one subject over an open :class:`Store`."""

    def __init__(self, store: Store):
        self.store = store

    def session(self):
        """A unit of work of the store (:meth:`Store.session`)."""
        return self.store.session()
