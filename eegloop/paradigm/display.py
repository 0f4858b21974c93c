"""Make sure there is an X display for PsychoPy.

On a lab PC there is one. On a headless machine (CI, a server, the demo on a
laptop over SSH) :func:`ensure_display` starts Xvfb on a free display number
and sets ``DISPLAY``, or says clearly what to install.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from .._logging import logger
from ..errors import EegloopError

__all__ = ["ensure_display"]

_xvfb: subprocess.Popen | None = None


def _die_with_us() -> None:
    """In the Xvfb child, before it starts (Linux): the kernel ends it when eegloop ends, even by SIGKILL."""
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass


def ensure_display(size: tuple[int, int] = (1280, 1024)) -> str:
    """Return a usable ``DISPLAY``, starting Xvfb if there is none.

    Raises
    ------
    EegloopError
        No display and no Xvfb: one line saying what to install.
    """
    global _xvfb
    disp = os.environ.get("DISPLAY")
    if disp:
        return disp
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise EegloopError("no display (DISPLAY is not set) and Xvfb is not installed: run on a machine with a "
                           "screen, or install Xvfb (Debian/Ubuntu: apt-get install xvfb)")
    for n in range(99, 199):
        if Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
            continue
        proc = subprocess.Popen([xvfb, f":{n}", "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                # the kernel's signal follows the starting thread: the main thread lives as long as we do
                                preexec_fn=_die_with_us if threading.current_thread() is threading.main_thread() else None)
        for _ in range(100):
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if proc.poll() is None and Path(f"/tmp/.X11-unix/X{n}").exists():
            _xvfb = proc
            atexit.register(proc.terminate)
            os.environ["DISPLAY"] = f":{n}"
            logger.info("no display: started Xvfb on :%d (no vertical sync there; flips are paced in software)", n)
            return os.environ["DISPLAY"]
    raise EegloopError("no display and Xvfb could not be started (tried displays :99 to :198)")
