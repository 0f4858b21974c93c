"""What the console shows, kept up to date from the bus (display-rate traces, quality, phase, feedback)."""
from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Optional

import numpy as np

from ..bus import (BUS, FeedbackTrial, Finished, Line, Marker, Phase, SignalChecked, Stream, TrainEpoch,
                   VisitStats)

DISPLAY_HZ = 100.0  # traces are averaged down to about this rate
WINDOW_S = 10.0


class ConsoleState:
    """Subscribes to :data:`~eegloop.bus.BUS`; :meth:`snapshot` gives the page what changed since it last asked."""

    def __init__(self, signal_check=None, line_hz: float = 50.0):
        self.cfg = signal_check  # SignalCheckConfig for the live quality (None: the defaults)
        self.line_hz = line_hz
        self._lock = threading.Lock()
        self.names: list = []
        self.rate = DISPLAY_HZ
        self.sfreq = 0.0
        self._eeg_idx: list = []
        self._k = 1
        self._rest: Optional[np.ndarray] = None
        self._ring: Optional[np.ndarray] = None  # (channels, WINDOW_S * rate), display rate
        self._full: Optional[np.ndarray] = None  # (channels, 1 s) at the stream's rate, for the quality
        self._full_n = 0
        self.seq = 0  # display samples received so far
        self.markers: list = []  # (seq, event, label)
        self.phase: dict = {"name": "starting"}
        self.stats: dict = {}
        self.lines: list = []
        self.train: dict = {}
        self.feedback: list = []
        self.images: list = []  # feedback image paths, indexed as the page asks for them
        self.quality: list = []
        self.bad: list = []  # channels the signal check failed
        self.finished: Optional[dict] = None
        self.samples_in = 0
        self._unsub = []

    # -- wiring ------------------------------------------------------------------------
    def attach(self) -> "ConsoleState":
        self._unsub = [BUS.subscribe(self.on_event), BUS.subscribe_samples(self.on_samples)]
        return self

    def detach(self) -> None:
        for u in self._unsub:
            u()
        self._unsub = []

    def on_event(self, ev) -> None:
        with self._lock:
            if isinstance(ev, Stream):
                self.names = [ev.names[i] for i in ev.eeg_idx]
                self._eeg_idx = list(ev.eeg_idx)
                self.sfreq = ev.sfreq
                self._k = max(1, int(round(ev.sfreq / DISPLAY_HZ)))
                self.rate = ev.sfreq / self._k
                n = len(self.names)
                self._ring = np.zeros((n, int(WINDOW_S * self.rate)), np.float32)
                self._full = np.zeros((n, int(ev.sfreq)), np.float32)
                self._full_n = 0
                self._rest = None
            elif isinstance(ev, Phase):
                self.phase = {k: v for k, v in asdict(ev).items() if v is not None}
                self.phase["since"] = time.time()
            elif isinstance(ev, Line):
                self.lines = (self.lines + [ev.text])[-40:]
            elif isinstance(ev, VisitStats):
                self.stats = asdict(ev)
            elif isinstance(ev, TrainEpoch):
                self.train = asdict(ev)
            elif isinstance(ev, FeedbackTrial):
                d = asdict(ev)
                d["image"] = None
                if ev.image_path:
                    self.images.append(str(ev.image_path))
                    d["image"] = len(self.images) - 1
                d.pop("image_path", None)
                self.feedback.append(d)
            elif isinstance(ev, SignalChecked):
                self.bad = list(ev.check.failed())
                self.quality = [{"name": c.name, "verdict": c.verdict, "rms": c.rms_uv, "line": c.line_uv,
                                 "std": c.std_uv} for c in ev.check.channels]
            elif isinstance(ev, Marker):
                if ev.event in ("stim_on", "block_start", "block_end", "marker"):
                    self.markers = (self.markers + [(self.seq, ev.event, ev.label)])[-400:]
            elif isinstance(ev, Finished):
                if ev.status == "recorded":  # the recording's end; a visit goes on (quick-train, feedback)
                    self.phase = {"name": "recorded", "detail": f"session {ev.session_id}", "since": time.time()}
                else:
                    self.finished = asdict(ev)

    def on_samples(self, data: np.ndarray, ts) -> None:
        """The recorder's chunk (all channels): averaged down to display rate into the 10 s ring (recorder thread:
        a few array copies)."""
        with self._lock:
            if self._ring is None:
                return
            x = data[self._eeg_idx]
            self.samples_in += x.shape[1]
            n_full = self._full.shape[1]
            if x.shape[1] >= n_full:
                self._full[:] = x[:, -n_full:]
            else:
                self._full = np.roll(self._full, -x.shape[1], axis=1)
                self._full[:, -x.shape[1]:] = x
            self._full_n = min(n_full, self._full_n + x.shape[1])
            if self._rest is not None:
                x = np.concatenate([self._rest, x], axis=1)
            m = (x.shape[1] // self._k) * self._k
            self._rest = x[:, m:] if m < x.shape[1] else None
            if m == 0:
                return
            d = x[:, :m].reshape(x.shape[0], m // self._k, self._k).mean(2)
            w = self._ring.shape[1]
            d = d[:, -w:]
            self._ring = np.roll(self._ring, -d.shape[1], axis=1)
            self._ring[:, -d.shape[1]:] = d
            self.seq += d.shape[1]

    # -- quality -----------------------------------------------------------------------
    def update_quality(self) -> None:
        """Per-channel verdicts over the last second at the stream's rate (the console's thread, once a second).

        Written for the paradigm's sake rather than taken from :func:`~eegloop.recorder.signal_check.assess`:
        one FFT per channel in groups of 8 with a pause between groups, so this thread never holds the GIL for
        more than a fraction of a millisecond at a time (assess's filters held it for tens of ms at 128
        channels: frames were dropped)."""
        from ..protocol import SignalCheckConfig

        cfg = self.cfg or SignalCheckConfig()
        with self._lock:
            if self._full is None or self._full_n < self._full.shape[1]:
                return
            x, names, sf = self._full.copy(), list(self.names), self.sfreq
        n = x.shape[1]
        f = np.fft.rfftfreq(n, 1 / sf)
        line = (f >= self.line_hz - 1.5) & (f <= self.line_hz + 1.5)
        band = (f >= 1.0) & (f <= min(40.0, 0.45 * sf))
        q = []
        for g in range(0, len(names), 8):
            xs = x[g:g + 8].astype(np.float64)
            std = xs.std(1)
            sat = (np.abs(xs) >= cfg.rail_uv).mean(1)
            p = 2 * np.abs(np.fft.rfft(xs - xs.mean(1, keepdims=True), axis=1)) ** 2 / n ** 2
            line_uv, rms_uv = np.sqrt(p[:, line].sum(1)), np.sqrt(p[:, band].sum(1))
            for i in range(len(xs)):
                v = "pass"
                if sat[i] >= 0.01 or std[i] < cfg.flat_uv or line_uv[i] >= cfg.line_fail_uv or rms_uv[i] >= cfg.rms_fail_uv:
                    v = "fail"
                elif line_uv[i] >= cfg.line_warn_uv or rms_uv[i] >= cfg.rms_warn_uv:
                    v = "warn"
                q.append({"name": names[g + i], "verdict": v, "rms": round(float(rms_uv[i]), 1),
                          "line": round(float(line_uv[i]), 1), "std": round(float(std[i]), 1)})
            time.sleep(0.002)  # let the paradigm's thread have the GIL
        with self._lock:
            self.quality = q

    # -- the page ----------------------------------------------------------------------
    def snapshot(self, since: int) -> dict:
        """Everything the page shows; traces only from display sample ``since`` on (at most the 10 s window)."""
        with self._lock:
            out = {"seq": self.seq, "rate": self.rate, "names": self.names, "phase": self.phase,
                   "stats": self.stats, "lines": self.lines[-8:], "train": self.train, "quality": self.quality,
                   "bad": self.bad, "feedback": self.feedback, "finished": self.finished,
                   "window_s": WINDOW_S}
            if self._ring is not None:
                new = int(min(max(self.seq - since, 0), self._ring.shape[1]))
                out["traces"] = np.round(np.nan_to_num(self._ring[:, self._ring.shape[1] - new:]), 1).tolist() if new else []
                out["markers"] = [(s, e, lab) for s, e, lab in self.markers if s >= since]
            return out
