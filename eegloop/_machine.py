"""What this machine is, for settings measured on it and timings reported beside it."""
from __future__ import annotations

import functools
import os
import platform
import time
from typing import Optional

__all__ = ["cpu_model", "cpu_flags", "StealMeter"]


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo; the platform's processor string elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set:
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _steal_seconds() -> Optional[float]:
    """CPU seconds the hypervisor gave to other guests while this virtual machine wanted them ("steal", the 8th
    field of /proc/stat's ``cpu`` line, all cores summed); None where there is no such count (not Linux)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class StealMeter:
    """The share of this machine's CPU its host took (steal time) between calls of :meth:`lap`.

    On a virtual machine, frames drop whenever the hypervisor runs other guests on its cores, whatever the
    priority inside; measured on the 2-core cloud machines this is built on, the demo dropped frames exactly in
    the seconds where steal rose from ~1 % to 18-44 %, with eegloop using ~25 % of the CPU. A visit records the
    worst block so that a report's dropped frames can be told from its own load.
    """

    def __init__(self):
        self._last = (_steal_seconds(), time.monotonic())
        self.max_pct: Optional[float] = None

    def lap(self) -> Optional[float]:
        """Percent of all cores stolen since the previous lap (or the start); None where not measurable."""
        steal, now = _steal_seconds(), time.monotonic()
        (s0, t0), self._last = self._last, (steal, now)
        if steal is None or s0 is None or now - t0 <= 0:
            return None
        pct = 100.0 * (steal - s0) / ((now - t0) * (os.cpu_count() or 1))
        self.max_pct = pct if self.max_pct is None else max(self.max_pct, pct)
        return pct
