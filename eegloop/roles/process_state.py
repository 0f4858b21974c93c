"""What the operating system says about a child process: its scheduler state and the CPU time it has used (how
:class:`~eegloop.roles.child.Child` tells a hung child from a busy one)."""
from __future__ import annotations

import functools
import os
from typing import Optional

__all__ = ["process_state", "cpu_seconds"]


@functools.lru_cache(maxsize=64)
def _process(pid: int):
    """psutil's handle of process ``pid``, made once: making one reads /proc twice (its start time), which cost
    more than the reading it was made for."""
    import psutil

    return psutil.Process(pid)


def process_state(pid: Optional[int]) -> Optional[str]:
    """'running' (on a core or waiting for one), 'stopped' (SIGSTOP, a debugger) or another psutil status of
    process ``pid``; None where it cannot be read."""
    if pid is None:
        return None
    try:
        status = _process(pid).status()
    except Exception:
        _process.cache_clear()
        return None
    return "stopped" if status in ("stopped", "tracing-stop") else status


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU seconds of process ``pid`` (psutil, every platform; Linux: /proc without it), None where
    that cannot be read."""
    if pid is None:
        return None
    try:
        t = _process(pid).cpu_times()
        return t.user + t.system
    except ImportError:
        pass
    except Exception:
        _process.cache_clear()  # it ended: a later process with its number gets a handle of its own
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
