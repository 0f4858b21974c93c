"""The recorder: EEG + markers from LSL into raw files, epochs and the database.

It joins three parts, each in its own module:

- :class:`~eegloop.recorder.acquisition.Acquisition`: the LSL inlets, clock
  correction, the sample counts, a lost stream detected;
- :class:`~eegloop.recorder.epocher.Epocher`: the buffer, the epoch window,
  cutting (rejecting epochs over gaps or non-finite samples), block bookkeeping;
- :class:`~eegloop.recorder.store.BlockStore`: one database transaction per block.

One thread pulls both streams, appends the EEG to the run's raw BrainVision
file as it arrives, cuts epochs as soon as their last sample is in, and queues
every finished block for the store. It never waits on the screen or the
database. Epochs reach online decoding only through :meth:`Recorder.subscribe`
(a bounded queue): nobody subscribed, nothing is kept, so memory stays flat
however long a visit runs.

If the thread dies (disk full, stream lost, database error), :attr:`Recorder.failure`
says why at once; the paradigm checks it every frame and stops the visit.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Optional

from .._logging import logger
from .._worker import Worker
from ..bus import BUS, Marker, Stream
from ..protocol import Protocol
from ..types import Epoch
from .acquisition import Acquisition, RecorderStats
from .epocher import Epocher
from .rawfile import BrainVisionWriter
from .store import BlockStore

__all__ = ["Recorder", "RecorderStats", "EpochQueue"]


class EpochQueue(queue.Queue):
    """A bounded queue of online epochs: when full, the oldest epoch is dropped and counted."""

    def __init__(self, maxsize: int = 64):
        super().__init__(maxsize=maxsize)
        self.dropped = 0

    def offer(self, ep: Epoch) -> bool:
        """Put without blocking; returns False when an older epoch had to be dropped."""
        dropped = False
        while True:
            try:
                self.put_nowait(ep)
                return not dropped
            except queue.Full:
                try:
                    self.get_nowait()
                    self.dropped += 1
                    dropped = True
                except queue.Empty:
                    pass


class Recorder(Worker):
    """Record EEG + markers from LSL into raw files, epochs and the database.

    Parameters
    ----------
    protocol : Protocol
        ``amplifier`` (stream names and pins, channels, sfreq, buffer, stall timeout) and ``epochs``.
    db : Database | None
        Where blocks, events and epochs go; None records without a database.
    session_id : int | None
        The session rows belong to (required with ``db``; may be set after :meth:`connect`, so a
        session is only created once the amplifier is found).
    raw_dir : path | None
        Folder of the raw files (one per run); None writes none.
    expect_timings : bool
        Blocks are stored once the paradigm has also handed over their trial timings
        (:meth:`add_timings`), so timings and epochs land in the block's one transaction.
    owner : str | None
        The owner of the session's claim: every write is fenced by it (a process that lost the claim
        writes nothing more).
    """

    thread_name = "eegloop-recorder"

    def __init__(self, protocol: Protocol, db=None, session_id: int | None = None, raw_dir: str | Path | None = None,
                 raw_prefix: str = "run", expect_timings: bool = False, buffer_s: float | None = None,
                 owner: str | None = None):
        super().__init__()
        self.protocol = protocol
        self.db = db
        self.session_id = session_id
        self.raw_dir = Path(raw_dir) if raw_dir is not None else None
        self.raw_prefix = raw_prefix
        self.expect_timings = expect_timings
        self.buffer_s = buffer_s or getattr(protocol.amplifier, "buffer_s", 30.0)
        self.acq = Acquisition(protocol.amplifier, photodiode=protocol.timing.photodiode_channel)
        self.epocher: Optional[Epocher] = None
        self._lock = threading.Lock()
        self._store = BlockStore(db, owner=owner) if db is not None else None
        self._subscribers: list[EpochQueue] = []
        self._raw: Optional[BrainVisionWriter] = None
        self._run: Optional[int] = None
        self._run_id: Optional[int] = None
        self._run_first_sample: int = 0
        self._run_ids: dict[int, int] = {}
        self._run_snapshot = (0, 0, 0)
        self.raw_files: list[Path] = []
        self._stopped = False

    # -- connection ------------------------------------------------------------------
    @property
    def stats(self) -> RecorderStats:
        return self.acq.stats

    def connect(self, markers: bool = True, timeout: float | None = None, marker_source_id: str | None = None,
                eeg_source_id: str | None = None) -> "Recorder":
        """Resolve the EEG (and marker) stream; check channels and sfreq against the protocol.

        ``marker_source_id`` pins the marker stream to one outlet (the paradigm's in this process),
        ``eeg_source_id`` the EEG stream (the virtual amplifier's in this process).
        """
        a = self.acq.connect(markers=markers, timeout=timeout, marker_source_id=marker_source_id,
                             eeg_source_id=eeg_source_id)
        self.ch_names, self.eeg_idx, self.stim_idx = a.ch_names, a.eeg_idx, a.stim_idx
        self.eeg_names, self.sfreq = a.eeg_names, a.sfreq
        self.epocher = Epocher(self.protocol.epochs, a.sfreq, a.n_channels, a.eeg_idx, a.stim_idx, a.eeg_names,
                               buffer_s=self.buffer_s, expect_timings=self.expect_timings,
                               timing=self.protocol.timing, photo_idx=a.photo_idx)
        BUS.publish(Stream(list(a.ch_names), list(a.ch_types), float(a.sfreq), list(a.eeg_idx)))
        # the statistics show the epocher's own tallies (the same objects, kept up to date by it)
        self.stats.epochs_rejected = self.epocher.rejected
        self.stats.alignment_errors = self.epocher.alignment_errors
        return self

    @property
    def channels(self) -> list[dict]:
        """Every stored channel: ``{"name", "type", "unit"}`` (types in MNE's names; only eeg is decoded)."""
        a = self.acq
        return [{"name": n, "type": t, "unit": u} for n, t, u in zip(a.ch_names, a.ch_types, a.out_units)]

    def subscribe(self, maxsize: int = 64, channel=None) -> EpochQueue:
        """A queue that receives every valid epoch cut from now on (online decoding).

        Bounded: a consumer that falls behind loses the oldest epochs (counted in
        :attr:`EpochQueue.dropped` and ``stats.online_dropped``), never the recording. ``channel``: another
        subscriber of the same shape (``offer(epoch)``, ``dropped``), e.g. a queue to another process.
        """
        q = channel if channel is not None else EpochQueue(maxsize)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: EpochQueue) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    @property
    def failure(self) -> Optional[BaseException]:
        """Why the recording cannot go on (the pull thread died, or the database refused a block), or None."""
        if self.error is not None:
            return self.error
        if self._store is not None and self._store.error is not None:
            return self._store.error
        if self._thread is not None and not self.alive and not self.stopping:
            return RuntimeError("the recorder thread ended unexpectedly")
        return None

    # -- runs ----------------------------------------------------------------------
    def begin_run(self, run: int, raw_name: str | None = None) -> None:
        """Start run ``run`` (1-based): a new raw file and, with a database, a run row."""
        raw = None
        if self.raw_dir is not None:
            from .._files import private_dir, private_file

            private_dir(self.raw_dir)
            name = raw_name or f"{self.raw_prefix}-{run:02d}_eeg.vhdr"
            k = 2
            while (self.raw_dir / name).exists():  # a resumed run never overwrites what was recorded
                name = f"{self.raw_prefix}-{run:02d}_part{k}_eeg.vhdr"
                k += 1
            raw = BrainVisionWriter(self.raw_dir / name, self.ch_names, self.sfreq, units=self.acq.out_units)
            for f in (raw.vhdr, raw.eeg, raw.vmrk):
                private_file(f)
            self.raw_files.append(raw.vhdr)
        run_id = None
        if self.db is not None:  # database work outside the lock: the pull thread never waits on it
            existing = self.db.find_run(self.session_id, run)
            if existing is None:
                run_id = self.db.add_run(self.session_id, run, raw_path=raw.vhdr if raw else None,
                                         status="recording")
            else:  # a resumed run: same row, a further raw file
                run_id = existing
                old = [r for r in self.db.get_runs(self.session_id) if r.id == existing][0]
                parts = list((old.info or {}).get("raw_parts", [])) + ([old.raw_path] if old.raw_path else [])
                self.db.update_run(existing, status="recording", raw_path=raw.vhdr if raw else None,
                                   info={**(old.info or {}), "raw_parts": parts})
        with self._lock:
            self._run = run
            self._raw = raw
            self._run_first_sample = self.epocher.position
            s = self.stats
            self._run_snapshot = (s.samples_received, s.samples_expected, s.lost_samples)
            self._run_id = run_id
            if run_id is not None:
                self._run_ids[run] = run_id
            self.acq.armed = True  # from now on a silent stream stops the visit

    def add_timings(self, run: int, block: int, timings: list[dict]) -> None:
        """The paradigm's timings of a block's trials (stored in the block's transaction)."""
        with self._lock:
            if self.epocher is not None:
                self.epocher.add_timings(run, block, timings)

    def end_run(self, wait: bool = True, status: str = "done", reason: str | None = None) -> dict:
        """Finish the current run: wait for its last epochs, close the raw file, store the accounting.

        ``status``/``reason`` describe how the run ended (``aborted``, ``failed``); blocks still open
        are stored as ``incomplete`` with ``reason``.
        """
        if wait and self.failure is None:  # the last epoch needs tmax + margin of signal after onset, plus transport
            t_start = time.monotonic()
            e = self.protocol.epochs
            deadline = t_start + e.tmax + max(e.margin_s, e.right_margin_s or 0) + 2.3
            while time.monotonic() < deadline and self.failure is None:
                with self._lock:
                    busy = self._run is not None and self.epocher.pending_in_run(self._run)
                    ended = any(m.get("event") == "run_end" for m, _ in self.epocher.loose_events)
                if not busy and (ended or time.monotonic() - t_start > 0.5):  # the run_end marker, if one comes
                    break
                time.sleep(0.02)
        with self._lock:
            self.acq.armed = False  # between runs (a rest, the quick-train) a silent stream is not a failure
            try:
                if self._run is not None:
                    self._queue_blocks(self.epocher.finished_blocks(force_run=self._run, reason=reason))
            finally:
                raw, self._raw = self._raw, None
                if raw is not None:
                    try:
                        raw.close()
                    except OSError as exc:
                        logger.error("closing the raw file %s: %s", raw.vhdr, exc)
                        self.error = self.error or exc
            s = self.stats
            r0, e0, l0 = self._run_snapshot
            run_stats = dict(samples_received=s.samples_received - r0, samples_expected=s.samples_expected - e0,
                             lost_samples=s.lost_samples - l0)
            if self.db is not None and self._run_id is not None:
                run_id, loose = self._run_id, list(self.epocher.loose_events)
                self.epocher.loose_events.clear()
                db, sid, owner = self.db, self.session_id, self._store.owner
                info = {"gaps": s.gaps, "stalls": s.stalls[:100], "max_gap_ms": s.max_gap_ms,
                        **({"reason": reason} if reason else {})}
                self._store.submit(lambda: db.finish_run(sid, run_id, loose, status, info, owner=owner, **run_stats),
                                   f"run {self._run}")
            self._run = None
            self._run_id = None
        return run_stats

    def _queue_blocks(self, records) -> None:
        if self.db is None:
            return
        for rec in records:
            run_id = self._run_ids.get(rec.run, self._run_id)
            self._store.submit_block(self.session_id, run_id, rec)

    # -- thread ----------------------------------------------------------------------
    def start(self) -> "Recorder":
        if self.epocher is None:
            self.connect()
        super().start()
        return self

    def stop(self, status: str = "done", reason: str | None = None) -> RecorderStats:
        """Stop pulling, finish the open run, write everything; returns the statistics.

        Every step runs even when an earlier one fails (the open run is closed, the raw file flushed,
        the store drained); the first failure is raised at the end. A second call does nothing.
        """
        if self._stopped:
            return self.stats
        self._stopped = True
        try:
            if self._run is not None:
                self.end_run(wait=self.failure is None, status=status, reason=reason)
        finally:
            try:
                super().stop(10)
            finally:
                try:
                    if self._store is not None:
                        loose = list(self.epocher.loose_events) if self.epocher is not None else []
                        if loose and self.session_id is not None:  # session_end and the like: no run
                            db, sid, owner = self.db, self.session_id, self._store.owner
                            self._store.submit(lambda: db.finish_run(sid, None, loose, "", {}, owner=owner),
                                               "markers after the last run")
                        self._store.flush(timeout=self._store.retry_s + 10)
                        self._store.close()
                finally:
                    self.acq.close()
        err = self.failure if self.error is not None or (self._store and self._store.error) else None
        if err is None and self._store is not None and (self._store.alive or self._store.pending):
            from ..errors import DatabaseError

            err = DatabaseError(f"{self._store.pending} block(s) or updates could not be written to the database "
                                "in time (it stayed busy)")
        if err is not None:
            raise err
        return self.stats

    def flush(self) -> None:
        """Wait until the store has written everything submitted."""
        if self._store is not None:
            self._store.flush()

    @property
    def blocks_stored(self) -> list:
        """(block index, block id, status, reason) of every block written so far."""
        return list(self._store.stored) if self._store is not None else []

    def run(self) -> None:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        st = self.stats
        while not self.stopping:
            data, ts = self.acq.pull()
            if data is None:
                time.sleep(0.004)  # poll at ~250 Hz: epochs are ready within a few ms of their last sample
            else:
                with self._lock:
                    self.epocher.append(data, ts)
                    if self._raw is not None:
                        self._raw.write(data)
                if BUS.wants_samples:  # the console's traces (it copies what it keeps, at display rate)
                    BUS.samples(data, ts)
            markers = self.acq.pull_markers()
            with self._lock:
                for m, t in markers:
                    self._on_marker(m, t)
                new = self.epocher.cut_ready()
                if new:
                    st.epochs = self.epocher.n_epochs
                    for q in self._subscribers:
                        for e in new:
                            q.offer(e)
                    st.online_dropped = sum(q.dropped for q in self._subscribers)
                self._queue_blocks(self.epocher.finished_blocks())
            st.cpu_seconds = time.thread_time() - cpu0
            st.wall_seconds = time.monotonic() - wall0

    def add_marker(self, m: dict, t: float) -> None:
        """Handle one marker at LSL time ``t`` (as if it came from the marker stream)."""
        with self._lock:
            self.stats.markers += 1
            self._on_marker(m, t)

    def _on_marker(self, m: dict, t: float) -> None:
        ev = m.get("event")
        if BUS.wants_samples:
            BUS.publish(Marker(str(ev), str(m.get("class", m.get("value", ""))), float(t)))
        if self._raw is not None:
            idx = self.epocher.sample_at(t) - self._run_first_sample
            self._raw.marker(max(idx, 0), _describe(m), "Stimulus" if ev == "stim_on" else "Comment")
        self.epocher.add_marker(m, t, self._run)


def _describe(m: dict) -> str:
    ev = m.get("event", "marker")
    if ev == "stim_on":
        return f"stim_on/{m.get('class', '')}/trial{m.get('trial', '')}"
    if ev == "marker":
        return str(m.get("value", ""))
    parts = [str(ev)] + [f"{k}{m[k]}" for k in ("run", "block") if k in m]
    return "/".join(parts)
