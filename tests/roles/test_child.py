"""The parent's view of a child process: a hung child is told from a parent too busy to read its heartbeats."""
from __future__ import annotations

import os
import signal
import time

import pytest

from eegloop.roles.child import HANG_S, Child

pytestmark = pytest.mark.realtime  # seconds without a heartbeat: run alone, after the others


def _quiet_child() -> Child:
    """A child that only sends its heartbeats (the base role: no command, no work)."""
    c = Child("quiet", "eegloop.roles.child:Role", {}, on_event=lambda child, ev: None).spawn()
    c.wait_ready(60)
    return c


def _hold_the_gil(seconds: float) -> None:
    """Keep every other thread of this process off the interpreter (one C call that never lets go of the GIL),
    as a long call in the orchestrator can: the pipe's reader does not run meanwhile."""
    import re

    n, took = 16, 0.0
    while took < 0.05:  # catastrophic backtracking: each more letter doubles the time of one C call
        n += 1
        t0 = time.perf_counter()
        re.match(r"(a+)+$", "a" * n + "b")
        took = time.perf_counter() - t0
    while took < seconds:
        n, took = n + 1, took * 2
    re.match(r"(a+)+$", "a" * n + "b")


def test_a_parent_too_busy_to_read_does_not_call_its_child_hung():
    """Heartbeats waiting unread in the pipe are a slow parent, not a silent child; a child stopped for real
    (SIGSTOP) is still caught after HANG_S."""
    c = _quiet_child()
    try:
        _hold_the_gil(HANG_S + 1.5)
        now = time.monotonic()
        assert now - c.last_beat > HANG_S  # the reader had no turn: by its clock the child is silent
        assert c.check(now) is None  # ... but its heartbeats wait in the pipe
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
