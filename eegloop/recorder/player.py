"""Replay a recording as live LSL streams (like MNE-LSL's player).

:class:`Player` pushes a :class:`~eegloop.recorder.importers.Recording` as an
EEG outlet (channel labels in the XML description) and a marker outlet, on
the real clock (``speed`` > 1 is faster), so ``eegloop record`` / ``feedback``
can be rehearsed on real data. Markers mapped to a class by the events map are
sent as eegloop ``stim_on`` JSON markers (with ``run``, ``block``, ``trial``,
``class``), so the recorder cuts epochs exactly as it does live; other markers
pass through as they are. Sample and marker timestamps keep the file's
spacing (divided by ``speed``), each marker on the time of its sample.
"""
from __future__ import annotations

import json
import time
from typing import Optional

import numpy as np

from .._logging import logger
from .._worker import Worker
from ..lsl import ensure_configured
from .importers import Recording, marker_class

__all__ = ["Player"]


class Player:
    """Stream ``rec`` on LSL as ``name`` (EEG) and ``marker_name`` (markers).

    Parameters
    ----------
    rec : Recording
    name, marker_name : str
        LSL stream names.
    events : dict
        Marker value -> class; mapped markers become ``stim_on`` markers.
    speed : float
        1.0 is real time; ``inf`` pushes everything at once (no pacing). Must be > 0.
    sfreq : float | None
        Nominal rate announced on the stream (default: the recording's, rounded to 0.01 Hz).
    block_s : float
        Block length used to number blocks in the markers (like the importer).
    """

    def __init__(self, rec: Recording, name: str = "eegloop-replay", marker_name: str = "eegloop-markers",
                 events: Optional[dict] = None, speed: float = 1.0, sfreq: float | None = None,
                 block_s: float = 25.0, chunk_s: float = 0.02):
        self.rec, self.name, self.marker_name = rec, name, marker_name
        self.events = dict(events or {})
        self.speed = float(speed)
        if not self.speed > 0:  # also nan
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.sfreq = float(sfreq if sfreq is not None else round(rec.sfreq, 2))
        self.block_s = block_s
        self.chunk = max(1, int(round(chunk_s * self.sfreq)))
        self._worker: Optional[Worker] = None
        self.samples_pushed = 0
        self.markers_pushed = 0
        # each marker on the sample nearest its time
        idx = np.searchsorted(rec.times, [t for t, _ in rec.markers])
        idx = np.clip(idx, 0, len(rec.times) - 1)
        for k, (t, _) in enumerate(rec.markers):
            if idx[k] > 0 and abs(rec.times[idx[k] - 1] - t) <= abs(rec.times[idx[k]] - t):
                idx[k] -= 1
        self._marker_idx = idx
        self._marker_msgs = self._messages()

    def _messages(self) -> list[str]:
        out, trial = [], 0
        t0 = self.rec.times[0]
        for t, value in self.rec.markers:
            cls = marker_class(value, self.events) if self.events else None
            if cls:
                trial += 1
                block = int((t - t0) // self.block_s) + 1
                out.append(json.dumps({"event": "stim_on", "run": 1, "block": block, "trial": trial, "class": cls,
                                       "value": value}))
            else:
                out.append(value)
        return out

    def start(self, wait_for_consumers: float = 0.0) -> "Player":
        """Create the outlets and start streaming (after a consumer connected, up to ``wait_for_consumers`` s)."""
        self._wait = wait_for_consumers
        ensure_configured()
        import pylsl

        info = pylsl.StreamInfo(self.name, "EEG", len(self.rec.ch_names), self.sfreq, pylsl.cf_float32,
                                f"eegloop-replay-{self.name}")
        chans = info.desc().append_child("channels")
        for lab, typ, unit in zip(self.rec.ch_names, self.rec.ch_types, self.rec.units):
            ch = chans.append_child("channel")
            ch.append_child_value("label", lab)
            ch.append_child_value("unit", "microvolts" if unit == "µV" else unit)
            ch.append_child_value("type", typ.upper())  # the recording's types: only EEG is decoded again
        self._eeg = pylsl.StreamOutlet(info, chunk_size=self.chunk)
        minfo = pylsl.StreamInfo(self.marker_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                 f"eegloop-replay-markers-{self.marker_name}")
        self._mk = pylsl.StreamOutlet(minfo)
        self._worker = Worker.of(self._run, "eegloop-player")
        self._worker.start()
        return self

    def wait_for_consumers(self, timeout: float = 10.0) -> bool:
        return self._eeg.wait_for_consumers(timeout) and self._mk.wait_for_consumers(timeout)

    def _run(self, worker: Worker) -> None:
        import pylsl

        if self._wait > 0:  # a recorder started next gets the file from its first sample
            self._eeg.wait_for_consumers(self._wait)
            self._mk.wait_for_consumers(self._wait)
            time.sleep(0.2)
        data = np.ascontiguousarray(self.rec.data.T, dtype=np.float32)
        n = len(data)
        step = 1.0 / (self.sfreq * self.speed)
        t0 = pylsl.local_clock() + (0.1 if np.isfinite(self.speed) else 0.0)  # inf: nothing to pace
        m = 0
        i = 0
        while i < n and not worker.stopping:
            j = min(n, i + self.chunk)
            due = t0 + (j - 1) * step
            delay = due - pylsl.local_clock()
            if delay > 0:
                time.sleep(delay)
            # markers whose sample is in this chunk go out first, stamped with their sample's time
            while m < len(self._marker_idx) and self._marker_idx[m] < j:
                self._mk.push_sample([self._marker_msgs[m]], t0 + self._marker_idx[m] * step)
                m += 1
                self.markers_pushed += 1
            self._eeg.push_chunk(data[i:j], timestamp=list(t0 + np.arange(i, j) * step))
            self.samples_pushed = j
            i = j
        logger.info("replay of %s done: %d samples, %d markers", self.rec.source, self.samples_pushed,
                    self.markers_pushed)

    def wait(self) -> None:
        while self._worker is not None and self._worker.alive:
            self._worker.join(0.2)
        if self._worker is not None and self._worker.error is not None:
            raise self._worker.error

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop(5)
