"""The acquisition process: LSL pull, clock correction, epoch cutting, raw files and the block store.

It runs a :class:`~eegloop.recorder.recorder.Recorder` (which owns its three parts and its writer thread) with a
database connection of its own; every write is fenced by the visit's session claim (its owner is the
orchestrator's). Finished epochs go to the worker over a bounded queue — when the worker falls behind, the oldest
epoch is dropped and counted, never the recording. A recorder failure (stream lost, disk full, database error)
is sent to the visit at once (:class:`~.messages.RecorderFailed`), which stops the paradigm at its next frame.

For the operator console, the pulled chunks (batched to ~50 a second) and the stream's markers are sent to the
orchestrator when asked (``Connect.forward_samples``).
"""
from __future__ import annotations

import copy
import queue
import time
from typing import Optional

from .._logging import logger
from .._worker import Worker
from ..errors import EegloopError
from .child import Role
from .messages import (AddTimings, BeginRun, Connect, EndRun, GetStats, RecorderFailed, Samples, StartRecording,
                       StopRecording, Stopped, StreamDescription, Subscribe, Unsubscribe)

__all__ = ["AcquisitionRole", "EpochChannel"]

SAMPLES_EVERY_S = 0.02


class EpochChannel:
    """A multiprocessing queue as a recorder subscriber: when full, the oldest epoch is dropped and counted."""

    def __init__(self, q):
        self.q = q
        self.dropped = 0

    def offer(self, ep) -> bool:
        for _ in range(20):  # bounded: a consumer that died holding the queue's lock never stalls the recorder
            try:
                self.q.put_nowait(ep)
                return True
            except queue.Full:
                try:
                    self.q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    time.sleep(0.0005)  # the queue's feeder thread still holds it
        self.dropped += 1  # this epoch, then
        return False


class AcquisitionRole(Role):
    """Parameters: the protocol, the database (URL and data folder; None records no database), the session
    claim's owner, and the queue epochs go to (the worker's)."""

    name = "acquisition"

    def __init__(self, link, protocol, db_url: Optional[str] = None, data_dir: Optional[str] = None,
                 owner: Optional[str] = None, epochs=None):
        super().__init__(link)
        from ..lsl import ensure_configured

        ensure_configured()
        self.protocol, self.owner = protocol, owner
        self.db = None
        if db_url is not None:
            from ..database import Database

            self.db = Database(db_url, data_dir=data_dir, create=False)
        self.epochs = epochs
        self.rec = None
        self._channel: Optional[EpochChannel] = None
        self._unsub: list = []
        self._told = False
        self._pending: list = []
        self._last_samples = 0.0
        self._watch = Worker.of(self._watch_failure, "eegloop-failure-watch").start()

    def _watch_failure(self, worker: Worker) -> None:
        while not worker.wait_stop(0.02):
            rec = self.rec
            if rec is not None and not self._told and not rec._stopped:
                err = rec.failure
                if err is not None:
                    self._told = True
                    self.link.emit(RecorderFailed(str(err) or type(err).__name__))

    # -- the console's feed ------------------------------------------------------------------------------------
    def _forward(self, ev) -> None:
        from ..bus import Marker, Stream

        if isinstance(ev, (Stream, Marker)):
            self.link.emit(ev)

    def _samples(self, data, ts) -> None:
        import numpy as np

        self._pending.append((data, ts))
        now = time.monotonic()
        if now - self._last_samples >= SAMPLES_EVERY_S:
            self._last_samples = now
            chunks, self._pending = self._pending, []
            self.link.emit(Samples(np.concatenate([c[0] for c in chunks], axis=1),
                                   np.concatenate([np.asarray(c[1]) for c in chunks])))

    # -- commands ----------------------------------------------------------------------------------------------
    def on_Connect(self, cmd: Connect) -> StreamDescription:
        from ..bus import BUS
        from ..recorder.recorder import Recorder

        if cmd.forward_samples and not self._unsub:
            self._unsub = [BUS.subscribe(self._forward), BUS.subscribe_samples(self._samples)]
        if self.rec is not None:
            raise EegloopError("the acquisition is recording already (stop it first)")
        self.rec = Recorder(self.protocol, db=self.db, expect_timings=cmd.expect_timings, owner=self.owner)
        self.rec.connect(markers=cmd.markers, timeout=cmd.timeout, marker_source_id=cmd.marker_source_id,
                         eeg_source_id=cmd.eeg_source_id)
        r = self.rec
        return StreamDescription(r.channels, list(r.ch_names), list(r.eeg_idx), list(r.eeg_names), float(r.sfreq))

    def on_StartRecording(self, cmd: StartRecording) -> None:
        from pathlib import Path

        r = self.rec
        r.session_id = cmd.session_id
        r.raw_dir = Path(cmd.raw_dir) if cmd.raw_dir else None
        r.raw_prefix = cmd.raw_prefix
        r.start()

    def _recorder(self):
        if self.rec is None:
            raise EegloopError("the acquisition is not recording")
        return self.rec

    def on_BeginRun(self, cmd: BeginRun) -> None:
        if cmd.expect_timings is not None:
            self.rec.expect_timings = self.rec.epocher.expect_timings = cmd.expect_timings
        self.rec.begin_run(cmd.run)

    def on_AddTimings(self, cmd: AddTimings) -> None:
        self._recorder().add_timings(cmd.run, cmd.block, cmd.rows)

    def on_EndRun(self, cmd: EndRun) -> dict:
        rec = self._recorder()
        stats = rec.end_run(wait=cmd.wait, status=cmd.status, reason=cmd.reason)
        if cmd.wait:  # the run's blocks are in the database when the reply comes (a quick-train may read them)
            rec.flush()
        return stats

    def on_GetStats(self, _cmd: GetStats):
        rec = self._recorder()
        with rec._lock:
            return copy.deepcopy(rec.stats)

    def on_Subscribe(self, _cmd: Subscribe) -> None:
        if self._channel is None and self.epochs is not None:
            self._channel = EpochChannel(self.epochs)
            self.rec.subscribe(channel=self._channel)

    def on_Unsubscribe(self, _cmd: Unsubscribe) -> None:
        if self._channel is not None:
            self.rec.unsubscribe(self._channel)
            self._channel = None

    def on_StopRecording(self, cmd: StopRecording) -> Stopped:
        rec, self.rec = self._recorder(), None  # a recorder records once: the next phase connects anew
        try:
            stats = rec.stop(status=cmd.status, reason=cmd.reason)  # raises the recorder's failure, if any
        except EegloopError:
            raise
        except Exception as exc:  # the recording's own failure (a full disk, the database): the visit's line
            raise EegloopError(str(exc) or type(exc).__name__) from None
        finally:
            rec.acq.close()
        delays = list(rec.epocher.photon_delays_ms) if rec.epocher is not None else []
        return Stopped(copy.deepcopy(stats), [str(p) for p in rec.raw_files], rec.blocks_stored, delays)

    def close(self) -> None:
        for u in self._unsub:
            u()
        if self.rec is not None:
            try:
                self.rec.stop(status="failed", reason="the visit ended without stopping the recording")
            except Exception as exc:
                logger.warning("stopping the recorder: %s", exc)
            self.rec.acq.close()
        if self.db is not None:
            self.db.engine.dispose()
