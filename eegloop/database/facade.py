"""The session database's one entry point: :class:`Database`, a facade over the repositories.

Other packages call :class:`Database` methods; they never write SQL. Each group
of methods delegates to the repository that owns it (:mod:`.subjects`,
:mod:`.sessions`, :mod:`.recording`, :mod:`.epochs`, :mod:`.trained_models`,
:mod:`.feedback`); opening, the schema, units of work and paths are
:class:`~.engine.Store`'s.

Examples
--------
>>> db = Database("sqlite:///eegloop-data/eegloop.db")  # doctest: +SKIP
>>> db.upgrade()  # doctest: +SKIP
>>> db.add_subject("S01")  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from ..types import BlockRecord, Epoch, EpochSet
from .engine import Store
from .epochs import Epochs
from .feedback import Feedback
from .models import BlockRow, EventRow, FeedbackTrialRow, RejectedEpochRow, RunRow, StimulusRow, TrialTimingRow
from .recording import Recording
from .records import ModelRecord, SessionInfo, SessionStatus, SubjectInfo
from .sessions import CLAIM_OWNER, Sessions
from .subjects import SubjectConsent, Subjects
from .trained_models import GroupMember, GroupModelRecord, TrainedModels

__all__ = ["Database"]


class Database(Store):
    """Repository over one eegloop database: an open :class:`~.engine.Store` (same parameters) whose
    methods delegate to the repositories by subject.

    Parameters
    ----------
    url, data_dir, upgrade, create, busy_timeout_s
        See :class:`~.engine.Store`.
    """

    def __init__(self, url: str | None = None, data_dir: str | Path | None = None, upgrade: bool = True,
                 create: bool = True, busy_timeout_s: float = 5.0):
        super().__init__(url, data_dir, upgrade=upgrade, create=create, busy_timeout_s=busy_timeout_s)
        self._subjects = Subjects(self)
        self._sessions = Sessions(self)
        self._recording = Recording(self)
        self._epochs = Epochs(self)
        self._models = TrainedModels(self)
        self._feedback = Feedback(self)

    # -- subjects: Subjects ----------------------------------------------------------------------
    def add_subject(self, code: str) -> SubjectInfo:
        return self._subjects.add(code)

    def check_new_subject(self, code: str) -> None:
        return self._subjects.check_new(code)

    def get_or_add_subject(self, code: str) -> SubjectInfo:
        return self._subjects.get_or_add(code)

    def get_subject(self, code: str) -> SubjectInfo:
        return self._subjects.get(code)

    def list_subjects(self) -> list[SubjectInfo]:
        return self._subjects.all()

    def subject_consent(self, code: str) -> SubjectConsent:
        """Whether subject ``code`` agreed that their EEG enters group models."""
        return self._subjects.consent(code)

    def subject_consents(self) -> list[SubjectConsent]:
        """Every subject's group consent, by code."""
        return self._subjects.consents()

    def set_subject_consent(self, code: str, group: bool) -> tuple[SubjectConsent, SubjectConsent]:
        """Set subject ``code``'s group consent; returns (before, after)."""
        return self._subjects.set_consent(code, group)

    # -- sessions and their claims: Sessions -----------------------------------------------------
    def create_session(self, subject: str, protocol, kind: str = "recorded", info: dict | None = None) -> int:
        return self._sessions.create(subject, protocol, kind, info)

    def set_session_status(self, session_id: int, status: SessionStatus | str, ended: bool = False,
                           **info: Any) -> None:
        return self._sessions.set_status(session_id, status, ended, **info)

    def update_session_info(self, session_id: int, **info: Any) -> None:
        return self._sessions.update_info(session_id, **info)

    def delete_session(self, session_id: int) -> None:
        return self._sessions.delete(session_id)

    def claim_session(self, session_id: int, owner: str = CLAIM_OWNER, ttl_s: float = 10.0) -> None:
        return self._sessions.claim(session_id, owner, ttl_s)

    def renew_claim(self, session_id: int, owner: str = CLAIM_OWNER) -> bool:
        return self._sessions.renew(session_id, owner)

    def release_claim(self, session_id: int, owner: str = CLAIM_OWNER) -> None:
        return self._sessions.release(session_id, owner)

    def get_session(self, session_id: int) -> SessionInfo:
        return self._sessions.get(session_id)

    def list_sessions(self, subject: str | None = None) -> list[SessionInfo]:
        return self._sessions.all(subject)

    # -- recordings: runs, blocks, markers, timings, stimuli, imports: Recording -----------------
    def add_run(self, session_id: int, index: int, raw_path: str | Path | None = None, **fields: Any) -> int:
        return self._recording.add_run(session_id, index, raw_path, **fields)

    def find_run(self, session_id: int, index: int) -> Optional[int]:
        return self._recording.find_run(session_id, index)

    def update_run(self, run_id: int, **fields: Any) -> None:
        return self._recording.update_run(run_id, **fields)

    def get_runs(self, session_id: int) -> list[RunRow]:
        return self._recording.get_runs(session_id)

    def add_block(self, run_id: int, index: int, classes: Sequence[str] = (), **fields: Any) -> int:
        return self._recording.add_block(run_id, index, classes, **fields)

    def store_block(self, session_id: int, run_id: int, record: BlockRecord,
                    owner: Optional[str] = None) -> tuple[int, str, Optional[str]]:
        return self._recording.store_block(session_id, run_id, record, owner)

    def finish_run(self, session_id: int, run_id: int, events: Sequence[tuple[dict, float]], status: str,
                   info: dict, owner: Optional[str] = None, **fields: Any) -> None:
        return self._recording.finish_run(session_id, run_id, events, status, info, owner, **fields)

    def get_rejected(self, session_id: int) -> list[RejectedEpochRow]:
        return self._recording.get_rejected(session_id)

    def rejected_by_reason(self, session_id: int) -> dict[str, int]:
        return self._recording.rejected_by_reason(session_id)

    def find_source_file(self, sha256: str) -> Optional[tuple[int, str]]:
        return self._recording.find_source_file(sha256)

    def source_files(self, session_id: int) -> list[tuple[str, str]]:
        return self._recording.source_files(session_id)

    def import_session(self, subject: str, protocol, runs: Sequence[tuple[int, dict, Sequence[BlockRecord]]],
                       files: Sequence[tuple[str, str, int]] = (), info: dict | None = None) -> int:
        return self._recording.import_session(subject, protocol, runs, files, info)

    def update_block(self, block_id: int, **fields: Any) -> None:
        return self._recording.update_block(block_id, **fields)

    def get_blocks(self, session_id: int) -> list[BlockRow]:
        return self._recording.get_blocks(session_id)

    def add_stimuli(self, stimuli) -> dict[str, int]:
        return self._recording.add_stimuli(stimuli)

    def get_stimuli(self) -> list[StimulusRow]:
        return self._recording.get_stimuli()

    def add_events(self, session_id: int, events: Sequence[dict]) -> list[int]:
        return self._recording.add_events(session_id, events)

    def get_events(self, session_id: int, kind: str | None = None) -> list[EventRow]:
        return self._recording.get_events(session_id, kind)

    def photon_delays(self, session_id: int) -> tuple[list[float], int]:
        return self._recording.photon_delays(session_id)

    def add_trial_timings(self, timings: Sequence[dict]) -> None:
        return self._recording.add_trial_timings(timings)

    def get_trial_timings(self, session_id: int) -> list[TrialTimingRow]:
        return self._recording.get_trial_timings(session_id)

    # -- epochs: Epochs --------------------------------------------------------------------------
    def add_epochs(self, session_id: int, epochs: Sequence[Epoch], block_id: int | None = None) -> list[int]:
        return self._epochs.add(session_id, epochs, block_id)

    def count_epochs(self, session_id: int) -> int:
        return self._epochs.count(session_id)

    def epoch_labels(self, session_ids: Sequence[int], below_block: int | None = None) -> set[str]:
        return self._epochs.labels(session_ids, below_block)

    def get_epochs(self, session_id: int, done_only: bool = False) -> list[Epoch]:
        return self._epochs.get(session_id, done_only)

    def load_epochs(self, subject: str, session_ids: Sequence[int] | None = None) -> EpochSet:
        return self._epochs.load(subject, session_ids)

    # -- trained models: TrainedModels -----------------------------------------------------------
    def add_model(self, subject: str, session_ids: Sequence[int], checkpoint_path: str | Path,
                  config: dict, metrics: dict, kind: str = "kd_stft") -> int:
        return self._models.add(subject, session_ids, checkpoint_path, config, metrics, kind)

    def latest_model(self, subject: str, encoder: bool = False) -> ModelRecord:
        return self._models.latest(subject, encoder)

    def get_model(self, model_id: int) -> ModelRecord:
        return self._models.get(model_id)

    def list_models(self, kind: str) -> list[ModelRecord]:
        """Every subject's trained models of ``kind`` (``group_adapted``: those that blend a group model)."""
        return self._models.of_kind(kind)

    def add_group_model(self, name: str, kind: str, checkpoint_path: str | Path, config: dict, metrics: dict,
                        members: Sequence[GroupMember]) -> int:
        """Register a group model trained on ``members``' epochs (refused unless each still has group consent)."""
        return self._models.add_group(name, kind, checkpoint_path, config, metrics, members)

    def get_group_model(self, name: str) -> GroupModelRecord:
        return self._models.group(name)

    def group_model_exists(self, name: str) -> bool:
        return self._models.group_exists(name)

    def list_group_models(self, subject: str | None = None) -> list[GroupModelRecord]:
        """Every group model; with ``subject``, those trained on that subject's epochs."""
        return self._models.groups(subject)

    def delete_group_model(self, model_id: int) -> None:
        """Delete a group model's rows (delete its files first)."""
        return self._models.delete_group(model_id)

    # -- feedback: Feedback ----------------------------------------------------------------------
    def add_feedback_trial(self, session_id: int, **fields: Any) -> int:
        return self._feedback.add_trial(session_id, **fields)

    def get_feedback_trials(self, session_id: int) -> list[FeedbackTrialRow]:
        return self._feedback.trials(session_id)
