"""The parent's view of a child process: a hung child is told from a parent too busy to read its heartbeats."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from eegloop.roles.child import HANG_S, Child

pytestmark = pytest.mark.realtime  # seconds without a heartbeat: run alone, after the others


class _Gated:
    """The child's pipe as the parent's reading thread sees it, with a gate: while it is closed the thread gets
    no message, as when the orchestrator is too busy (a long call holding the GIL, a loaded machine) to let it
    run. Everything else goes to the real pipe."""

    def __init__(self, conn, gate: threading.Event):
        self._conn, self._gate = conn, gate

    def recv(self):
        self._gate.wait()
        return self._conn.recv()

    def __getattr__(self, name):
        return getattr(self._conn, name)


class _SlowReader(Child):
    gate: threading.Event

    def _read(self) -> None:
        self._conn = _Gated(self._conn, self.gate)
        super()._read()


def test_a_parent_too_busy_to_read_does_not_call_its_child_hung():
    """Heartbeats waiting unread in the pipe are a slow parent, not a silent child; a child stopped for real
    (SIGSTOP) is still caught after HANG_S."""
    c = _SlowReader("quiet", "eegloop.roles.child:Role", {}, on_event=lambda child, ev: None)  # heartbeats only
    c.gate = threading.Event()
    c.gate.set()
    c.spawn()
    try:
        c.wait_ready(60)
        c.gate.clear()  # the reading thread has no turn from now on (it may still take one message)
        time.sleep(HANG_S + 1.5)
        now = time.monotonic()
        assert now - c.last_beat > HANG_S  # by the reader's clock the child is silent
        assert c.check(now) is None  # ... but its heartbeats wait in the pipe
        c.gate.set()
        deadline = time.monotonic() + 10
        while time.monotonic() - c.last_beat > 0.5:  # the reader catches up
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(c.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            reason = None
            while reason is None and time.monotonic() < deadline:
                time.sleep(0.05)
                reason = c.check(time.monotonic())
            assert reason is not None and "stopped responding" in reason
        finally:
            os.kill(c.pid, signal.SIGCONT)
    finally:
        c.kill()
