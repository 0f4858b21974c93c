"""The recorder: LSL inlets for EEG and markers, raw files, epochs, database.

One thread pulls both streams (clock-corrected into this machine's LSL clock),
appends the EEG to the run's raw BrainVision file as it arrives, cuts an epoch
around each ``stim_on`` marker as soon as its last sample is in, hands it to
:attr:`Recorder.epochs` (a queue, for online decoding) and, when a block ends,
passes the block's markers and epochs to a single database writer thread. It
never waits on the screen or the database.

Sample accounting (received vs expected from the stream's own timestamps,
gaps, stalls) is kept in :class:`RecorderStats`.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._logging import logger
from ..errors import StreamError
from ..lsl import ensure_configured, local_clock, parse_marker, resolve_stream
from ..protocol import Protocol
from ..types import Epoch
from .rawfile import BrainVisionWriter

__all__ = ["Recorder", "RecorderStats", "DbWriter"]


@dataclass
class RecorderStats:
    """What arrived, what was expected, and what went wrong."""

    samples_received: int = 0
    samples_expected: int = 0
    lost_samples: int = 0
    gaps: int = 0
    max_gap_ms: float = 0.0
    max_pull_interval_ms: float = 0.0
    stalls: list = field(default_factory=list)  # [(lsl_time, seconds)]
    markers: int = 0
    epochs: int = 0
    epochs_skipped: int = 0
    alignment_errors: list = field(default_factory=list)  # samples, when a STIM channel exists
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["alignment_errors"] = list(map(int, self.alignment_errors))
        return d


class DbWriter:
    """The one thread that writes to the database, fed by a queue of callables."""

    def __init__(self):
        self._q: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue()
        self.errors: list[BaseException] = []
        self._t = threading.Thread(target=self._loop, name="eegloop-db-writer", daemon=True)
        self._t.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._q.put(fn)

    def _loop(self) -> None:
        while True:
            fn = self._q.get()
            try:
                if fn is None:
                    return
                fn()
            except BaseException as exc:  # keep writing the rest; report at flush
                logger.error("database write failed: %s", exc)
                self.errors.append(exc)
            finally:
                self._q.task_done()

    def flush(self) -> None:
        """Wait until everything submitted is written; re-raise the first error."""
        self._q.join()
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        self._q.put(None)
        self._t.join(30)


@dataclass
class _Pending:
    marker: dict
    onset: float
    run: int


@dataclass
class _OpenBlock:
    run: int
    block: int
    events: list = field(default_factory=list)  # (marker dict, lsl time)
    epochs: list = field(default_factory=list)
    n_stim: int = 0
    n_skipped: int = 0
    ended_at: Optional[float] = None


class Recorder:
    """Record EEG + markers from LSL into raw files, epochs and the database.

    Parameters
    ----------
    protocol : Protocol
        ``amplifier`` (stream names, channels, sfreq, LSL scope) and ``epochs``.
    db : Database | None
        Where blocks, events and epochs go; None records without a database.
    session_id : int | None
        The session rows belong to (required with ``db``).
    raw_dir : path | None
        Folder of the raw files (one per run); None writes none.
    stall_s : float
        No samples for this long counts as a stall (logged at once).
    buffer_s : float
        Seconds of signal kept in memory for cutting epochs.
    """

    def __init__(self, protocol: Protocol, db=None, session_id: int | None = None, raw_dir: str | Path | None = None,
                 stall_s: float = 1.0, buffer_s: float = 30.0, raw_prefix: str = "run"):
        self.protocol = protocol
        self.db = db
        self.session_id = session_id
        self.raw_dir = Path(raw_dir) if raw_dir is not None else None
        self.raw_prefix = raw_prefix
        self.stall_s = stall_s
        self.buffer_s = buffer_s
        self.stats = RecorderStats()
        self.epochs: "queue.Queue[Epoch]" = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._writer = DbWriter() if db is not None else None
        self._eeg_inlet = None
        self._marker_inlet = None
        self._raw: Optional[BrainVisionWriter] = None
        self._run: Optional[int] = None
        self._run_id: Optional[int] = None
        self._run_first_sample: int = 0
        self._run_ids: dict[int, int] = {}
        self._pending: list[_Pending] = []
        self._blocks: dict[tuple[int, int], _OpenBlock] = {}
        self._loose_events: list[tuple[dict, float]] = []  # markers outside any block
        self.error: Optional[BaseException] = None

    # -- connection ------------------------------------------------------------------
    def connect(self, markers: bool = True, timeout: float | None = None,
                marker_source_id: str | None = None) -> "Recorder":
        """Resolve the EEG (and marker) stream; check channels and sfreq against the protocol.

        ``marker_source_id`` pins the marker stream to one outlet (the paradigm's in this process).
        """
        import pylsl

        amp = self.protocol.amplifier
        ensure_configured()
        timeout = timeout or amp.resolve_timeout_s
        info = resolve_stream(amp.stream_name, amp.stream_type, timeout, "EEG stream",
                              "start the amplifier's LSL app, or the virtual amplifier: eegloop simulate "
                              f"--name {amp.stream_name}")
        self._eeg_inlet = pylsl.StreamInlet(info, max_buflen=60, processing_flags=pylsl.proc_clocksync
                                            | pylsl.proc_dejitter | pylsl.proc_monotonize)
        full = self._eeg_inlet.info(timeout=5.0)
        labels, types = [], []
        ch = full.desc().child("channels").child("channel")
        while not ch.empty():
            labels.append(ch.child_value("label"))
            types.append(ch.child_value("type") or "EEG")
            ch = ch.next_sibling()
        n = full.channel_count()
        if len(labels) != n:
            labels, types = [f"Ch{i + 1}" for i in range(n)], ["EEG"] * n
        self.ch_names = labels
        self.eeg_idx = [i for i, t in enumerate(types) if t.upper() != "STIM"]
        self.stim_idx = [i for i, t in enumerate(types) if t.upper() == "STIM"]
        if len(self.eeg_idx) != amp.channels:
            raise StreamError(
                f"EEG stream '{full.name()}' has {len(self.eeg_idx)} EEG channels, the protocol expects "
                f"{amp.channels} (amplifier.channels); fix the protocol or the amplifier montage")
        if abs(full.nominal_srate() - amp.sfreq) > 1e-6:
            raise StreamError(
                f"EEG stream '{full.name()}' runs at {full.nominal_srate():g} Hz, the protocol expects "
                f"{amp.sfreq:g} Hz (amplifier.sfreq)")
        self.sfreq = full.nominal_srate()
        self.eeg_names = [labels[i] for i in self.eeg_idx]
        if markers:
            minfo = resolve_stream(amp.marker_stream_name, None, timeout, "marker stream",
                                   "the paradigm (eegloop record) creates it; check amplifier.marker_stream_name",
                                   source_id=marker_source_id)
            self._marker_inlet = pylsl.StreamInlet(minfo, max_buflen=360,
                                                   processing_flags=pylsl.proc_clocksync | pylsl.proc_monotonize)
        # open the connections now, so nothing pushed from here on is missed
        self._eeg_inlet.open_stream(timeout=5.0)
        if self._marker_inlet is not None:
            self._marker_inlet.open_stream(timeout=5.0)
        # the first clock-offset estimate takes ~0.6 s: get it now, not inside the pull loop
        self._eeg_inlet.time_correction(timeout=5.0)
        if self._marker_inlet is not None:
            self._marker_inlet.time_correction(timeout=5.0)
        cap = int(self.buffer_s * 2 * self.sfreq)
        self._buf = np.zeros((n, cap), np.float32)
        self._ts = np.zeros(cap, np.float64)
        self._w = 0  # write position in the buffer
        self._abs0 = 0  # absolute sample index of buffer[0]
        logger.info("recorder: EEG %r (%d ch, %g Hz)%s", full.name(), n, self.sfreq,
                    f", markers {amp.marker_stream_name!r}" if markers else "")
        return self

    # -- runs ----------------------------------------------------------------------
    def begin_run(self, run: int, raw_name: str | None = None) -> None:
        """Start run ``run`` (1-based): a new raw file and, with a database, a run row."""
        with self._lock:
            self._run = run
            if self.raw_dir is not None:
                name = raw_name or f"{self.raw_prefix}-{run:02d}_eeg.vhdr"
                k = 2
                while (self.raw_dir / name).exists():  # a resumed run never overwrites what was recorded
                    name = f"{self.raw_prefix}-{run:02d}_part{k}_eeg.vhdr"
                    k += 1
                self._raw = BrainVisionWriter(self.raw_dir / name, self.ch_names, self.sfreq,
                                              units=["µV" if i in self.eeg_idx else "V" for i in range(len(self.ch_names))])
            self._run_first_sample = self._abs0 + self._w
            s = self.stats
            self._run_snapshot = (s.samples_received, s.samples_expected, s.lost_samples)
            if self.db is not None:
                raw = self._raw.vhdr if self._raw else None
                existing = self.db.find_run(self.session_id, run)
                if existing is None:
                    self._run_id = self.db.add_run(self.session_id, run, raw_path=raw, status="recording")
                else:  # a resumed run: same row, a further raw file
                    self._run_id = existing
                    old = [r for r in self.db.get_runs(self.session_id) if r.id == existing][0]
                    parts = list((old.info or {}).get("raw_parts", [])) + ([old.raw_path] if old.raw_path else [])
                    self.db.update_run(existing, status="recording", raw_path=raw,
                                       info={**(old.info or {}), "raw_parts": parts})
                self._run_ids[run] = self._run_id

    def end_run(self, wait: bool = True) -> dict:
        """Finish the current run: wait for its last epochs, close the raw file, store the accounting."""
        if wait:  # the last epoch needs tmax + margin of signal after its onset, plus transport latency
            deadline = time.monotonic() + self.protocol.epochs.tmax + self.protocol.epochs.margin_s + 2.3
            while time.monotonic() < deadline:
                with self._lock:
                    busy = any(p.run == self._run for p in self._pending)
                if not busy:
                    break
                time.sleep(0.02)
        with self._lock:
            self._flush_blocks(force=True)
            if self._raw is not None:
                self._raw.close()
            s = self.stats
            r0, e0, l0 = getattr(self, "_run_snapshot", (0, 0, 0))
            run_stats = dict(samples_received=s.samples_received - r0, samples_expected=s.samples_expected - e0,
                             lost_samples=s.lost_samples - l0)
            if self.db is not None and self._run_id is not None:
                run_id, loose = self._run_id, list(self._loose_events)
                self._loose_events.clear()
                db, sid = self.db, self.session_id

                def write():
                    db.add_events(sid, [dict(kind=m.get("event", "marker"), lsl_time=t, run_id=run_id,
                                             trial=m.get("trial"), class_id=m.get("class"), payload=m)
                                        for m, t in loose])
                    db.update_run(run_id, status="done", **run_stats, info={"gaps": s.gaps, "stalls": s.stalls,
                                                                            "max_gap_ms": s.max_gap_ms})
                self._writer.submit(write)
            self._raw = None
            self._run = None
            self._run_id = None
        return run_stats

    # -- thread ----------------------------------------------------------------------
    def start(self) -> "Recorder":
        if self._eeg_inlet is None:
            self.connect()
        self._thread = threading.Thread(target=self._loop, name="eegloop-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> RecorderStats:
        """Stop pulling, finish the open run, write everything; returns the statistics."""
        if self._run is not None:
            self.end_run()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        for inlet in (self._eeg_inlet, self._marker_inlet):
            if inlet is not None:
                inlet.close_stream()
        if self.error is not None:
            raise self.error
        return self.stats

    def flush(self) -> None:
        """Wait until the database writer has written everything submitted."""
        if self._writer is not None:
            self._writer.flush()

    def _loop(self) -> None:
        try:
            self._pull_loop()
        except BaseException as exc:  # surfaced by stop()
            logger.error("recorder stopped: %s", exc)
            self.error = exc

    def _pull_loop(self) -> None:
        n = self._buf.shape[0]
        chunk = np.zeros((int(self.sfreq * 2) + 1, n), np.float32)
        first_ts: Optional[float] = None
        last_ts: Optional[float] = None
        last_arrival = time.monotonic()
        stalled = False
        cpu0, wall0 = time.thread_time(), time.monotonic()
        max_samples = chunk.shape[0]
        while not self._stop.is_set():
            samples, ts = self._eeg_inlet.pull_chunk(timeout=0.0, max_samples=max_samples, dest_obj=chunk)
            now = time.monotonic()
            if not ts:
                time.sleep(0.004)  # poll at ~250 Hz: epochs are ready within a few ms of their last sample
            if ts:
                k = len(ts)
                ts = np.asarray(ts)
                interval = (now - last_arrival) * 1000
                if first_ts is not None and interval > self.stats.max_pull_interval_ms:
                    self.stats.max_pull_interval_ms = interval
                    logger.debug("pull interval %.1f ms at sample %d", interval, self.stats.samples_received)
                if stalled:
                    logger.warning("EEG stream resumed after %.1f s", now - last_arrival)
                    stalled = False
                last_arrival = now
                with self._lock:
                    self._append(chunk[:k].T, ts)
                    st = self.stats
                    st.samples_received += k
                    if first_ts is None:
                        first_ts = ts[0]
                    prev = last_ts if last_ts is not None else ts[0]
                    diffs = np.diff(np.concatenate([[prev], ts]))
                    big = diffs > 1.5 / self.sfreq
                    if big.any():
                        st.gaps += int(big.sum())
                    st.max_gap_ms = max(st.max_gap_ms, float(diffs.max()) * 1000)
                    last_ts = ts[-1]
                    st.samples_expected = int(round((last_ts - first_ts) * self.sfreq)) + 1
                    st.lost_samples = max(0, st.samples_expected - st.samples_received)
            elif first_ts is not None and not stalled and now - last_arrival > self.stall_s:
                stalled = True
                msg = f"EEG stream stalled: no samples for {now - last_arrival:.1f} s"
                logger.warning(msg)
                self.stats.stalls.append((float(last_ts or 0.0), round(now - last_arrival, 3)))
            self._pull_markers()
            with self._lock:
                self._cut_ready()
                self._flush_blocks()
            self.stats.cpu_seconds = time.thread_time() - cpu0
            self.stats.wall_seconds = time.monotonic() - wall0

    def _append(self, data: np.ndarray, ts: np.ndarray) -> None:
        k = data.shape[1]
        cap = self._buf.shape[1]
        if self._w + k > cap:  # keep the last buffer_s seconds
            keep = min(self._w, int(self.buffer_s * self.sfreq))
            drop = self._w - keep
            self._buf[:, :keep] = self._buf[:, drop:self._w]
            self._ts[:keep] = self._ts[drop:self._w]
            self._abs0 += drop
            self._w = keep
        self._buf[:, self._w:self._w + k] = data
        self._ts[self._w:self._w + k] = ts
        self._w += k
        if self._raw is not None:
            self._raw.write(data)

    def _pull_markers(self) -> None:
        if self._marker_inlet is None:
            return
        samples, ts = self._marker_inlet.pull_chunk(timeout=0.0)
        for s, t in zip(samples, ts):
            self.add_marker(parse_marker(s[0]), t)

    def add_marker(self, m: dict, t: float) -> None:
        """Handle one marker at LSL time ``t`` (called by the pull thread)."""
        with self._lock:
            self.stats.markers += 1
            ev = m.get("event")
            run = self._run
            if self._raw is not None:
                idx = self._sample_at(t) - self._run_first_sample
                self._raw.marker(max(idx, 0), _describe(m), "Stimulus" if ev == "stim_on" else "Comment")
            key = (int(m.get("run", run or 0)), int(m["block"])) if "block" in m else None
            if ev == "block_start" and key:
                self._blocks[key] = _OpenBlock(run=key[0], block=key[1])
            blk = self._blocks.get(key) if key else None
            if blk is not None:
                blk.events.append((m, t))
                if ev == "block_end":
                    blk.ended_at = t
            else:
                self._loose_events.append((m, t))
            if ev == "stim_on":
                self._pending.append(_Pending(m, t, run or 0))
                if blk is not None:
                    blk.n_stim += 1

    def _sample_at(self, t: float) -> int:
        """Absolute index of the sample nearest LSL time ``t`` (extrapolated if not yet in)."""
        if self._w == 0:
            return self._abs0
        ts = self._ts[:self._w]
        if t > ts[-1]:
            return self._abs0 + self._w - 1 + int(round((t - ts[-1]) * self.sfreq))
        if t < ts[0]:
            return self._abs0 + int(round((t - ts[0]) * self.sfreq))
        i = int(np.searchsorted(ts, t))
        if i > 0 and (i == len(ts) or abs(ts[i - 1] - t) <= abs(ts[i] - t)):
            i -= 1
        return self._abs0 + i

    def _cut_ready(self) -> None:
        e = self.protocol.epochs
        sf = self.sfreq
        margin = int(round(e.margin_s * sf))
        start_off = int(round(e.tmin * sf)) - margin
        length = int(round((e.tmax - e.tmin) * sf)) + 2 * margin
        still = []
        for p in self._pending:
            if self._w == 0 or self._ts[self._w - 1] < p.onset:
                still.append(p)
                continue
            onset_abs = self._sample_at(p.onset)
            a = onset_abs + start_off - self._abs0
            b = a + length
            if b > self._w:
                still.append(p)
                continue
            if a < 0:
                self.stats.epochs_skipped += 1
                blk = self._blocks.get((int(p.marker.get("run", p.run)), int(p.marker.get("block", 0))))
                if blk is not None:
                    blk.n_skipped += 1
                logger.warning("epoch of trial %s skipped: its start is no longer buffered", p.marker.get("trial"))
                continue
            data = self._buf[:, a:b]
            if self.stim_idx:  # the simulator's onset channel: where is the pulse vs where we put the onset?
                onset_pos = -start_off
                pulse = np.flatnonzero(data[self.stim_idx[0]] > 0.5)
                if len(pulse):
                    nearest = pulse[np.argmin(np.abs(pulse - onset_pos))]
                    self.stats.alignment_errors.append(int(nearest - onset_pos))
            m = p.marker
            ep = Epoch(data=data[self.eeg_idx].copy(), label=str(m.get("class", "")), sfreq=sf,
                       tmin=start_off / sf, channel_names=list(self.eeg_names), run=int(m.get("run", p.run)),
                       block=int(m.get("block", 0)), trial=m.get("trial"), onset_lsl=p.onset,
                       ready_lsl=local_clock())
            self.stats.epochs += 1
            self.epochs.put(ep)
            key = (ep.run, ep.block)
            if key in self._blocks:
                self._blocks[key].epochs.append(ep)
        self._pending = still

    def _flush_blocks(self, force: bool = False) -> None:
        done = [k for k, b in self._blocks.items()
                if (b.ended_at is not None and len(b.epochs) + b.n_skipped >= b.n_stim)
                or (force and b.run == self._run)]
        for k in done:
            blk = self._blocks.pop(k)
            if self.db is None:
                continue
            run_id = self._run_ids.get(blk.run, self._run_id)
            self._writer.submit(_block_writer(self.db, self.session_id, run_id, blk,
                                              "done" if blk.ended_at is not None else "aborted"))


def _describe(m: dict) -> str:
    ev = m.get("event", "marker")
    if ev == "stim_on":
        return f"stim_on/{m.get('class', '')}/trial{m.get('trial', '')}"
    if ev == "marker":
        return str(m.get("value", ""))
    parts = [ev] + [f"{k}{m[k]}" for k in ("run", "block") if k in m]
    return "/".join(parts)


def _block_writer(db, session_id: int, run_id: int, blk: _OpenBlock, status: str):
    def write():
        starts = [t for m, t in blk.events if m.get("event") == "block_start"]
        classes = sorted({str(m["class"]) for m, _ in blk.events if m.get("event") == "stim_on" and "class" in m})
        block_id = db.add_block(run_id, blk.block, classes=classes, status=status,
                                started_lsl=starts[0] if starts else None, ended_lsl=blk.ended_at)
        ids = db.add_events(session_id, [dict(kind=m.get("event", "marker"), lsl_time=t, run_id=run_id,
                                              block_id=block_id, trial=m.get("trial"), class_id=m.get("class"),
                                              payload=m) for m, t in blk.events])
        by_trial = {m.get("trial"): i for (m, _), i in zip(blk.events, ids) if m.get("event") == "stim_on"}
        for ep in blk.epochs:
            ep.event_id = by_trial.get(ep.trial)
        db.add_epochs(session_id, blk.epochs)
        logger.info("block %d: %d epochs stored", blk.block, len(blk.epochs))
    return write
