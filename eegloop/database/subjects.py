"""Subjects: pseudonymous codes, never names."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import DatabaseError, short_repr
from .engine import Repository
from .models import SessionRow, SubjectRow, utcnow
from .records import SubjectInfo

__all__ = ["Subjects", "SubjectConsent", "check_subject_code", "subject_row", "unknown_subject"]

_CODE = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")  # letters and digits: a valid BIDS label ("sub-<label>")


def check_subject_code(code: str) -> str:
    """``code`` if it is a valid subject code (1-64 ASCII letters and digits, a valid BIDS label), else
    :class:`DatabaseError` with a one-line message."""
    if not isinstance(code, str) or not _CODE.match(code):
        raise DatabaseError(
            f"subject code {short_repr(code, 70)}: use a pseudonymous code of 1-64 letters and digits only "
            "(A-Z, a-z, 0-9, e.g. S01 or P007: no spaces, '-', '_' or '.'; never the subject's name)"
        )
    return code


def unknown_subject(code: str) -> str:
    """The one-line message for a subject code the database lacks, naming the command to add it where
    ``subject add`` would take the code (:func:`check_subject_code`)."""
    return f"unknown subject {code!r}" + (f" (add it with: eegloop subject add {code})" if _CODE.match(code) else "")


def subject_row(s: Session, code: str) -> SubjectRow:
    """The row of subject ``code`` in unit of work ``s``; a one-line error naming the command to add it."""
    row = s.scalar(select(SubjectRow).where(SubjectRow.code == code))
    if row is None:
        raise DatabaseError(unknown_subject(code))
    return row


@dataclass(frozen=True)
class SubjectConsent:
    """Whether a subject agreed that their EEG enters group models, and when that last changed.

    Attributes
    ----------
    code : str
        The subject's code.
    group : bool
        Group consent: off (False) unless the subject said yes.
    changed_at : datetime | None
        When ``group`` was last set (None: never set, so off by default).
    """

    code: str
    group: bool
    changed_at: Optional[datetime]

    @property
    def word(self) -> str:
        """``yes`` or ``no`` (as the CLI takes and prints it)."""
        return "yes" if self.group else "no"


def _consent(row: SubjectRow) -> SubjectConsent:
    return SubjectConsent(row.code, bool(row.group_consent), row.group_consent_at)


class Subjects(Repository):
    """Adding, finding and listing subjects."""

    def add(self, code: str) -> SubjectInfo:
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

    def check_new(self, code: str) -> None:
        """Raise the one-line code error unless ``code`` is valid or already in the database (codes added
        before the letters-and-digits rule stay usable). Writes nothing."""
        try:
            check_subject_code(code)
        except DatabaseError as exc:
            try:
                self.get(code)
            except DatabaseError:
                raise exc from None

    def get_or_add(self, code: str) -> SubjectInfo:
        try:
            return self.get(code)
        except DatabaseError:
            return self.add(code)

    def get(self, code: str) -> SubjectInfo:
        with self.session() as s:
            row = subject_row(s, code)
            n = s.scalar(select(func.count(SessionRow.id)).where(SessionRow.subject_id == row.id))
            return SubjectInfo(row.id, row.code, row.created_at, n)

    def all(self) -> list[SubjectInfo]:
        with self.session() as s:
            q = (select(SubjectRow, func.count(SessionRow.id)).outerjoin(SessionRow)
                 .group_by(SubjectRow.id).order_by(SubjectRow.code))
            return [SubjectInfo(r.id, r.code, r.created_at, n) for r, n in s.execute(q)]

    # -- group consent ------------------------------------------------------------------------------
    def consent(self, code: str) -> SubjectConsent:
        """Subject ``code``'s group consent (one-line error for an unknown subject)."""
        with self.session() as s:
            return _consent(subject_row(s, code))

    def consents(self) -> list[SubjectConsent]:
        """Every subject's group consent, by code."""
        with self.session() as s:
            return [_consent(r) for r in s.scalars(select(SubjectRow).order_by(SubjectRow.code))]

    def set_consent(self, code: str, group: bool) -> tuple[SubjectConsent, SubjectConsent]:
        """Set subject ``code``'s group consent; returns (before, after). Setting the state it already has
        changes nothing (not even its time)."""
        with self.session() as s:
            row = subject_row(s, code)
            before = _consent(row)
            if before.group != bool(group):
                row.group_consent, row.group_consent_at = bool(group), utcnow()
                s.flush()
                s.refresh(row)  # the time as the database gives it back (SQLite: without its zone), as later reads
            return before, _consent(row)
