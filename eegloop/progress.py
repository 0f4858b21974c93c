"""Progress lines, one channel: what a visit (and the other long commands) says as it goes.

Every line is said once, by a :class:`Reporter`, and goes to two kinds of listener:

- the ``eegloop.progress`` logger, an INFO record: the terminal, a notebook, a file — whatever handler listens
  (the CLI installs :func:`print_progress`, which prints each line on stdout as ``print`` would);
- the bus (:data:`eegloop.bus.BUS`), a :class:`~eegloop.bus.Line` event, for a visit's lines: the operator
  console and any other subscriber.

How much is shown is the logger's level, in the style of MNE-Python: the public functions take ``verbose``
(``True``/``"info"``: the lines; ``False``/``"warning"``: problems only; ``"debug"``: everything; ``None``: as
:func:`eegloop.set_log_level` or the ``logging`` configuration left it), applied for the call
(:func:`use_log_level`). So a notebook silences a visit with ``run_visit(..., verbose=False)`` and
redirects its lines with one handler::

    import logging
    logging.getLogger("eegloop.progress").addHandler(my_handler)   # or print_progress(my_stream)

The older ``progress=`` argument (a callable taking each line) still works: the lines then go to it instead of
the logger (and to the bus as before).
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Optional, TextIO

from ._logging import logger, use_log_level

__all__ = ["PROGRESS_LOGGER", "Reporter", "print_progress", "use_log_level", "verbose"]

#: the logger every progress line is an INFO record of (a child of ``eegloop``: its level and handlers apply)
PROGRESS_LOGGER = logger.getChild("progress")


class Reporter:
    """Says a progress line: to ``progress`` when given, else as an INFO record of :data:`PROGRESS_LOGGER`; and,
    with ``bus``, as a :class:`~eegloop.bus.Line` on the bus (after the line is shown, as it always was).

    Parameters
    ----------
    progress : callable | None
        Receives each line instead of the logger (the older ``progress=`` argument of the public functions).
    bus : bool
        Also publish each line on the bus (a visit's lines: the console shows them).
    """

    def __init__(self, progress: Optional[Callable[[str], None]] = None, bus: bool = True):
        self.progress, self.bus = progress, bus

    def __call__(self, text) -> None:
        text = str(text)
        if self.progress is not None:
            self.progress(text)
        else:
            PROGRESS_LOGGER.info(text)
        if self.bus:
            from .bus import BUS, Line

            BUS.publish(Line(text))

    @property
    def shown(self) -> bool:
        """Whether the lines reach anyone now (a caller's callable, or the logger at INFO): the worker's image-bank
        progress bar is drawn only then."""
        return self.progress is not None or PROGRESS_LOGGER.isEnabledFor(logging.INFO)


class _PlainHandler(logging.StreamHandler):
    """Each record's message alone, flushed at once, on ``stream`` (default: whatever ``sys.stdout`` is when the
    line is said, as ``print`` writes)."""

    def __init__(self, stream: Optional[TextIO] = None):
        super().__init__()
        self._fixed = stream
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return self._fixed if self._fixed is not None else sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def print_progress(stream: Optional[TextIO] = None) -> Callable[[], None]:
    """Print every progress line on ``stream`` (default ``sys.stdout``), one a line, flushed, as the CLI shows
    them; returns the function that stops it.

    The lines are shown whatever :func:`eegloop.set_log_level` says about the rest (the progress logger's own level
    becomes INFO; ``verbose=False`` on a call still silences it) and only here (they no longer reach the
    ``eegloop`` logger's other handlers, e.g. the ``--verbose`` log on stderr).
    """
    handler = _PlainHandler(stream)
    before = (PROGRESS_LOGGER.level, PROGRESS_LOGGER.propagate)
    PROGRESS_LOGGER.addHandler(handler)
    PROGRESS_LOGGER.setLevel(logging.INFO)
    PROGRESS_LOGGER.propagate = False

    def stop() -> None:
        PROGRESS_LOGGER.removeHandler(handler)
        PROGRESS_LOGGER.setLevel(before[0])
        PROGRESS_LOGGER.propagate = before[1]

    return stop


def verbose(func):
    """Decorator (MNE's ``@verbose``): the function's ``verbose`` argument sets eegloop's log level, progress
    lines included, for the call (:func:`use_log_level`)."""
    import functools
    import inspect

    sig = inspect.signature(func)
    if "verbose" not in sig.parameters:
        raise TypeError(f"{func.__qualname__} has no verbose argument")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with use_log_level(sig.bind_partial(*args, **kwargs).arguments.get("verbose")):
            return func(*args, **kwargs)

    return wrapper
