"""Feedback trials: what was decoded and shown, with its latencies."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from .engine import Repository
from .models import FeedbackTrialRow

__all__ = ["Feedback"]


class Feedback(Repository):
    """Storing and reading a session's feedback trials."""

    def add_trial(self, session_id: int, **fields: Any) -> int:
        with self.session() as s:
            row = FeedbackTrialRow(session_id=session_id, **fields)
            s.add(row)
            s.flush()
            return row.id

    def trials(self, session_id: int) -> list[FeedbackTrialRow]:
        with self.session() as s:
            q = select(FeedbackTrialRow).where(FeedbackTrialRow.session_id == session_id)
            return list(s.scalars(q.order_by(FeedbackTrialRow.trial)))
