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

from .._logging import logger
from ..errors import EegloopError

__all__ = ["ensure_display"]

_xvfb: subprocess.Popen | None = None
_xvfb_display: str | None = None  # the display it serves


def _parent_death_call():
    """In the Xvfb child, before it starts (Linux): the kernel ends it when eegloop ends, even by SIGKILL. Resolved
    here, in the parent: between fork and exec the child may not import or take a lock."""
    import sys

    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None  # the kernel's signal follows the starting thread: only the main thread lives as long as we do
    try:
        import ctypes
        import signal

        prctl, sig = ctypes.CDLL(None).prctl, int(signal.SIGTERM)
    except Exception:
        return None

    def call() -> None:
        prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG

    return call


def ensure_display(size: tuple[int, int] = (1280, 1024)) -> str:
    """Return a usable ``DISPLAY``, starting Xvfb if there is none.

    Raises
    ------
    EegloopError
        No display and no Xvfb: one line saying what to install.
    """
    global _xvfb, _xvfb_display
    disp = os.environ.get("DISPLAY")
    if disp:
        return disp
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise EegloopError("no display (DISPLAY is not set) and Xvfb is not installed: run on a machine with a "
                           "screen, or install Xvfb (Debian/Ubuntu: apt-get install xvfb)")
    # Xvfb picks a free display itself and says which (-displayfd): two programs starting one at once (two test
    # workers, two visits) never race for the same number
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([xvfb, "-displayfd", str(w), "-screen", "0", f"{size[0]}x{size[1]}x24",
                                 "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                pass_fds=(w,), preexec_fn=_parent_death_call())
    finally:
        os.close(w)
    try:
        import select

        got = b""
        deadline = time.monotonic() + 10
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 0.1)
            if ready:
                chunk = os.read(r, 32)
                if not chunk:
                    break
                got += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(r)
    if proc.poll() is None and got.strip().isdigit():
        n = int(got.strip())
        _xvfb, _xvfb_display = proc, f":{n}"
        atexit.register(proc.terminate)
        os.environ["DISPLAY"] = f":{n}"
        logger.info("no display: started Xvfb on :%d (no vertical sync there; flips are paced in software)", n)
        return os.environ["DISPLAY"]
    if proc.poll() is None:
        proc.terminate()
    raise EegloopError("no display and Xvfb could not be started (Xvfb -displayfd named no display within 10 s)")
