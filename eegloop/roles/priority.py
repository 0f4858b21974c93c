"""Scheduling for the presenter: real-time priority where the OS allows it, a core of its own where there are
cores to spare.

Measured on a 2-core machine (``../shared/TIMING.md``, BENCHMARKS.md): with a browser showing the console, a
25 s block drops ~100 frames when the presenter runs at normal priority, in its own process or not, and none
once the presenter *and its X server* run under ``SCHED_FIFO`` or on a core of their own. Under Xvfb the X
server does the drawing, so it gets the same treatment when it is an Xvfb this machine runs (a lab's real X
server is left alone).

Each function returns one line saying what was obtained or refused; the presenter logs it (and the visit prints
it), so a refused priority is never silent.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["raise_priority", "restore_priority", "x_server_pid", "spare_cores", "pin", "Scheduling",
           "FIFO_PRIORITY"]

FIFO_PRIORITY = 20  # SCHED_FIFO level (1-99): above every normal process, below the kernel's own threads


@dataclass
class Scheduling:
    """What a process obtained: ``policy`` (fifo, nice, high, normal), the cores it may run on, one line."""

    policy: str
    cores: Optional[list]
    line: str


def raise_priority(pid: int = 0, what: str = "presenter") -> Scheduling:
    """Ask for real-time priority for process ``pid`` (0: this one).

    Linux: ``SCHED_FIFO`` at :data:`FIFO_PRIORITY` (needs root, CAP_SYS_NICE or an rtprio limit), else
    ``nice -10``; Windows: the HIGH priority class (PsychoPy's ``core.rush``); macOS: ``core.rush``.
    """
    if sys.platform.startswith("linux") and hasattr(os, "sched_setscheduler"):
        try:
            for tid in _threads(pid):  # Linux schedules threads: every thread of another process, or this one
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
            return Scheduling("fifo", _cores(pid), f"{what}: real-time priority (SCHED_FIFO {FIFO_PRIORITY})")
        except (PermissionError, OSError) as exc:
            why = exc.strerror or str(exc)
        try:
            now = os.getpriority(os.PRIO_PROCESS, pid)
            if now > -10:
                for tid in _threads(pid):
                    os.setpriority(os.PRIO_PROCESS, tid, -10)
            return Scheduling("nice", _cores(pid), f"{what}: real-time priority refused ({why}); running at nice -10 "
                                                   "(grant CAP_SYS_NICE or an rtprio limit for SCHED_FIFO)")
        except (PermissionError, OSError):
            return Scheduling("normal", _cores(pid),
                              f"{what}: real-time priority refused ({why}) and so was nice -10: normal priority; "
                              "frames may drop under load (grant CAP_SYS_NICE or an rtprio limit, "
                              "e.g. in /etc/security/limits.conf)")
    if pid not in (0, os.getpid()):
        return Scheduling("normal", None, f"{what}: priority left as it is on {sys.platform}")
    try:
        from psychopy import core

        core.rush(True)  # Windows: HIGH_PRIORITY_CLASS; macOS: the time-constraint policy
        return Scheduling("high", None, f"{what}: high priority (PsychoPy core.rush)")
    except Exception as exc:  # noqa: BLE001 - any refusal is reported, never fatal
        return Scheduling("normal", None, f"{what}: high priority refused ({exc}); normal priority")


def restore_priority(pid: int) -> None:
    """Back to the normal policy and every core (an X server eegloop raised, when the visit ends); never raises."""
    if sys.platform.startswith("linux") and hasattr(os, "sched_setscheduler"):
        for tid in _threads(pid):
            try:
                if os.sched_getscheduler(tid) == os.SCHED_FIFO:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
        try:
            os.sched_setaffinity(pid, range(os.cpu_count() or 1))
        except (AttributeError, OSError, ValueError):
            pass


def _threads(pid: int) -> list:
    """The thread ids of process ``pid`` (0: this one): Linux schedules threads, so every thread running now gets
    the policy (a helper thread holding the GIL at normal priority would make the real-time one wait), and the
    threads started later inherit it from the one that starts them."""
    pid = pid or os.getpid()
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [0] if pid == os.getpid() else [pid]


def x_server_pid(display: Optional[str] = None) -> Optional[int]:
    """The pid of the Xvfb serving ``display`` (``$DISPLAY``), from its lock file; None for any other X server
    (a lab's real display is not eegloop's to re-prioritise) or where it cannot be told."""
    display = display or os.environ.get("DISPLAY", "")
    if not display.startswith(":"):
        return None
    from ..paradigm import display as started

    if started._xvfb is not None and started._xvfb.poll() is None and started._xvfb_display == display:
        return started._xvfb.pid  # the Xvfb this process started (-displayfd makes no lock file)
    num = display[1:].split(".")[0]
    try:
        pid = int(Path(f"/tmp/.X{int(num)}-lock").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "Xvfb" else None


def _cores(pid: int = 0) -> Optional[list]:
    try:
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return None


def spare_cores() -> Optional[tuple[list, list]]:
    """``(presenter's cores, everyone else's)`` when this process may use at least 3 cores: the last core for the
    presenter and its X server, the others for the rest of the visit; None with fewer (on 2 cores, giving one
    away would halve the quick-train's; real-time priority alone keeps the frames there)."""
    cores = _cores(0)
    if cores is None or len(cores) < 3:
        return None
    return [cores[-1]], cores[:-1]


def pin(pid: int, cores: list) -> bool:
    """Restrict process ``pid`` (0: this one) to ``cores``; False where not possible."""
    try:
        os.sched_setaffinity(pid, cores)
        return True
    except (AttributeError, OSError):
        return False
