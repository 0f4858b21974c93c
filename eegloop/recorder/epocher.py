"""The epocher: a ring buffer of signal, the epoch window, cutting, block bookkeeping.

It knows nothing about LSL or the database. The recorder feeds it samples
(:meth:`Epocher.append`) and markers (:meth:`Epocher.add_marker`); it cuts an
epoch around each ``stim_on`` onset once the window's last sample is in, and
hands each finished block out as one :class:`~eegloop.types.BlockRecord`
(stored by :mod:`eegloop.recorder.store` in one transaction). An epoch whose
samples span a timestamp gap or hold a non-finite value is never a valid
epoch: it is kept as a :class:`~eegloop.types.RejectedEpoch` with its reason.

:func:`epoch_window` is the one definition of the window (``tmin``, ``tmax``,
margins -> sample offsets) used by the recorder, the importers and the
simulator alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .._logging import logger
from ..lsl import local_clock
from ..types import BlockRecord, Epoch, RejectedEpoch

__all__ = ["EpochWindow", "epoch_window", "check_epoch", "check_onset", "Epocher", "GAP_PERIODS"]

GAP_PERIODS = 1.5  # a step between timestamps larger than this many sample periods is a gap


@dataclass(frozen=True)
class EpochWindow:
    """Sample offsets of an epoch relative to its onset sample.

    ``start`` is the offset of the first sample (negative with a margin or a
    negative ``tmin``), ``length`` the number of samples (analysis window plus
    ``margin_s`` before it and ``right_margin_s``, default ``margin_s``, after it, for filtering).
    """

    start: int
    length: int
    sfreq: float

    @property
    def tmin(self) -> float:
        """Time of the first sample relative to the onset, seconds."""
        return self.start / self.sfreq

    @property
    def stop(self) -> int:
        return self.start + self.length


def epoch_window(epochs, sfreq: float) -> EpochWindow:
    """The window of :class:`~eegloop.protocol.EpochsConfig` ``epochs`` at ``sfreq`` Hz."""
    margin = int(round(epochs.margin_s * sfreq))
    right_s = getattr(epochs, "right_margin_s", None)
    right = margin if right_s is None else int(round(right_s * sfreq))
    start = int(round(epochs.tmin * sfreq)) - margin
    length = int(round((epochs.tmax - epochs.tmin) * sfreq)) + margin + right
    return EpochWindow(start, length, float(sfreq))


def check_epoch(data: np.ndarray, times: np.ndarray, sfreq: float) -> Optional[tuple[str, str]]:
    """``(reason, detail)`` if the epoch must be rejected, else None.

    Rejected: a step between consecutive timestamps larger than
    :data:`GAP_PERIODS` sample periods (samples lost, a clock reset), time
    running backwards, or a NaN/inf sample.
    """
    if len(times) > 1:
        d = np.diff(times)
        worst = float(np.max(np.abs(d)))
        if worst > GAP_PERIODS / sfreq or float(np.min(d)) <= 0:
            return "gap", f"timestamps step by {worst * 1000:.1f} ms inside the epoch (1 sample = {1000 / sfreq:.2f} ms)"
    if not np.isfinite(times).all():
        return "non-finite", "non-finite timestamps"
    bad = ~np.isfinite(data)
    if bad.any():
        ch = int(np.flatnonzero(bad.any(axis=1))[0])
        return "non-finite", f"{int(bad.sum())} NaN/inf samples (first in channel index {ch})"
    return None


def check_onset(sample_time: float, onset: float, sfreq: float) -> Optional[tuple[str, str]]:
    """``("gap", detail)`` when the sample nearest the onset is more than :data:`GAP_PERIODS` periods away
    from it (the onset fell into a gap: the window would be shifted), else None."""
    near = abs(sample_time - onset)
    if near > GAP_PERIODS / sfreq:
        return "gap", f"no sample within {near * 1000:.1f} ms of the onset"
    return None


@dataclass
class _Pending:
    marker: dict
    onset: float  # the marker's time plus timing.static_offset_ms
    run: int
    marker_t: float = 0.0


@dataclass
class _OpenBlock:
    record: BlockRecord
    ended_at: Optional[float] = None
    has_timings: bool = False
    keys: set = field(default_factory=set)


class Epocher:
    """Buffer, cut and account for epochs of one stream.

    Parameters
    ----------
    epochs : EpochsConfig
        The window.
    sfreq : float
    n_channels : int
        Channels in the stream (EEG and others).
    eeg_idx, stim_idx : list of int
        EEG channels (kept in epochs) and an onset channel (alignment check), if any.
    eeg_names : list of str
    buffer_s : float
        Seconds of signal kept for cutting.
    expect_timings : bool
        A block is finished only once the paradigm has handed over its trial timings.
    timing : TimingConfig | None
        ``static_offset_ms`` is added to every stimulus marker's time before its epoch is cut; with
        ``photo_idx`` (the photodiode channel) each stimulus's marker-to-photon delay is measured
        (:func:`~eegloop.recorder.timing.photon_onset`), kept in :attr:`photon_delays_ms` and in the block.
    """

    def __init__(self, epochs, sfreq: float, n_channels: int, eeg_idx: list[int], stim_idx: list[int],
                 eeg_names: list[str], buffer_s: float = 30.0, expect_timings: bool = False, timing=None,
                 photo_idx: Optional[int] = None):
        self.window = epoch_window(epochs, sfreq)
        self.sfreq = float(sfreq)
        self.eeg_idx, self.stim_idx, self.eeg_names = list(eeg_idx), list(stim_idx), list(eeg_names)
        self.buffer_s = buffer_s
        self.expect_timings = expect_timings
        cap = int(buffer_s * 2 * sfreq)
        self._buf = np.zeros((n_channels, cap), np.float32)
        self._ts = np.zeros(cap, np.float64)
        self._w = 0  # write position in the buffer
        self.abs0 = 0  # absolute sample index of buffer[0]
        self._pending: list[_Pending] = []
        self._blocks: dict[tuple[int, int], _OpenBlock] = {}
        self._timings: dict[tuple[int, int], list] = {}  # arrived before the block's markers
        self.loose_events: list[tuple[dict, float]] = []  # markers outside any block
        self.n_epochs = 0
        self.rejected: dict[str, int] = {}
        self.alignment_errors: list[int] = []
        self.timing = timing
        self.offset_s = timing.static_offset_ms / 1000 if timing is not None else 0.0
        self.photo_idx = photo_idx
        self.photon_delays_ms: list[float] = []  # one per stimulus whose photodiode onset was found
        self.photon_trials: list = []  # the trial of each of them
        self.photon_missed = 0  # stimuli whose photodiode onset was not found

    # -- signal -------------------------------------------------------------------
    @property
    def position(self) -> int:
        """Absolute index of the next sample."""
        return self.abs0 + self._w

    def append(self, data: np.ndarray, ts: np.ndarray) -> None:
        """Add samples ``data`` (n_channels, k) with their timestamps."""
        k = data.shape[1]
        cap = self._buf.shape[1]
        if k > cap:  # never happens with the recorder's chunk sizes; keep the newest
            data, ts = data[:, -cap:], ts[-cap:]
            self.abs0 += k - cap
            k = cap
        if self._w + k > cap:  # keep the last buffer_s seconds
            keep = min(self._w, int(self.buffer_s * self.sfreq))
            drop = self._w - keep
            self._buf[:, :keep] = self._buf[:, drop:self._w]
            self._ts[:keep] = self._ts[drop:self._w]
            self.abs0 += drop
            self._w = keep
        self._buf[:, self._w:self._w + k] = data
        self._ts[self._w:self._w + k] = ts
        self._w += k

    def sample_at(self, t: float) -> int:
        """Absolute index of the sample nearest time ``t`` (extrapolated if not yet in)."""
        if self._w == 0:
            return self.abs0
        ts = self._ts[:self._w]
        if t > ts[-1]:
            return self.abs0 + self._w - 1 + int(round((t - ts[-1]) * self.sfreq))
        if t < ts[0]:
            return self.abs0 + int(round((t - ts[0]) * self.sfreq))
        i = int(np.searchsorted(ts, t))
        if i > 0 and (i == len(ts) or abs(ts[i - 1] - t) <= abs(ts[i] - t)):
            i -= 1
        return self.abs0 + i

    # -- markers ------------------------------------------------------------------
    def add_marker(self, m: dict, t: float, run: Optional[int]) -> None:
        ev = m.get("event")
        try:
            key = (int(m.get("run", run or 0)), int(m["block"])) if "block" in m else None
        except (TypeError, ValueError):
            key = None
        if ev == "block_start" and key:
            planned = m.get("trials")
            rec = BlockRecord(run=key[0], block=key[1], n_planned=int(planned) if isinstance(planned, int) else None)
            ob = _OpenBlock(rec)
            if key in self._timings:
                rec.timings = self._timings.pop(key)
                ob.has_timings = True
            self._blocks[key] = ob
        ob = self._blocks.get(key) if key else None
        if ob is not None:
            ob.record.events.append((m, t))
            if ev == "block_end":
                ob.ended_at = t
                ob.record.ended = True
        else:
            self.loose_events.append((m, t))
        if ev == "stim_on":
            self._pending.append(_Pending(m, t + self.offset_s, run or 0, t))

    def add_timings(self, run: int, block: int, timings: list[dict], aborted: bool = False) -> None:
        """The paradigm's trial timings of a block (``dict(trial=..., **TrialTiming.as_db())``)."""
        ob = self._blocks.get((run, block))
        if ob is None:
            self._timings[(run, block)] = list(timings)
            return
        ob.record.timings = list(timings)
        ob.has_timings = True

    # -- cutting -----------------------------------------------------------------
    def cut_ready(self) -> list[Epoch]:
        """Cut every pending epoch whose last sample is in; returns the valid ones."""
        win = self.window
        out, still = [], []
        for p in self._pending:
            if self._w == 0 or self._ts[self._w - 1] < p.onset:
                still.append(p)
                continue
            onset_abs = self.sample_at(p.onset)
            a = onset_abs + win.start - self.abs0
            b = a + win.length
            if b > self._w:
                still.append(p)
                continue
            if a < 0:
                self._reject(p, "not-buffered", "its start is no longer in the recorder's buffer")
                continue
            i = onset_abs - self.abs0
            data = self._buf[:, a:b]
            if self.photo_idx is not None:
                self._photon(p, data[self.photo_idx], self._ts[a:b])
            problem = (check_onset(self._ts[i], p.onset, self.sfreq) if 0 <= i < self._w else
                       ("gap", "no sample near the onset")) or check_epoch(data[self.eeg_idx], self._ts[a:b], self.sfreq)
            if problem is not None:
                self._reject(p, *problem)
                continue
            if self.stim_idx:  # the simulator's onset channel: where is the pulse vs where we put the onset?
                onset_pos = -win.start
                pulse = np.flatnonzero(data[self.stim_idx[0]] > 0.5)
                if len(pulse):
                    nearest = pulse[np.argmin(np.abs(pulse - onset_pos))]
                    self.alignment_errors.append(int(nearest - onset_pos))
            m = p.marker
            ep = Epoch(data=data[self.eeg_idx].copy(), label=str(m.get("class", "")), sfreq=self.sfreq,
                       tmin=win.tmin, channel_names=list(self.eeg_names), run=_int(m.get("run"), p.run),
                       block=_int(m.get("block"), 0), trial=m.get("trial"), onset_lsl=p.onset,
                       ready_lsl=local_clock())
            self.n_epochs += 1
            ob = self._blocks.get((ep.run, ep.block))
            if ob is not None:
                ob.record.epochs.append(ep)
            out.append(ep)
        self._pending = still
        return out

    def _photon(self, p: _Pending, x: np.ndarray, ts: np.ndarray) -> None:
        from .timing import photon_onset

        t = photon_onset(x, ts, p.marker_t, self.timing.max_delay_ms / 1000, self.timing.invert)
        if t is None:
            self.photon_missed += 1
            return
        d = round((t - p.marker_t) * 1000, 3)
        self.photon_delays_ms.append(d)
        self.photon_trials.append(p.marker.get("trial"))
        key = (_int(p.marker.get("run"), p.run), _int(p.marker.get("block"), 0))
        ob = self._blocks.get(key)
        if ob is not None and p.marker.get("trial") is not None:
            ob.record.photon_delays[p.marker.get("trial")] = d

    def _reject(self, p: _Pending, reason: str, detail: str) -> None:
        m = p.marker
        r = RejectedEpoch(label=str(m.get("class", "")), run=_int(m.get("run"), p.run), block=_int(m.get("block"), 0),
                          reason=reason, trial=m.get("trial"), onset_lsl=p.onset, detail=detail)
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        logger.warning("epoch of trial %s rejected (%s): %s", m.get("trial"), reason, detail)
        ob = self._blocks.get((r.run, r.block))
        if ob is not None:
            ob.record.rejected.append(r)

    def pending_in_run(self, run: int) -> bool:
        return any(p.run == run for p in self._pending)

    # -- blocks ------------------------------------------------------------------
    def finished_blocks(self, force_run: Optional[int] = None, reason: Optional[str] = None) -> list[BlockRecord]:
        """Blocks whose every epoch is cut (and timings are in); with ``force_run``, every open block of
        that run too: stimuli whose epoch could not be cut are rejected as ``stopped``, and ``reason`` says why
        the block is incomplete when it did not end."""
        out = []
        for key, ob in list(self._blocks.items()):
            rec = ob.record
            complete = (ob.ended_at is not None and len(rec.epochs) + len(rec.rejected) >= rec.n_stimuli
                        and (ob.has_timings or not self.expect_timings))
            if not complete and not (force_run is not None and rec.run == force_run):
                continue
            if not complete:
                cut = {e.trial for e in rec.epochs} | {r.trial for r in rec.rejected}
                for p in [p for p in self._pending if (_int(p.marker.get("run"), p.run), _int(p.marker.get("block"), 0))
                          == key]:
                    if p.marker.get("trial") not in cut:
                        self._reject(p, "stopped", "the recording stopped before the end of its window")
                    self._pending.remove(p)
                rec.reason = reason or rec.reason
                rec.ended = ob.ended_at is not None
            del self._blocks[key]
            out.append(rec)
        return out


def _int(v, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default
