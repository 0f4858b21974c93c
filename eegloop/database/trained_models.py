"""Trained models: classifiers and EEG encoders, by subject (``models``), and group models trained on several
subjects' epochs (``group_models``, with the record of whose data each holds); checkpoints stored relative to the
data folder."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

from sqlalchemy import select

from ..errors import DatabaseError
from .engine import Repository
from .models import GroupModelRow, GroupModelSubjectRow, ModelRow, SubjectRow
from .records import ModelRecord
from .subjects import subject_row

__all__ = ["TrainedModels", "GroupMember", "GroupModelRecord"]


def _model_record(row: ModelRow, code: str) -> ModelRecord:
    return ModelRecord(row.id, code, list(row.session_ids), row.kind, row.checkpoint_path,
                       dict(row.config), dict(row.metrics), row.created_at)


@dataclass(frozen=True)
class GroupMember:
    """One subject whose epochs a group model was trained on.

    Attributes
    ----------
    code : str
        The subject's code.
    session_ids : list of int
        The sessions the epochs came from.
    n_epochs : int
        How many of the subject's epochs the model was trained on.
    consent_at : datetime | None
        When the subject's group consent (in force at training time) was given.
    """

    code: str
    session_ids: list
    n_epochs: int
    consent_at: Optional[datetime] = None


@dataclass(frozen=True)
class GroupModelRecord:
    """A stored group model: its name, method (``kind``), file, provenance (``config``), metrics and members."""

    id: int
    name: str
    kind: str
    checkpoint_path: str
    config: dict
    metrics: dict
    created_at: datetime
    members: list  # [GroupMember], by subject code

    @property
    def subjects(self) -> list[str]:
        return [m.code for m in self.members]

    @property
    def session_ids(self) -> list[int]:
        return [i for m in self.members for i in m.session_ids]


def _group_record(s, row: GroupModelRow) -> GroupModelRecord:
    q = (select(GroupModelSubjectRow, SubjectRow.code)
         .join(SubjectRow, SubjectRow.id == GroupModelSubjectRow.subject_id)
         .where(GroupModelSubjectRow.model_id == row.id).order_by(SubjectRow.code))
    members = [GroupMember(code, list(m.session_ids), int(m.n_epochs), m.consent_at) for m, code in s.execute(q)]
    return GroupModelRecord(row.id, row.name, row.kind, row.checkpoint_path, dict(row.config), dict(row.metrics),
                            row.created_at, members)


class TrainedModels(Repository):
    """Adding and finding trained models."""

    def add(self, subject: str, session_ids: Sequence[int], checkpoint_path: str | Path,
            config: dict, metrics: dict, kind: str = "kd_stft") -> int:
        with self.session() as s:
            subj = subject_row(s, subject)
            row = ModelRow(subject_id=subj.id, session_ids=list(session_ids), kind=kind,
                           checkpoint_path=self.store.relpath(checkpoint_path), config=config, metrics=metrics)
            s.add(row)
            s.flush()
            return row.id

    def latest(self, subject: str, encoder: bool = False) -> ModelRecord:
        """The subject's latest classifier, or with ``encoder`` its latest EEG -> embedding encoder."""
        with self.session() as s:
            subj = subject_row(s, subject)
            q = select(ModelRow).where(ModelRow.subject_id == subj.id)
            q = q.where(ModelRow.kind == "eeg_encoder") if encoder else q.where(ModelRow.kind != "eeg_encoder")
            row = s.scalar(q.order_by(ModelRow.id.desc()).limit(1))
            if row is None:
                if encoder:
                    raise DatabaseError(f"subject {subject!r} has no trained EEG encoder (run: eegloop train "
                                        f"--subject {subject} --encoder)")
                raise DatabaseError(f"subject {subject!r} has no trained model (run: eegloop train --subject {subject})")
            return _model_record(row, subject)

    def of_kind(self, kind: str) -> list[ModelRecord]:
        """Every subject's models of ``kind`` (e.g. ``group_adapted``), oldest first."""
        with self.session() as s:
            rows = s.execute(select(ModelRow, SubjectRow.code).join(SubjectRow, SubjectRow.id == ModelRow.subject_id)
                             .where(ModelRow.kind == kind).order_by(ModelRow.id)).all()
            return [_model_record(row, code) for row, code in rows]

    def get(self, model_id: int) -> ModelRecord:
        with self.session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise DatabaseError(f"unknown model {model_id}")
            code = s.get(SubjectRow, row.subject_id).code
            return _model_record(row, code)

    # -- group models ---------------------------------------------------------------------------
    def add_group(self, name: str, kind: str, checkpoint_path: str | Path, config: dict, metrics: dict,
                  members: Sequence[GroupMember]) -> int:
        """Register a group model trained on ``members``' epochs, in one transaction: refused (nothing written)
        when the name is taken or a member no longer has group consent (it may have been withdrawn while the
        model trained)."""
        with self.session() as s:
            if s.scalar(select(GroupModelRow.id).where(GroupModelRow.name == name)) is not None:
                raise DatabaseError(f"--name: a group model named {name!r} already exists")
            rows = [subject_row(s, m.code) for m in members]
            refused = [r.code for r in rows if not r.group_consent]
            if refused:
                raise DatabaseError(f"no group consent from {', '.join(refused)} (withdrawn while the model "
                                    "trained?): the group model is not stored")
            row = GroupModelRow(name=name, session_ids=[i for m in members for i in m.session_ids], kind=kind,
                                checkpoint_path=self.store.relpath(checkpoint_path), config=config, metrics=metrics)
            s.add(row)
            s.flush()
            for subj, m in zip(rows, members):
                s.add(GroupModelSubjectRow(model_id=row.id, subject_id=subj.id, session_ids=list(m.session_ids),
                                      n_epochs=int(m.n_epochs), consent_at=subj.group_consent_at))
            return row.id

    def group(self, name: str) -> GroupModelRecord:
        """The group model named ``name``; a one-line error naming the listing command otherwise."""
        with self.session() as s:
            row = s.scalar(select(GroupModelRow).where(GroupModelRow.name == name))
            if row is None:
                raise DatabaseError(f"unknown group model {name!r} (list them with: eegloop pretrain --list)")
            return _group_record(s, row)

    def group_exists(self, name: str) -> bool:
        with self.session() as s:
            return s.scalar(select(GroupModelRow.id).where(GroupModelRow.name == name)) is not None

    def groups(self, subject: str | None = None) -> list[GroupModelRecord]:
        """Every group model, oldest first; with ``subject``, those trained on that subject's epochs (one-line
        error for an unknown subject)."""
        with self.session() as s:
            q = select(GroupModelRow)
            if subject is not None:
                subj = subject_row(s, subject)
                q = q.join(GroupModelSubjectRow, GroupModelSubjectRow.model_id == GroupModelRow.id).where(
                    GroupModelSubjectRow.subject_id == subj.id)
            return [_group_record(s, r) for r in s.scalars(q.order_by(GroupModelRow.id))]

    def delete_group(self, model_id: int) -> None:
        """Delete a group model's rows (its subjects' with it, by the cascade). The caller deletes the model's
        files first, so that no file holding a subject's data outlives the record of whose data it holds."""
        with self.session() as s:
            row = s.get(GroupModelRow, model_id)
            if row is None:
                raise DatabaseError(f"unknown group model {model_id}")
            s.delete(row)
            s.flush()
