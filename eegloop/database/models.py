"""ORM tables (SQLAlchemy 2). Other packages use :mod:`eegloop.database` instead.

The schema itself is created and upgraded by the Alembic migrations in
``eegloop/database/migrations``; a test checks that they match these classes.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SubjectRow(Base):
    __tablename__ = "subjects"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # whether the subject agreed that their EEG enters group models (eegloop subject consent S --group yes|no):
    # off unless they said yes; when it last changed. The default is the constant '0' (false on PostgreSQL too):
    # SQLite adds such a column in place, where an expression default would copy and drop the table, and
    # dropping `subjects` with foreign keys on cascades to every session of every subject
    group_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    group_consent_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)
    sessions: Mapped[list["SessionRow"]] = relationship(back_populates="subject")


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="recorded")  # recorded | imported
    protocol_name: Mapped[str] = mapped_column(String(128))
    protocol_yaml: Mapped[str] = mapped_column(Text)
    protocol_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="created")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)
    software_version: Mapped[str] = mapped_column(String(32))
    notes: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # one visit, one owner: the process recording the session holds this claim and renews it (heartbeat)
    claim_owner: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    claim_heartbeat: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # unix time of the last renewal
    subject: Mapped[SubjectRow] = relationship(back_populates="sessions")
    runs: Mapped[list["RunRow"]] = relationship(back_populates="session", order_by="RunRow.index")


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("session_id", "index", name="uq_runs_session_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # 1-based
    status: Mapped[str] = mapped_column(String(16), default="created")
    raw_path: Mapped[Optional[str]] = mapped_column(String(512), nullable=True)  # relative to the data folder
    started_lsl: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    ended_lsl: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    samples_received: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    samples_expected: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    lost_samples: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    session: Mapped[SessionRow] = relationship(back_populates="runs")
    blocks: Mapped[list["BlockRow"]] = relationship(back_populates="run", order_by="BlockRow.index")


class BlockRow(Base):
    __tablename__ = "blocks"
    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_blocks_run_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # 1-based over the session
    status: Mapped[str] = mapped_column(String(16), default="created")
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    started_lsl: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    ended_lsl: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    # the accounting that decides `done`: n_epochs + n_rejected == n_stimuli, else `incomplete` with a reason
    n_stimuli: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    n_epochs: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    n_rejected: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    reason: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    run: Mapped[RunRow] = relationship(back_populates="blocks")


class StimulusRow(Base):
    __tablename__ = "stimuli"
    __table_args__ = (UniqueConstraint("sha256", "path", name="uq_stimuli_sha256_path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    class_id: Mapped[str] = mapped_column(String(128))
    class_name: Mapped[str] = mapped_column(String(256))


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[Optional[int]] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=True)
    block_id: Mapped[Optional[int]] = mapped_column(ForeignKey("blocks.id", ondelete="CASCADE"), nullable=True)
    stimulus_id: Mapped[Optional[int]] = mapped_column(ForeignKey("stimuli.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    lsl_time: Mapped[float] = mapped_column(Float)
    trial: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    class_id: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # a stimulus's marker-to-photon delay, measured by a photodiode (timing.photodiode_channel), ms
    photon_delay_ms: Mapped[Optional[float]] = mapped_column(Float, nullable=True)


class TrialTimingRow(Base):
    __tablename__ = "trial_timings"
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), unique=True)
    intended_onset_lsl: Mapped[float] = mapped_column(Float)
    actual_onset_lsl: Mapped[float] = mapped_column(Float)
    intended_frames: Mapped[int] = mapped_column(Integer)
    actual_frames: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    dropped_frames: Mapped[int] = mapped_column(Integer, default=0)


class EpochRow(Base):
    __tablename__ = "epochs"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[Optional[int]] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), nullable=True)
    block_id: Mapped[Optional[int]] = mapped_column(ForeignKey("blocks.id", ondelete="CASCADE"), nullable=True,
                                                    index=True)
    run_index: Mapped[int] = mapped_column(Integer)
    block_index: Mapped[int] = mapped_column(Integer)
    trial: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    label: Mapped[str] = mapped_column(String(128))
    onset_lsl: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    tmin: Mapped[float] = mapped_column(Float)  # time of the first sample relative to onset, s
    sfreq: Mapped[float] = mapped_column(Float)
    n_channels: Mapped[int] = mapped_column(Integer)
    n_times: Mapped[int] = mapped_column(Integer)
    channel_names: Mapped[list[str]] = mapped_column(JSON)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # zlib(float32 C-order)
    sha256: Mapped[str] = mapped_column(String(64))  # of the uncompressed float32 bytes


class RejectedEpochRow(Base):
    """A stimulus whose epoch was not stored as valid, and why (gap, non-finite, not buffered, edge...)."""

    __tablename__ = "rejected_epochs"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    block_id: Mapped[Optional[int]] = mapped_column(ForeignKey("blocks.id", ondelete="CASCADE"), nullable=True,
                                                    index=True)
    event_id: Mapped[Optional[int]] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), nullable=True)
    run_index: Mapped[int] = mapped_column(Integer)
    block_index: Mapped[int] = mapped_column(Integer)
    trial: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    label: Mapped[str] = mapped_column(String(128))
    onset_lsl: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(String(32))  # gap | non-finite | not-buffered | edge | ...
    detail: Mapped[Optional[str]] = mapped_column(Text, nullable=True)


class SourceFileRow(Base):
    """A file imported into a session, by content hash (the same file is not imported twice)."""

    __tablename__ = "source_files"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    session_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    kind: Mapped[str] = mapped_column(String(32), default="kd_stft")
    checkpoint_path: Mapped[str] = mapped_column(String(1024))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GroupModelRow(Base):
    """A group model: one model trained on several subjects' epochs, by name; the same fields as a subject's model
    (:class:`ModelRow`), its subjects in :class:`GroupModelSubjectRow`.

    A table of its own, not ``models`` with a null subject: making ``models.subject_id`` nullable copies and drops
    ``models`` on SQLite, which foreign keys to it (feedback trials) refuse or, for ``subjects``, cascade.
    """

    __tablename__ = "group_models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    session_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    kind: Mapped[str] = mapped_column(String(32))
    checkpoint_path: Mapped[str] = mapped_column(String(1024))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GroupModelSubjectRow(Base):
    """One subject whose epochs a group model was trained on: which sessions, how many epochs, and when the
    subject's group consent was given. A subject who withdraws finds every group model holding their data here.

    The subject link has no ``ondelete``: a subject row cannot disappear while a group model holds their data
    (delete the group models first), so no model is left without the record of whose data it holds.
    """

    __tablename__ = "group_model_subjects"
    __table_args__ = (UniqueConstraint("model_id", "subject_id", name="uq_group_model_subjects_model_subject"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("group_models.id", ondelete="CASCADE"), index=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    session_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    n_epochs: Mapped[int] = mapped_column(Integer)
    consent_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)


class FeedbackTrialRow(Base):
    __tablename__ = "feedback_trials"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"), nullable=True)
    event_id: Mapped[Optional[int]] = mapped_column(ForeignKey("events.id"), nullable=True)
    trial: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    predicted_class: Mapped[str] = mapped_column(String(128))
    true_class: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    image_path: Mapped[Optional[str]] = mapped_column(String(1024), nullable=True)
    seed: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    latencies: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
