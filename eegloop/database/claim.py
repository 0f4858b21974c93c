"""One visit, one owner: a session's claim, held in the database with a heartbeat.

A process that records into a session claims it first
(:meth:`~eegloop.database.Database.claim_session`, one atomic UPDATE) and
renews the claim every ``ttl_s / 4`` from a background thread. A second
process asking for the same session is refused with one line; the claim of
a process that crashed (SIGKILL, power) expires ``ttl_s`` after its last beat.
"""
from __future__ import annotations

import os

from .._logging import logger
from .._worker import Worker

__all__ = ["SessionClaim", "CLAIM_TTL_S"]

# seconds after its last heartbeat that a claim expires; $EEGLOOP_CLAIM_TTL_S overrides (tests use 3)
CLAIM_TTL_S = float(os.environ.get("EEGLOOP_CLAIM_TTL_S", "10"))


class SessionClaim(Worker):
    """Hold a session's claim in the database while a process records it, renewing it (heartbeat).

    A second process asking for the same session gets one line
    (:class:`~eegloop.database.SessionClaimedError`); a crashed holder's claim
    expires after ``ttl_s``. Nested claims of one process on one session share it.
    """

    thread_name = "eegloop-claim-heartbeat"
    _held: dict = {}  # (db url, session id) -> count, in this process

    def __init__(self, db, session_id: int, ttl_s: float | None = None):
        super().__init__()
        self.db, self.session_id, self.ttl_s = db, session_id, ttl_s or CLAIM_TTL_S
        self._key = (db.url, session_id)

    def __enter__(self) -> "SessionClaim":
        n = SessionClaim._held.get(self._key, 0)
        if n == 0:
            self.db.claim_session(self.session_id, ttl_s=self.ttl_s)
            self.start()
        SessionClaim._held[self._key] = n + 1
        return self

    def run(self) -> None:
        while not self.wait_stop(self.ttl_s / 4):
            try:
                if not self.db.renew_claim(self.session_id):
                    logger.warning("the claim on session %d was lost", self.session_id)
            except Exception as exc:  # a busy database: try again at the next beat
                logger.warning("renewing the claim on session %d: %s", self.session_id, exc)

    def __exit__(self, *exc) -> None:
        n = SessionClaim._held.get(self._key, 1) - 1
        if n > 0:
            SessionClaim._held[self._key] = n
            return
        SessionClaim._held.pop(self._key, None)
        self.stop(2)
        try:
            self.db.release_claim(self.session_id)
        except Exception as e:  # it expires by itself
            logger.warning("releasing the claim on session %d: %s", self.session_id, e)
