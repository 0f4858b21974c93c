"""The rig of a visit: its child processes, started, watched and stopped in one place.

=============  ==============================================================================================
process        owns
=============  ==============================================================================================
orchestrator   this process: the visit's phases (:mod:`eegloop.session`), the database's session rows and
               claim, the quick-train, the operator console and the event bus
presenter      the PsychoPy window, the frame loop, the marker outlet, the next block's images
               (:mod:`eegloop.roles.presenter`); real-time priority, its own core where there are cores to spare
acquisition    LSL inlets, clock correction, epoch cutting, raw files, the block store
               (:mod:`eegloop.roles.acquisition`)
amplifier      ``--simulate`` only: the virtual amplifier, as a real amplifier's vendor app
               (:mod:`eegloop.roles.amplifier`)
worker         feedback only: online decoding, image generation (:mod:`eegloop.roles.worker`)
=============  ==============================================================================================

::

    amplifier ──EEG (LSL)──► acquisition ──epochs (queue)──► worker ──images (queue)──► presenter
        ▲                     │  raw files, blocks ──► database ◄── orchestrator        │
        └──────markers (LSL)──┴─────────────────────────────────────────────────────────┘
                 orchestrator ◄──commands / events (pipes)──► every child; console ◄── bus

Every child is started with ``spawn``, dies with this process (also when it is SIGKILLed) and sends a
heartbeat; a child that dies or hangs is noticed within :data:`~eegloop.roles.child.HANG_S` (dies: at once):
the rig tells the presenter to stop at its next frame, puts a :class:`ChildFailedEvent` in :attr:`Rig.events`
and the visit ends with that one line. :meth:`Rig.close` stops the children in the order that loses nothing:
the acquisition (its open run closed, its raw file flushed, its store drained), the worker, the amplifier, then
the presenter (window and marker outlet).
"""
from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ._logging import logger
from ._worker import Worker
from .roles.child import Child, ChildFailed, Pending

__all__ = ["Rig", "ChildFailedEvent", "release_lsl", "simulated_embeddings"]


@dataclass
class ChildFailedEvent:
    name: str
    reason: str


# events the visit handles in its own loop; everything else a child sends goes on the bus at once
_VISIT_EVENTS = ("BlockShown", "PausedAfter", "Resumed", "EscapePressed", "FeedbackShown")


class Rig:
    """The child processes of a visit, as a context manager.

    Parameters
    ----------
    protocol : Protocol
    simulate : bool
        Start the virtual amplifier (its own process).
    db : Database | None
        The database the acquisition (and the worker) write to; None records without one.
    presenter : bool
        Start the presenter (its window opens with ``OpenWindow``).
    acquisition : bool
        Start the acquisition (a rig with the presenter alone: the paradigm's own timing, benchmarks).
    worker : bool
        The visit will give feedback: :meth:`prestart_worker` starts the decode/generate worker ahead of its use
        (the session calls it when the quick-train begins: its imports, torch among them, are done while the
        subject rests, not while stimuli are shown nor while the subject waits for the first feedback trial).
    say : callable | None
        Progress lines the children send (the worker's generator warm-up, ...).
    """

    def __init__(self, protocol, simulate: bool = False, db=None, presenter: bool = True,
                 say: Optional[Callable[[str], None]] = None, acquisition: bool = True, worker: bool = False):
        self.protocol = protocol
        self.simulate = simulate
        self.db = db
        self.with_presenter = presenter
        self.with_acquisition = acquisition
        self.with_worker = worker
        self.say = say or (lambda _t: None)
        self.presenter: Optional[Child] = None
        self.acquisition: Optional[Child] = None
        self.amplifier: Optional[Child] = None
        self.worker: Optional[Child] = None
        self.events: "queue.Queue" = queue.Queue()
        self.failure: Optional[str] = None
        self.display = None  # the presenter's Display once the window is open
        self.stream = None  # the acquisition's StreamDescription once connected
        self.marker_id = f"eegloop-{protocol.amplifier.marker_stream_name}-{uuid.uuid4().hex[:12]}"
        self.eeg_source_id: Optional[str] = None
        self._epochs = self._images = None
        self._monitor: Optional[Worker] = None  # watches the children (and :meth:`watch`'s checks) every 20 ms
        self._unhook: list = []
        self._health: list = []
        self._x_server: Optional[int] = None
        self._closed = False

    @property
    def children(self) -> list:
        return [c for c in (self.presenter, self.acquisition, self.amplifier, self.worker) if c is not None]

    # -- start -------------------------------------------------------------------------------------------------
    def start(self) -> "Rig":
        """Spawn the presenter, the virtual amplifier (``simulate``) and the acquisition; wait until all are up."""
        import multiprocessing as mp

        from .lsl import configure_lsl
        from .roles.priority import pin, spare_cores, x_server_pid

        amp = self.protocol.amplifier
        configure_lsl(amp.lsl_scope)  # the children inherit the scope
        ctx = mp.get_context("spawn")
        self._epochs = ctx.Queue(maxsize=256)  # bounded: a stalled decoder never grows memory
        self._images = ctx.Queue()
        cores = spare_cores()
        try:
            if self.with_presenter:
                from .paradigm.display import ensure_display

                ensure_display(tuple(self.protocol.paradigm.screen.size))
                self._x_server = x_server_pid()
                self.presenter = Child("presenter", "eegloop.roles.presenter:PresenterRole",
                                       dict(protocol=self.protocol, marker_source_id=self.marker_id,
                                            images=self._images, x_server=self._x_server,
                                            cores=cores[0] if cores else None), self._on_event).spawn()
            if self.simulate:
                self.eeg_source_id = f"eegloop-sim-{amp.stream_name}-{uuid.uuid4().hex[:12]}"
                self.amplifier = Child("amplifier", "eegloop.roles.amplifier:AmplifierRole",
                                       dict(protocol=self.protocol,
                                            marker_source_id=self.marker_id if self.with_presenter else None,
                                            source_id=self.eeg_source_id), self._on_event).spawn()
            from .database import CLAIM_OWNER

            if self.with_acquisition:
                self.acquisition = Child("acquisition", "eegloop.roles.acquisition:AcquisitionRole",
                                         dict(protocol=self.protocol, db_url=self.db.url if self.db else None,
                                              data_dir=str(self.db.data_dir) if self.db else None,
                                              owner=CLAIM_OWNER, epochs=self._epochs), self._on_event).spawn()
            if cores:  # the presenter and its X server have the last core: everyone else the others
                for c in self.children:
                    if c is not self.presenter:
                        pin(c.pid, cores[1])
                pin(0, cores[1])
            for c in self.children:
                if c is not self.worker:  # the worker is awaited when first used
                    c.wait_ready()
            self._monitor = Worker.of(self._watch, "eegloop-rig-monitor").start()
            self._hook_controls()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn_worker(self) -> None:
        self.worker = Child("worker", "eegloop.roles.worker:WorkerRole",
                            dict(protocol=self.protocol, db_url=self.db.url, data_dir=str(self.db.data_dir),
                                 epochs=self._epochs, images=self._images), self._on_event).spawn()
        from .roles.priority import pin, spare_cores

        cores = spare_cores()
        if cores:
            pin(self.worker.pid, cores[1])

    def prestart_worker(self) -> None:
        """Start the worker now without waiting for it (see ``worker``); nothing when it runs already."""
        if self.with_worker and self.worker is None and self.db is not None and not self._closed:
            self._spawn_worker()

    def start_worker(self) -> Child:
        """The decode/generate worker (feedback), started on first use unless the rig started it already."""
        if self.worker is None:
            self._spawn_worker()
        self.worker.wait_ready()
        return self.worker

    def _hook_controls(self) -> None:
        from .bus import CONTROLS
        from .roles.messages import Abort, Pause, Resume

        if self.presenter is None:
            return
        pres = self.presenter
        self._unhook = [CONTROLS.on_abort(lambda: pres.control(Abort())),
                        CONTROLS.on_change(lambda what: pres.control(Pause() if what == "pause" else Resume()))]
        if CONTROLS.pause.is_set():
            pres.control(Pause())

    # -- what the children say ---------------------------------------------------------------------------------
    def _on_event(self, child: Child, ev: Any) -> None:
        """A child's event: bus events published at once (the console hears them while the visit is busy); the
        visit's own events queued for its loop (:meth:`wait`)."""
        from .bus import BUS
        from .roles.messages import Samples, Say

        name = type(ev).__name__
        if isinstance(ev, Samples):
            if BUS.wants_samples:
                BUS.samples(ev.data, ev.ts)
        elif isinstance(ev, Say):
            self.say(ev.text)
        elif name == "RecorderFailed":  # the process is fine, the recording is not: the visit stops
            self._failed("acquisition", ev.reason, child_ok=True)
        elif name == "WorkerFailed":
            self._failed("worker", ev.reason, child_ok=True)
        elif name in _VISIT_EVENTS:
            self.events.put(ev)
        else:
            BUS.publish(ev)  # Stream, Marker, TrialShown

    def watch(self, name: str, health: Callable[[], Optional[BaseException]]) -> None:
        """Also stop the visit when ``health()`` returns an error (checked with the children, every 20 ms)."""
        self._health.append((name, health))

    def _watch(self, monitor: Worker) -> None:
        from .bus import CONTROLS
        from .roles.messages import Pause, Resume

        paused = CONTROLS.pause.is_set()
        while not monitor.wait_stop(0.02):
            if CONTROLS.pause.is_set() != paused and self.presenter is not None:  # also a pause set directly
                paused = CONTROLS.pause.is_set()
                self.presenter.control(Pause() if paused else Resume())
            now = time.monotonic()
            for c in self.children:
                reason = c.check(now)
                if reason is not None:
                    self._failed(c.name, reason)
            for name, health in list(self._health):
                err = health()
                if err is not None:
                    self._health.remove((name, health))
                    self._failed(name, str(err), child_ok=True)

    def _failed(self, name: str, reason: str, child_ok: bool = False) -> None:
        """A child died or hung (or the recording failed): stop the paradigm at its next frame, tell the visit."""
        from .roles.messages import Fail

        child = next((c for c in self.children if c.name == name), None)
        if not child_ok and child is not None:
            if child.failure is not None:
                return
            child.kill()  # a hung child: nothing of it stays behind (before anything waits on its locks)
            if not child.fail(reason):
                return
        if self.failure is None:
            self.failure = reason
            logger.error("%s", reason)
        if self.presenter is not None and name != "presenter":
            self.presenter.control(Fail(reason))
        self.events.put(ChildFailedEvent(name, reason))

    def check(self) -> None:
        """Raise :class:`ChildFailed` if a child has failed."""
        if self.failure is not None:
            raise ChildFailed(self.failure)

    # -- waiting on a long command ------------------------------------------------------------------------------
    def wait(self, pending: Pending, on_event: Optional[Callable[[Any], None]] = None,
             timeout: Optional[float] = None, grace_s: Optional[float] = None) -> Any:
        """Handle the visit's events (``on_event``) until ``pending`` is answered; its value (or its error).

        When a child fails meanwhile the wait ends with :class:`ChildFailed`: at once (``grace_s`` None), or, for a
        presenter finishing its neutral message, if no answer came ``grace_s`` s later (it is then killed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failed_at = None
        while not pending.done():
            if self.failure is not None and pending.child.failure is None:
                failed_at = failed_at or time.monotonic()
                if grace_s is None or time.monotonic() - failed_at > grace_s:
                    if grace_s is not None:
                        logger.warning("the %s process did not answer after the failure: stopping it",
                                       pending.child.name)
                        pending.child.kill()
                    self.drain(on_event)
                    raise ChildFailed(self.failure)
            try:
                ev = self.events.get(timeout=0.01)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    raise ChildFailed(f"the {pending.child.name} process did not answer within {timeout:g} s")
                continue
            if on_event is not None:
                on_event(ev)
        self.drain(on_event)
        return pending.result(0)

    def call(self, child: Child, command: Any, timeout: Optional[float] = None) -> Any:
        """``command``'s reply from ``child``; :class:`ChildFailed` as soon as any child of the rig fails."""
        return self.wait(child.request(command), None, timeout)

    def drain(self, on_event: Optional[Callable[[Any], None]] = None) -> None:
        """Handle the events already queued."""
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return
            if on_event is not None:
                on_event(ev)

    # -- stop --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every child in the order that loses nothing; kill what does not end. Never raises."""
        if self._closed:
            return
        self._closed = True
        from .roles.messages import Abort

        for u in self._unhook:
            u()
        if self._monitor is not None:
            self._monitor.request_stop()  # not joined: a check in progress (the claim's query) ends on its own
        if self.presenter is not None:  # whatever it is showing ends now (as with Escape), then it closes
            self.presenter.control(Abort())
        for c in (self.acquisition, self.worker, self.amplifier, self.presenter):
            if c is not None:
                c.close(timeout=30 if c is self.acquisition else 10)
        if self._x_server is not None:  # also after a presenter that died with its X server raised
            from .roles.priority import restore_priority

            restore_priority(self._x_server)
        for q in (self._epochs, self._images):
            if q is not None:
                q.cancel_join_thread()  # nothing left in them is needed; never block the exit on them
                q.close()
        self._epochs = self._images = None
        release_lsl()

    def __enter__(self) -> "Rig":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def simulated_embeddings(protocol):
    """The stimuli's CLIP embeddings when the simulated subject responds to them (``embedding_signal``)."""
    sim = protocol.amplifier.simulate
    if sim is None or sim.embedding_signal <= 0:
        return None
    from .embeddings import stimulus_embeddings

    return stimulus_embeddings(protocol)


def release_lsl() -> None:
    """Give this process's finished LSL objects' ports back to the machine now.

    liblsl binds every outlet's service socket, and every query, to one of 32 ports (16572-16603); an outlet that
    finds them all taken gets a random port, where queries from other processes reach it only by chance (the
    discovery port 16571 delivers each query to the most recently opened outlet alone). After a failure, a
    traceback's frames keep the failed rig's inlets and outlets alive until Python's cyclic garbage collector
    happens to run. One collection when a rig closes returns them (a few ms).
    """
    import gc

    gc.collect()
