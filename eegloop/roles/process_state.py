"""What the operating system says about a child process: its scheduler state and the CPU time it has used (how
:class:`~eegloop.roles.child.Child` tells a hung child from a busy one)."""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["process_state", "cpu_seconds"]


def process_state(pid: Optional[int]) -> Optional[str]:
    """'running' (on a core or waiting for one), 'stopped' (SIGSTOP, a debugger) or another psutil status of
    process ``pid``; None where it cannot be read."""
    if pid is None:
        return None
    try:
        import psutil

        status = psutil.Process(pid).status()
    except Exception:
        return None
    return "stopped" if status in ("stopped", "tracing-stop") else status


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU seconds of process ``pid`` (psutil, every platform; Linux: /proc without it), None where
    that cannot be read."""
    if pid is None:
        return None
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except ImportError:
        pass
    except Exception:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
