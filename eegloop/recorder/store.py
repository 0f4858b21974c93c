"""The store: the one thread that writes a recording to the database, a block per transaction.

The recorder never waits on the database: finished blocks
(:class:`~eegloop.types.BlockRecord`) and small updates (run rows, loose
markers) are queued here and written in order by one thread. A block is one
transaction (:meth:`eegloop.database.Database.store_block`, the same function
the importers use), so a block is either stored whole or not at all.

A database that is busy (another program holds SQLite's write lock) is retried
for up to ``retry_s`` seconds while the recording goes on: the block is still in
memory. Any other failure, or a lock that outlasts ``retry_s``, is kept in
:attr:`BlockStore.error`; the recorder reports it and the visit stops.
"""
from __future__ import annotations

import queue
import time
from typing import Callable, Optional

from .._logging import logger
from .._worker import Worker
from ..types import BlockRecord

__all__ = ["BlockStore", "is_busy_error"]


def is_busy_error(exc: BaseException) -> bool:
    """True for "try again" database errors: SQLite busy/locked, PostgreSQL serialization/deadlock."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError):
        return False
    text = str(getattr(exc, "orig", exc)).lower()
    return any(w in text for w in ("database is locked", "database table is locked", "busy", "deadlock",
                                   "could not serialize"))


class BlockStore(Worker):
    """Write blocks and updates to ``db`` in submission order, from one thread.

    Parameters
    ----------
    db : Database
    retry_s : float
        How long a busy database is retried before the write counts as failed.
    """

    thread_name = "eegloop-db-writer"

    def __init__(self, db, retry_s: float = 60.0, owner: Optional[str] = None):
        super().__init__()
        self.db = db
        self.retry_s = retry_s
        self.owner = owner  # the session claim's owner: every block write is fenced by it
        self._q: "queue.Queue[Optional[Callable[[], object]]]" = queue.Queue()
        self.stored: list[tuple[int, int, str, Optional[str]]] = []  # (block index, id, status, reason)
        self.start()

    def submit(self, fn: Callable[[], object], what: str = "update") -> None:
        self._q.put((fn, what))

    def submit_block(self, session_id: int, run_id: int, record: BlockRecord) -> None:
        def write():
            bid, status, reason = self.db.store_block(session_id, run_id, record, owner=self.owner)
            self.stored.append((record.block, bid, status, reason))
            logger.info("block %d: %s, %d epochs stored, %d rejected%s", record.block, status, len(record.epochs),
                        len(record.rejected), f" ({reason})" if reason else "")
        self.submit(write, f"block {record.block}")

    def run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                if self.error is not None:
                    continue  # after a failure nothing more is written: the visit is stopping
                fn, what = item
                self._write(fn, what)
            finally:
                self._q.task_done()

    def _write(self, fn, what: str) -> None:
        t0 = time.monotonic()
        delay = 0.05
        while True:
            try:
                fn()
                return
            except Exception as exc:
                waited = time.monotonic() - t0
                if is_busy_error(exc) and waited < self.retry_s:
                    if delay == 0.05:
                        logger.warning("database busy while writing %s; retrying for up to %.0f s", what, self.retry_s)
                    time.sleep(delay)
                    delay = min(1.0, delay * 2)
                    continue
                from ..errors import DatabaseError

                reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
                self.error = DatabaseError(f"cannot write {what} to the database ({reason})"
                                           + (f" after retrying for {waited:.0f} s" if is_busy_error(exc) else ""))
                logger.error("%s", self.error)
                return

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted is written (or failed)."""
        if timeout is None:
            self._q.join()
            return
        end = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)

    @property
    def pending(self) -> int:
        """Writes submitted and not yet done."""
        return self._q.unfinished_tasks

    def close(self, timeout: float = 30.0) -> None:
        self._q.put(None)
        self.join(timeout)
