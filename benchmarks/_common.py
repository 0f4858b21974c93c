"""Shared by the benchmark scripts."""
from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU's model name (every timing is reported beside it)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
