"""What the database hands out: typed records of subjects, sessions and models, a session's status,
its ``info`` JSON read into dataclasses, and its stored protocol read back.

Records are frozen dataclasses read from rows; the repositories build them and
callers never see an ORM row of these tables. The session's ``info`` stays a
JSON mapping in the database (so old rows and rows of other versions stay
readable): :class:`SessionDetails` reads it tolerantly (a missing or malformed
key is ``None``, an unknown one is kept in ``extra``) and writes it back as the
same JSON.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Optional


from ..protocol import Protocol, stored_protocol

__all__ = [
    "SessionStatus",
    "SubjectInfo",
    "SessionInfo",
    "ModelRecord",
    "SessionDetails",
    "RecordingSummary",
    "FeedbackSummary",
    "info_json",
    "status_text",
]


class SessionStatus(str, enum.Enum):
    """A session's status, stored as its value (the text is the database's, unchanged).

    A member compares, hashes, formats and serialises as its text: ``SessionStatus.RECORDED == "recorded"``.
    """

    CREATED = "created"  # the session row exists; nothing recorded yet
    RECORDING = "recording"  # the recorder runs
    RECORDED = "recorded"  # every block stored completely
    INCOMPLETE = "incomplete"  # ended with blocks to record again (--resume)
    ABORTED = "aborted"  # the operator stopped the visit
    FAILED = "failed"  # a part failed; ``info["failure"]`` says why
    TRAINED = "trained"  # the quick-train model is saved
    FEEDBACK_DONE = "feedback-done"  # the feedback block is done
    COMPLETED = "completed"  # the visit ended (with its evaluation)
    IMPORTED = "imported"  # read from files by eegloop import

    __hash__ = str.__hash__  # Enum hashes the name: a member must find the same dict entry as its text

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def status_text(status: "SessionStatus | str") -> str:
    """The text stored for ``status`` (a member's value; any other text as it is)."""
    return status.value if isinstance(status, SessionStatus) else status


def _get(d: dict, key: str, kind: type | tuple, default: Any = None) -> Any:
    """``d[key]`` if it is of ``kind`` (bool is not a number here), else ``default``."""
    v = d.get(key, default)
    if isinstance(v, bool) and kind in ((int, float), int, float):
        return default
    return v if isinstance(v, kind) else default


class _InfoRecord:
    """Mixin of the info dataclasses: JSON in (tolerant) and out (the keys written, in their order)."""

    _optional: tuple[str, ...] = ()  # keys written only when not None

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "extra":
                out.update(v)
            elif not (f.name in self._optional and v is None):
                out[f.name] = v.to_json() if isinstance(v, _InfoRecord) else v
        return out


@dataclass(frozen=True)
class RecordingSummary(_InfoRecord):
    """``info["recording"]``: how a recording phase went (written when it ends)."""

    runs_done: Optional[int] = None
    frame_rate_hz: Optional[float] = None
    paced: Optional[bool] = None
    samples_received: Optional[int] = None
    lost_samples: Optional[int] = None
    epochs_rejected: dict = field(default_factory=dict)  # reason -> count
    online_dropped: Optional[int] = None
    scheduling: Optional[str] = None
    cpu_steal_pct_max: Optional[float] = None  # the worst block's, rounded
    extra: dict = field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_json(cls, d: Any) -> Optional["RecordingSummary"]:
        if not isinstance(d, dict):
            return None
        num = (int, float)
        return cls(runs_done=_get(d, "runs_done", int), frame_rate_hz=_get(d, "frame_rate_hz", num),
                   paced=_get(d, "paced", bool), samples_received=_get(d, "samples_received", int),
                   lost_samples=_get(d, "lost_samples", int), epochs_rejected=_get(d, "epochs_rejected", dict, {}),
                   online_dropped=_get(d, "online_dropped", int), scheduling=_get(d, "scheduling", str),
                   cpu_steal_pct_max=_get(d, "cpu_steal_pct_max", num),
                   extra={k: v for k, v in d.items() if k not in _FIELDS["RecordingSummary"]})


@dataclass(frozen=True)
class FeedbackSummary(_InfoRecord):
    """``info["feedback"]``: the feedback block's result (written when it ends)."""

    _optional = ("scored", "candidates", "encoder_id")  # embedding modes only

    mode: Optional[str] = None
    format: Optional[str] = None
    images_per_trial: Optional[int] = None
    trials: Optional[int] = None
    correct: Optional[int] = None
    latency_ms: dict = field(default_factory=dict)  # name -> {"median", "p95"}
    model_id: Optional[int] = None
    scored: Optional[int] = None
    candidates: Optional[int] = None
    encoder_id: Optional[int] = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any) -> Optional["FeedbackSummary"]:
        if not isinstance(d, dict):
            return None
        return cls(mode=_get(d, "mode", str), format=_get(d, "format", str),
                   images_per_trial=_get(d, "images_per_trial", int), trials=_get(d, "trials", int),
                   correct=_get(d, "correct", int), latency_ms=_get(d, "latency_ms", dict, {}),
                   model_id=_get(d, "model_id", int), scored=_get(d, "scored", int),
                   candidates=_get(d, "candidates", int), encoder_id=_get(d, "encoder_id", int),
                   extra={k: v for k, v in d.items() if k not in _FIELDS["FeedbackSummary"]})


@dataclass(frozen=True)
class SessionDetails(_InfoRecord):
    """A session's ``info`` JSON, typed. Every key is optional (old rows lack the newer ones).

    Written by the visit's phases (:meth:`~eegloop.database.Database.set_session_status` and
    :meth:`~eegloop.database.Database.update_session_info` merge keys in) and by the importers.
    """

    _optional = ("channels", "signal_checks", "recording", "failure", "model_id", "train_seconds", "encoder_id",
                 "evaluation", "feedback", "files", "events", "format", "zero_shot_test_classes")

    channels: Optional[list] = None  # the amplifier's channels as connected ({"name", "type", ...})
    signal_checks: Optional[list] = None  # SignalCheck.to_json() + "at" and "forced", one per check
    recording: Optional[RecordingSummary] = None
    failure: Optional[str] = None  # why the session failed
    model_id: Optional[int] = None  # the quick-train classifier
    train_seconds: Optional[float] = None
    encoder_id: Optional[int] = None  # the quick-train EEG encoder (embedding feedback)
    evaluation: Optional[dict] = None  # the report's cross-validation (EvalReport.to_json() and more)
    feedback: Optional[FeedbackSummary] = None
    files: Optional[list] = None  # imported sessions: the files read
    events: Optional[dict] = None  # imported sessions: the event map used
    format: Optional[str] = None  # imported sessions: the dataset's format (e.g. "things-eeg2")
    zero_shot_test_classes: Optional[list] = None  # datasets that name their zero-shot test classes
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they are

    @classmethod
    def from_json(cls, d: Any) -> "SessionDetails":
        """Read a stored ``info`` (any JSON; not a mapping reads as empty)."""
        if not isinstance(d, dict):
            d = {}
        num = (int, float)
        return cls(channels=_get(d, "channels", list), signal_checks=_get(d, "signal_checks", list),
                   recording=RecordingSummary.from_json(d.get("recording")), failure=_get(d, "failure", str),
                   model_id=_get(d, "model_id", int), train_seconds=_get(d, "train_seconds", num),
                   encoder_id=_get(d, "encoder_id", int), evaluation=_get(d, "evaluation", dict),
                   feedback=FeedbackSummary.from_json(d.get("feedback")), files=_get(d, "files", list),
                   events=_get(d, "events", dict), format=_get(d, "format", str),
                   zero_shot_test_classes=_get(d, "zero_shot_test_classes", list),
                   extra={k: v for k, v in d.items() if k not in _FIELDS["SessionDetails"]})


_FIELDS = {c.__name__: {f.name for f in dataclasses.fields(c)} - {"extra"}
           for c in (RecordingSummary, FeedbackSummary, SessionDetails)}


def info_json(info: dict) -> dict:
    """``info`` as stored: a typed record (:class:`SessionDetails`, :class:`RecordingSummary`, ...) among
    the values becomes its JSON; anything else is kept as it is."""
    return {k: v.to_json() if isinstance(v, _InfoRecord) else v for k, v in info.items()}


@dataclass(frozen=True)
class SubjectInfo:
    id: int
    code: str
    created_at: datetime
    n_sessions: int


@dataclass(frozen=True)
class SessionInfo:
    """One session as stored.

    ``status`` is the stored text (a :class:`SessionStatus` value; a text this
    version does not know is kept as it is); ``info`` the stored JSON as it is,
    and :attr:`details` the same, typed.
    """

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

    @cached_property
    def details(self) -> SessionDetails:
        """The session's ``info``, typed (:class:`SessionDetails`)."""
        return SessionDetails.from_json(self.info)

    @cached_property
    def protocol(self) -> Protocol:
        """The stored protocol as a :class:`~eegloop.protocol.Protocol`, read tolerantly
        (:func:`eegloop.protocol.stored_protocol`: a field this version cannot read keeps its default)."""
        return stored_protocol(self.protocol_yaml, tolerant=True)


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

