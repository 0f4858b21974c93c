"""One small lifecycle for eegloop's background threads.

The amplifier, the recorder, the replay player, the database writer, the
session-claim heartbeat and the generator worker are all "a daemon thread
that loops until asked to stop, and whose failure must not pass silently".
:class:`Worker` is that, once: ``start()``, ``stop()``, ``alive``, and
``error`` holding whatever ended the loop (the owner decides what a failure
means; the visit stops on a recorder failure).
"""
from __future__ import annotations

import threading
from typing import Optional

from ._logging import logger

__all__ = ["Worker"]


class Worker:
    """A named daemon thread running :meth:`run` until :meth:`stop` (or its own end).

    Subclasses implement :meth:`run` and check :attr:`stopping` (or wait on
    :meth:`wait_stop`) in their loop. An exception leaving :meth:`run` is kept
    in :attr:`error` and logged once; it is never swallowed.
    """

    thread_name = "eegloop-worker"
    log_errors = True  # False: the owner reports the error itself (it reads :attr:`error`)

    def __init__(self) -> None:
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    def start(self) -> "Worker":
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} already started")
        t = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
        t.start()
        # set once it runs: an owner checking "started but no longer alive" (a failed loop) never sees the moment
        # between creating the thread and starting it as a thread that ended
        self._thread = t
        return self

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # kept for the owner; the thread ends
            self.error = exc
            if self.log_errors:
                logger.error("%s stopped: %s", self.thread_name, str(exc))  # str: a kept log record must not hold the traceback
        finally:
            self.on_exit()

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_exit(self) -> None:
        """Called in the thread after :meth:`run` returns or raises."""

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def wait_stop(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop was requested."""
        return self._stop_event.wait(seconds)

    def request_stop(self) -> None:
        self._stop_event.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait for it (at most ``timeout`` s)."""
        self._stop_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @classmethod
    def of(cls, target, name: str) -> "Worker":
        """A worker running ``target(worker)``: the target is handed its own worker.

        The worker exists, complete, before its thread starts, and the target gets it as its argument, so a
        loop that checks ``worker.stopping`` can never see an owner's attribute that is not assigned yet
        (``self._worker = Worker.of(...).start()`` assigns only after the thread runs).
        """
        w = cls()
        w.thread_name = name
        w.run = lambda: target(w)
        return w

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
