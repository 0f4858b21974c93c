"""Logging with a ``verbose`` switch, in the style of MNE-Python.

Every module logs through ``logger``; nothing in eegloop prints except the CLI. Progress lines are INFO records of
its ``progress`` child (:mod:`eegloop.progress`).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

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


def _level(verbose: bool | str | int) -> int:
    return verbose if isinstance(verbose, int) and not isinstance(verbose, bool) else _LEVELS[verbose]


def _ensure_handler() -> None:
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


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
    logger.setLevel(_level(verbose))
    _ensure_handler()


@contextlib.contextmanager
def use_log_level(verbose: bool | str | int | None = None) -> Iterator[None]:
    """For the ``with`` block: eegloop's log level (progress lines included) as ``verbose`` says, as the public
    functions' ``verbose`` argument does (MNE-style); ``None`` changes nothing. The levels are put back after.

    ``True`` with no handler anywhere (a plain script or notebook) adds :func:`set_log_level`'s stderr handler, so
    that the lines are seen.
    """
    if verbose is None:
        yield
        return
    level = _level(verbose)
    progress = logger.getChild("progress")
    before = (logger.level, progress.level)
    logger.setLevel(level)
    if progress.level != logging.NOTSET:  # a level of its own (the CLI's print_progress): it follows too
        progress.setLevel(level)
    if level <= logging.INFO and not logger.hasHandlers():
        _ensure_handler()
    try:
        yield
    finally:
        logger.setLevel(before[0])
        if before[1] != logging.NOTSET:
            progress.setLevel(before[1])
