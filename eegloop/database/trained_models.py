"""Trained models: classifiers and EEG encoders, by subject; checkpoints stored relative to the data folder."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sqlalchemy import select

from ..errors import DatabaseError
from .engine import Repository
from .models import ModelRow, SubjectRow
from .records import ModelRecord
from .subjects import subject_row

__all__ = ["TrainedModels"]


def _model_record(row: ModelRow, code: str) -> ModelRecord:
    return ModelRecord(row.id, code, list(row.session_ids), row.kind, row.checkpoint_path,
                       dict(row.config), dict(row.metrics), row.created_at)


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

    def get(self, model_id: int) -> ModelRecord:
        with self.session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise DatabaseError(f"unknown model {model_id}")
            code = s.get(SubjectRow, row.subject_id).code
            return _model_record(row, code)
