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
from .sessions import SessionClaimedError

__all__ = ["SessionClaim", "CLAIM_TTL_S"]


def _ttl_from_env() -> float:
    """Seconds after its last heartbeat that a claim expires: 15, or $EEGLOOP_CLAIM_TTL_S (1..3600)."""
    text = os.environ.get("EEGLOOP_CLAIM_TTL_S", "15")
    try:
        ttl = float(text)
    except ValueError:
        ttl = float("nan")
    if not 1.0 <= ttl <= 3600.0:  # also refuses nan/inf
        logger.warning("EEGLOOP_CLAIM_TTL_S=%.20s is not a number of seconds in 1..3600; using 15", text)
        return 15.0
    return ttl


CLAIM_TTL_S = _ttl_from_env()


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
        n, owner = SessionClaim._held.get(self._key, (0, self))
        if n == 0:
            self.db.claim_session(self.session_id, ttl_s=self.ttl_s)
            self.start()
        SessionClaim._held[self._key] = (n + 1, owner)  # the first instance holds the heartbeat thread
        return self

    def run(self) -> None:
        while not self.wait_stop(self.ttl_s / 4):
            try:
                if not self.db.renew_claim(self.session_id):
                    # another process took the session over (our heartbeat could not reach the database for
                    # longer than the claim lives): this process must stop writing to it
                    raise SessionClaimedError(f"session {self.session_id}: this process lost its claim on the "
                                              "session to another process; it stops recording into it")
            except SessionClaimedError:
                raise
            except Exception as exc:  # a busy database: try again at the next beat
                logger.warning("renewing the claim on session %d: %s", self.session_id, exc)

    @classmethod
    def lost(cls, db, session_id: int):
        """The error of this process's claim on ``session_id`` if its heartbeat found it taken, else None."""
        holder = cls._held.get((db.url, session_id))
        return holder[1].error if holder else None

    def __exit__(self, *exc) -> None:
        n, owner = SessionClaim._held.get(self._key, (1, self))
        if n > 1:
            SessionClaim._held[self._key] = (n - 1, owner)
            return
        SessionClaim._held.pop(self._key, None)
        owner.stop(2)
        try:
            self.db.release_claim(self.session_id)
        except Exception as e:  # it expires by itself
            logger.warning("releasing the claim on session %d: %s", self.session_id, e)
