"""The visit's event bus: small typed events that the terminal, the console and anything else subscribe to.

One bus per process (:data:`BUS`). The visit publishes what happens — its phase, each progress line (said by
:class:`eegloop.progress.Reporter`, which also logs it), quality, training epochs, feedback trials, the end — and
the recorder hands its samples and markers to sample subscribers (only when there are any: a visit without a console pays one list check per chunk). A subscriber
that raises is logged and dropped from nothing else: publishing never fails the experiment.

:data:`CONTROLS` carries the operator's requests (pause after the current block, resume, abort) from the
console to the paradigm, which looks at them between blocks and at every key check.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ._logging import logger

__all__ = ["Bus", "BUS", "Controls", "CONTROLS", "Phase", "Line", "Stream", "TrainEpoch", "FeedbackTrial",
           "SignalChecked", "Finished", "VisitStats", "Marker", "Screen"]


@dataclass
class Phase:
    """Where the visit is: ``signal check``, ``instructions``, ``recording``, ``pause``, ``paused``,
    ``quick-train``, ``evaluation``, ``feedback``, ``report``, ``done``, ``aborted``, ``failed``."""

    name: str
    detail: str = ""
    run: Optional[int] = None
    n_runs: Optional[int] = None
    block: Optional[int] = None
    n_blocks: Optional[int] = None
    time_left_s: Optional[float] = None
    session_id: Optional[int] = None


@dataclass
class Line:
    """One progress line of the visit (:class:`eegloop.progress.Reporter` publishes it; the terminal has it from the
    ``eegloop.progress`` logger)."""

    text: str


@dataclass
class Stream:
    """The EEG stream the recorder reads: every channel's name and type, and which are EEG."""

    names: list
    types: list
    sfreq: float
    eeg_idx: list


@dataclass
class Marker:
    """A marker the recorder received (``event``: stim_on, block_start, ...; ``label``: the class, if any)."""

    event: str
    label: str
    lsl_time: float


@dataclass
class VisitStats:
    epochs: int = 0
    lost_samples: int = 0
    gaps: int = 0
    dropped_frames: int = 0
    rejected: int = 0


@dataclass
class SignalChecked:
    check: Any  # SignalCheck


@dataclass
class TrainEpoch:
    epoch: int
    n_epochs: int
    val_score: Optional[float] = None
    train_loss: Optional[float] = None


@dataclass
class FeedbackTrial:
    k: int
    n: int
    trial: int
    cue: str
    decoded: str
    probability: float
    image_path: Optional[str]
    latencies: dict = field(default_factory=dict)
    n_classes: int = 2


@dataclass
class Screen:
    """A message the subject's window shows (instructions, the rest screen and its countdown, a pause, the neutral
    message after a failure, the thanks), as it was asked for."""

    text: str


@dataclass
class Finished:
    status: str
    session_id: Optional[int] = None
    report: Optional[str] = None


class Bus:
    def __init__(self) -> None:
        self._subs: list[Callable[[Any], None]] = []
        self._samples: list[Callable] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``fn(event)`` for every event from now on; returns the function that unsubscribes."""
        with self._lock:
            self._subs.append(fn)
        return lambda: self._drop(self._subs, fn)

    def subscribe_samples(self, fn: Callable) -> Callable[[], None]:
        """Call ``fn(data, timestamps)`` with every chunk the recorder pulls (on the recorder's thread: be quick)."""
        with self._lock:
            self._samples.append(fn)
        return lambda: self._drop(self._samples, fn)

    def _drop(self, subs: list, fn) -> None:
        with self._lock:
            if fn in subs:
                subs.remove(fn)

    @property
    def has_listeners(self) -> bool:
        return bool(self._subs)

    @property
    def wants_samples(self) -> bool:
        return bool(self._samples)

    def publish(self, event: Any) -> None:
        for fn in list(self._subs):
            try:
                fn(event)
            except Exception as exc:  # a subscriber never fails the visit
                logger.warning("event subscriber failed on %s: %s", type(event).__name__, exc)

    def samples(self, data, ts) -> None:
        for fn in list(self._samples):
            try:
                fn(data, ts)
            except Exception as exc:
                logger.warning("sample subscriber failed: %s", exc)


class Controls:
    """The operator's requests: pause after the current block, resume, abort.

    The visit's presenter runs in another process: :meth:`on_change` hooks carry each request there the moment it
    is made (:class:`~eegloop.rig.Rig` registers one)."""

    def __init__(self) -> None:
        self.pause = threading.Event()
        self.abort_requested = threading.Event()
        self._abort_hooks: list[Callable[[], None]] = []
        self._change_hooks: list[Callable[[str], None]] = []

    def reset(self) -> None:
        self.pause.clear()
        self.abort_requested.clear()

    def on_abort(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn`` when an abort is requested (the presenter's :meth:`request_abort`)."""
        self._abort_hooks.append(fn)
        if self.abort_requested.is_set():
            fn()
        return lambda: fn in self._abort_hooks and self._abort_hooks.remove(fn)

    def on_change(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """Call ``fn("pause" | "resume")`` on each pause or resume request; returns the function that unhooks it."""
        self._change_hooks.append(fn)
        return lambda: fn in self._change_hooks and self._change_hooks.remove(fn)

    def _changed(self, what: str) -> None:
        for fn in list(self._change_hooks):
            try:
                fn(what)
            except Exception as exc:  # a hook never fails the request
                logger.warning("control hook failed on %s: %s", what, exc)

    def request_pause(self) -> None:
        """Pause after the current block."""
        self.pause.set()
        self._changed("pause")

    def resume(self) -> None:
        self.pause.clear()
        self._changed("resume")

    def abort(self) -> None:
        self.abort_requested.set()
        self.pause.clear()
        for fn in list(self._abort_hooks):
            fn()


BUS = Bus()
CONTROLS = Controls()
