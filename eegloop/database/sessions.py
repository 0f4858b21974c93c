"""Sessions (one visit's or one import's data) and their claims: one visit, one owner.

A process recording into a session holds its claim (``claim_owner``, renewed by
:class:`~eegloop.database.claim.SessionClaim`); writes of a block are fenced by
it, so a process that lost the session can never overwrite the blocks of the
process that took it over.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from .._version import __version__
from ..errors import DatabaseError
from .engine import Repository
from .models import SessionRow, SubjectRow
from .records import SessionInfo, SessionStatus, status_text, info_json
from .subjects import subject_row

__all__ = ["Sessions", "SessionClaimedError", "CLAIM_OWNER", "touch_claim", "fence"]


class SessionClaimedError(DatabaseError):
    """Another process is recording this session (its claim is fresh)."""


# who this process is, in session claims: host, pid and a random part (pids are reused)
CLAIM_OWNER = f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def touch_claim(s: Session, session_id: int, owner: str) -> bool:
    """Renew ``owner``'s claim inside transaction ``s``; False if ``owner`` does not hold it."""
    res = s.execute(update(SessionRow).where(SessionRow.id == session_id, SessionRow.claim_owner == owner)
                    .values(claim_heartbeat=time.time()))
    return res.rowcount == 1


def fence(s: Session, session_id: int, owner: str) -> None:
    """Refuse (:class:`SessionClaimedError`) a write in ``s`` unless ``owner`` still holds the session's claim."""
    if not touch_claim(s, session_id, owner):
        raise SessionClaimedError(f"session {session_id}: this process no longer holds its claim (another "
                                  "process took the session over); nothing more is written")


def session_info(row: SessionRow, code: str) -> SessionInfo:
    """The record of a session row (of subject ``code``)."""
    return SessionInfo(row.id, code, row.kind, row.protocol_name, row.protocol_yaml, row.protocol_sha256,
                       row.status, row.started_at, row.ended_at, row.software_version, dict(row.info or {}))


class Sessions(Repository):
    """Creating, updating, finding and claiming sessions."""

    def create(self, subject: str, protocol, kind: str = "recorded", info: dict | None = None) -> int:
        """Start a session for ``subject`` with the complete protocol stored as YAML."""
        with self.session() as s:
            subj = subject_row(s, subject)
            row = SessionRow(subject_id=subj.id, kind=kind, protocol_name=protocol.name,
                             protocol_yaml=protocol.to_yaml(), protocol_sha256=protocol.sha256,
                             status=SessionStatus.CREATED.value, software_version=__version__,
                             info=info_json(dict(info or {})))
            s.add(row)
            s.flush()
            return row.id

    def set_status(self, session_id: int, status: SessionStatus | str, ended: bool = False, **info: Any) -> None:
        """Set the session's status (a :class:`SessionStatus`), with ``ended`` its end time, and merge
        ``info`` (JSON values, or typed records such as :class:`RecordingSummary`) into its info."""
        with self.session() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise DatabaseError(f"unknown session {session_id}")
            row.status = status_text(status)
            if ended:
                row.ended_at = datetime.now().astimezone()
            if info:
                row.info = {**(row.info or {}), **info_json(info)}

    def update_info(self, session_id: int, **info: Any) -> None:
        """Merge ``info`` into the session's info (its status unchanged)."""
        with self.session() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise DatabaseError(f"unknown session {session_id}")
            row.info = {**(row.info or {}), **info_json(info)}

    def delete(self, session_id: int) -> None:
        """Remove a session and everything recorded in it (runs, blocks, events, epochs, feedback)."""
        with self.session() as s:
            s.execute(delete(SessionRow).where(SessionRow.id == session_id))

    # -- claims: one visit, one owner ----------------------------------------------------
    def claim(self, session_id: int, owner: str = CLAIM_OWNER, ttl_s: float = 10.0) -> None:
        """Claim ``session_id`` for ``owner``; raise :class:`SessionClaimedError` if another owner holds a
        claim renewed less than ``ttl_s`` ago (a crashed owner's claim expires). One atomic UPDATE, so two
        processes racing for the same session cannot both win."""
        for attempt in (1, 2):  # a holder releasing between our UPDATE and our look is not a refusal
            now = time.time()
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

    def renew(self, session_id: int, owner: str = CLAIM_OWNER) -> bool:
        with self.session() as s:
            return touch_claim(s, session_id, owner)

    def release(self, session_id: int, owner: str = CLAIM_OWNER) -> None:
        with self.session() as s:
            s.execute(update(SessionRow).where(SessionRow.id == session_id, SessionRow.claim_owner == owner)
                      .values(claim_owner=None, claim_heartbeat=None))

    def get(self, session_id: int) -> SessionInfo:
        with self.session() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise DatabaseError(f"unknown session {session_id}")
            return session_info(row, row.subject.code)

    def all(self, subject: str | None = None) -> list[SessionInfo]:
        with self.session() as s:
            q = select(SessionRow, SubjectRow.code).join(SubjectRow).order_by(SessionRow.id)
            if subject is not None:
                subject_row(s, subject)
                q = q.where(SubjectRow.code == subject)
            return [session_info(r, code) for r, code in s.execute(q)]
