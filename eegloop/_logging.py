"""Logging with a ``verbose`` switch, in the style of MNE-Python.

Every module logs through ``logger``; nothing in eegloop prints except the CLI.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("eegloop")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not the stream of the moment the
    handler was made, which a test harness or a notebook may have closed since)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass

_LEVELS = {
    True: logging.INFO,
    False: logging.WARNING,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def set_log_level(verbose: bool | str | int | None = None) -> None:
    """Set eegloop's log level.

    Parameters
    ----------
    verbose : bool | str | int | None
        ``True``/``"info"`` shows progress messages, ``False``/``"warning"``
        only problems, ``"debug"`` everything. ``None`` leaves it as it is.
    """
    if verbose is None:
        return
    level = verbose if isinstance(verbose, int) and not isinstance(verbose, bool) else _LEVELS[verbose]
    logger.setLevel(level)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
