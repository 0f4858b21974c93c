"""The session database: a small repository-style API over SQLAlchemy.

Other packages call :class:`Database` methods; they never write SQL. SQLite by
default (one file in the data folder, WAL mode, foreign keys on); any
SQLAlchemy URL through ``--db`` or ``EEGLOOP_DB`` (e.g. PostgreSQL for a
shared lab server). The schema is created and upgraded by Alembic migrations.

Where things live: :mod:`.engine` opens a database (URL, SQLite file and
pragmas, Alembic, read-only opening); :mod:`.facade` holds :class:`Database`,
which delegates to the repositories :mod:`.subjects`, :mod:`.sessions` (with
claims), :mod:`.recording` (runs, blocks, markers, timings, stimuli, imports),
:mod:`.epochs`, :mod:`.trained_models` and :mod:`.feedback`; :mod:`.records`
holds the typed records they hand out (:class:`SessionStatus`,
:class:`SessionDetails`, ...); :mod:`.models` the ORM tables; :mod:`.claim`
the heartbeat that holds a session's claim.

Examples
--------
>>> db = Database("sqlite:///eegloop-data/eegloop.db")  # doctest: +SKIP
>>> db.upgrade()  # doctest: +SKIP
>>> db.add_subject("S01")  # doctest: +SKIP
"""
from .engine import MIGRATIONS, default_data_dir, default_url
from .epochs import DONE_STATUSES, decode_array, encode_array
from .facade import Database
from .records import (
    FeedbackSummary,
    ModelRecord,
    RecordingSummary,
    SessionDetails,
    SessionInfo,
    SessionStatus,
    SubjectInfo,
)
from .sessions import CLAIM_OWNER, SessionClaimedError
from .subjects import check_subject_code


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
    "check_subject_code",
    "SessionStatus",
    "SessionDetails",
    "RecordingSummary",
    "FeedbackSummary",
    "DONE_STATUSES",
    "MIGRATIONS",
]
