"""The recording: the protocol's runs shown by the presenter and recorded by the acquisition process, each block
stored as soon as its last epoch is cut; progress, pauses, the operator's controls and failures handled as they
come; the quick-train between runs (``between_runs``)."""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from .._logging import logger
from .._machine import StealMeter
from ..bus import BUS, Finished, Phase, VisitStats
from ..database import RecordingSummary, SessionStatus
from ..database.claim import SessionClaim
from ..errors import EegloopError
from ..protocol import Protocol
from ..roles.child import ChildFailed
from .context import (RecordingError, RecordResult, VisitContext, VisitPhase, connect, describe_failure,
                      fmt_duration, mark_failed, open_window, start_recording)

__all__ = ["RecordingPhase", "STEAL_NOTE_PCT", "steal_note"]

STEAL_NOTE_PCT = 5.0  # the host's share of the CPU in a block above which the timing line names it


class RecordingPhase(VisitPhase):
    """The protocol's runs: the paradigm in the presenter, the recording in the acquisition process, each block
    stored as soon as its last epoch is cut. Between runs, ``between_runs(context, run)`` (the session's
    quick-train)."""

    name = "recording"

    def __init__(self, between_runs: Optional[Callable] = None):
        self.between_runs = between_runs

    def prepare(self, ctx: VisitContext) -> None:
        from ..lsl import configure_lsl
        from ..montage import load_montage
        from ..paradigm.schedule import Run, make_schedule
        from ..stimuli import load_stimuli

        ctx.db.check_new_subject(ctx.subject)
        configure_lsl(ctx.protocol.amplifier.lsl_scope)
        ctx.stimuli = load_stimuli(ctx.protocol)
        ctx.schedule = make_schedule(ctx.protocol, ctx.stimuli)
        load_montage(ctx.protocol.amplifier.montage, ctx.protocol.base_dir)  # a bad montage: one line now
        todo = [Run(run=r.run, blocks=tuple(b for b in r.blocks if b.block not in ctx.skip_blocks))
                for r in ctx.schedule.runs if ctx.runs is None or r.run in ctx.runs]
        self.todo = _calibration_cap(ctx, [r for r in todo if r.blocks])
        if not self.todo:
            raise EegloopError(f"session {ctx.session_id}: every block is already recorded; nothing to resume")

    def run(self, ctx: VisitContext) -> None:
        db, p, rig = ctx.db, ctx.protocol, ctx.rig
        connect(ctx, expect_timings=True)
        # the amplifier is there: now the session may exist
        db.get_or_add_subject(ctx.subject)
        if ctx.session_id is None:
            ctx.session_id = db.create_session(ctx.subject, p)
            ctx.claims.enter_context(SessionClaim(db, ctx.session_id))
        sid = ctx.session_id
        checks = list(db.get_session(sid).details.signal_checks or [])
        if ctx.signal_check is not None:
            check = ctx.signal_check
            checks.append({**check.to_json(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "forced": bool(ctx.force and check.verdict == "fail")})
        db.update_session_info(sid, channels=rig.stream.channels, signal_checks=checks)
        db.add_stimuli(ctx.stimuli)
        start_recording(ctx, _task(p))
        db.set_session_status(sid, SessionStatus.RECORDING)
        _Recording(ctx, self.todo, self.between_runs).run()


def _calibration_cap(ctx: VisitContext, todo: list) -> list:
    """The runs to show under ``session.calibration_min``: whole blocks in the design's order until that many minutes
    of stimuli (images x image_s) are in, the blocks already recorded (a resumed session) counted first."""
    from ..paradigm.schedule import Run

    cap = ctx.protocol.session.calibration_min
    if cap is None:
        return todo
    from ..protocol.design import calibration_blocks

    image_s = ctx.protocol.paradigm.image_s
    have = sum(len(b.trials) for b in ctx.schedule.blocks if b.block in ctx.skip_blocks) * image_s
    blocks = [b for r in todo for b in r.blocks]
    n = calibration_blocks(cap, [len(b.trials) * image_s for b in blocks], have)
    kept, before = [], 0  # the first n blocks, in their runs
    for r in todo:
        if n > before:
            kept.append(Run(run=r.run, blocks=r.blocks[:n - before]))
        before += len(r.blocks)
    shown = have + sum(len(b.trials) for b in blocks[:n]) * image_s
    left = len(blocks) - n
    if left:
        ctx.say(f"calibration: session.calibration_min {cap:g} is reached after {shown / 60:.1f} min of stimuli; "
                f"the {left} later block(s) are not shown")
    return kept


class _Recording:
    """One recording's state while its runs are shown (the block count, the timings, how it ended)."""

    def __init__(self, ctx: VisitContext, todo: list, between_runs):
        self.ctx, self.todo, self.between_runs = ctx, todo, between_runs
        self.timings: list = []
        self.blocks_done = 0
        self.total_blocks = sum(len(r.blocks) for r in todo)
        self.block_cost = ctx.protocol.paradigm.block_s + ctx.protocol.paradigm.pause_s
        self.n_runs, self.n_blocks = len(ctx.schedule.runs), len(ctx.schedule.blocks)
        self.t_start = time.monotonic()
        self.steal = StealMeter()  # the host's share of the CPU, block by block (dropped frames on a VM follow it)
        self.current_run: Optional[int] = None
        self.failure: Optional[str] = None
        self.marked = False
        self.stopped = None  # the acquisition's Stopped
        self.showing = False  # a run is on screen
        self.captured: dict = {}

    # what the presenter and the rig report while a run is on screen
    def on_event(self, ev) -> None:
        from ..rig import ChildFailedEvent
        from ..roles.messages import AddTimings, BlockShown, GetStats, Interrupted, PausedAfter, Resumed

        say, rig, sid = self.ctx.say, self.ctx.rig, self.ctx.session_id
        if isinstance(ev, Interrupted):
            self.timings += ev.timings
            if self.stopped is None:
                self._add_timings(ev.run, ev.block, ev.timings)
        elif self.marked:  # the visit is stopping: nothing else to record or say
            return
        elif isinstance(ev, BlockShown):
            self.blocks_done += 1
            self.steal.lap()
            rig.acquisition.call(AddTimings(ev.run, ev.block, _timing_rows(ev.timings)))
            st = rig.acquisition.call(GetStats())
            left = (self.total_blocks - self.blocks_done) * self.block_cost
            rej = sum(st.epochs_rejected.values())
            say(f"run {ev.run}/{self.n_runs}  block {ev.block}/{self.n_blocks}  ({len(ev.timings)} images)  elapsed "
                f"{fmt_duration(time.monotonic() - self.t_start)}  ~{fmt_duration(left)} left  epochs {st.epochs}"
                + (f" (+{rej} rejected)" if rej else "") + f"  lost samples {st.lost_samples}")
            BUS.publish(VisitStats(st.epochs, st.lost_samples, st.gaps, ev.dropped_frames, rej))
            BUS.publish(Phase("recording", "pause between blocks", ev.run, self.n_runs, ev.block, self.n_blocks, left,
                              sid))
        elif isinstance(ev, PausedAfter):
            left = (self.total_blocks - self.blocks_done) * self.block_cost
            say(f"paused by the operator after block {ev.block}")
            BUS.publish(Phase("paused", f"after block {ev.block}", ev.run, self.n_runs, ev.block, self.n_blocks,
                              left, sid))
        elif isinstance(ev, Resumed):
            left = (self.total_blocks - self.blocks_done) * self.block_cost
            say("resumed by the operator")
            BUS.publish(Phase("recording", "resumed", ev.run, self.n_runs, ev.block, self.n_blocks, left, sid))
        elif isinstance(ev, ChildFailedEvent):
            self.fail_now(ev.reason)

    def fail_now(self, reason: str) -> None:
        """A process died or the recording failed: the session is marked failed and the recording stopped at once
        (the presenter shows the neutral message meanwhile)."""
        from ..roles.messages import Fail

        if self.failure is None:
            self.failure = reason
        if not self.marked:
            self.marked = True
            rig = self.ctx.rig
            rig.presenter.control(Fail(reason))  # whatever failed, the paradigm stops at its next frame
            self.ctx.say(f"the visit stops: {reason}")
            if self.showing and rig.presenter.failure is None:
                self._take_interrupted(0.5)
            self._stop_recording("failed", reason)
            mark_failed(self.ctx.db, self.ctx.session_id, self.current_run, self.failure)

    def _add_timings(self, run: int, block: int, timings: list) -> None:
        from ..roles.messages import AddTimings

        try:
            self.ctx.rig.acquisition.call(AddTimings(run, block, _timing_rows(timings)), timeout=10)
        except Exception as exc:  # the acquisition may be what failed
            logger.warning("the timings of block %d could not be stored: %s", block, exc)

    def _take_interrupted(self, seconds: float) -> None:
        """The interrupted block's timings, which the presenter sends at its next frame: stored with its epochs."""
        import queue as _queue

        from ..roles.messages import Interrupted

        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            try:
                ev = self.ctx.rig.events.get(timeout=0.01)
            except _queue.Empty:
                continue
            if isinstance(ev, Interrupted):
                self.timings += ev.timings
                self._add_timings(ev.run, ev.block, ev.timings)
                return

    def _stop_recording(self, status: str, reason: Optional[str]) -> None:
        from ..roles.messages import EndRun, StopRecording

        acq = self.ctx.rig.acquisition
        if self.stopped is not None:
            return
        if acq.failure is not None:  # the acquisition itself died: nothing to stop
            self.failure = self.failure or acq.failure
            self.stopped = False
            return
        try:
            if status != "done":
                acq.call(EndRun(wait=False, status=status, reason=f"recording failed: {reason}"), timeout=30)
            self.ctx.rig.stream = None  # the next phase connects anew
            self.stopped = acq.call(StopRecording(status=status, reason=reason), timeout=60)
        except Exception as exc:  # the recorder's own failure: the visit ends with it
            self.failure = self.failure or str(exc)
            logger.error("stopping the recorder: %s", str(exc))
            self.stopped = False

    def run(self) -> None:
        from ..paradigm.presentation import Aborted, RecordingFailed
        from ..roles.messages import BeginRun, EndRun, PushMarker, ShowRun, ShowText

        ctx = self.ctx
        p, say, rig, sid = ctx.protocol, ctx.say, ctx.rig, ctx.session_id
        pres, acq = rig.presenter, rig.acquisition
        aborted = False
        runs_done = 0
        try:
            open_window(ctx)
            pres.call(PushMarker("session_start", {"protocol": p.name,
                                                   "frame_rate_hz": round(rig.display.frame_rate, 3)}))
            if p.paradigm.instructions:
                BUS.publish(Phase("instructions", session_id=sid))
                if p.paradigm.wait_for_space:  # else a terminal without a console shows nothing while it waits
                    ctx.say("instructions on screen: waiting for the subject to press SPACE "
                            "(paradigm.wait_for_space)")
                rig.call(pres, ShowText(p.paradigm.instructions, wait_space=p.paradigm.wait_for_space,
                                        duration=None if p.paradigm.wait_for_space else 1.0))
            for run in self.todo:
                self.current_run = run.run
                BUS.publish(Phase("recording", f"run {run.run}", run.run, self.n_runs, run.blocks[0].block,
                                  self.n_blocks, (self.total_blocks - self.blocks_done) * self.block_cost, sid))
                acq.call(BeginRun(run.run, expect_timings=True))
                self.showing = True
                try:
                    shown = rig.wait(pres.request(ShowRun(run, tuple(ctx.capture_trials))), self.on_event,
                                     grace_s=5.0)  # after a failure: the neutral message, then its answer
                finally:
                    self.showing = False
                if shown.failed is not None:
                    self.timings += [t for t in shown.timings if t not in self.timings]
                else:
                    self.timings += shown.timings
                self.captured.update(shown.captured)
                if shown.failed is not None or rig.failure is not None:
                    self.fail_now(rig.failure or shown.failed)
                    break
                if shown.aborted:
                    aborted = True
                    if shown.partial_block is not None:
                        from ..roles.messages import AddTimings

                        part = [t for t in shown.timings if t.block == shown.partial_block]
                        acq.call(AddTimings(run.run, shown.partial_block, _timing_rows(part)))
                    acq.call(EndRun(status="aborted", reason="aborted by the operator (Escape)"), timeout=60)
                    self.current_run = None
                    say(f"run {run.run} aborted by the operator; every completed block is stored "
                        f"(continue with --resume: unfinished blocks are shown again)")
                    break
                acq.call(EndRun(), timeout=60)
                self.current_run = None
                rig.check()
                runs_done += 1
                if self.between_runs is not None and self._after_run(run.run):
                    aborted = True  # Escape on the rest screen, the model kept: the recording ends here
                    break
            if self.failure is None:
                pres.call(PushMarker("session_end", {"status": "aborted" if aborted else "completed"}))
        except Aborted:  # Escape during the instructions (or on a rest screen with nothing trained)
            aborted = True
        except (ChildFailed, RecordingError, RecordingFailed) as exc:
            self.fail_now(rig.failure or str(exc))
        except BaseException as exc:  # Ctrl-C, a bug: stored as failed, then raised
            self.fail_now(describe_failure(exc))
            raise
        finally:
            if self.failure is None:
                self._stop_recording("done", None)
        if self.failure is not None:
            BUS.publish(Finished("failed", sid))
            raise RecordingError(f"session {sid}: {self.failure}; completed blocks are stored "
                                 f"(continue with: eegloop record/session --resume)")
        self.finish(aborted, runs_done)

    def _after_run(self, run_no: int) -> bool:
        """``between_runs`` after run ``run_no`` (the session's quick-train); True when the recording ends here."""
        from ..paradigm.presentation import Aborted

        try:
            self.between_runs(self.ctx, run_no)
        except (RecordingError, ChildFailed, Aborted):
            raise
        except Exception as exc:  # e.g. the quick-train: it must not end the recording
            logger.debug("after run %d", run_no, exc_info=True)
            self.ctx.say(f"after run {run_no}: {exc} (the recording goes on)")
        self.ctx.rig.check()
        return bool(self.ctx.ended)

    def finish(self, aborted: bool, runs_done: int) -> None:
        ctx = self.ctx
        db, p, sid, d = ctx.db, ctx.protocol, ctx.session_id, ctx.rig.display
        stats = self.stopped.stats
        not_done = [(b, reason) for b, _, st, reason in self.stopped.blocks_stored if st != "done"]
        if not_done and not aborted:
            ctx.say(f"{len(not_done)} block(s) incomplete ({not_done[0][1]}, ...): record them again with --resume")
        steal = _round(self.steal.max_pct)  # the worst block's
        db.set_session_status(sid, SessionStatus.ABORTED if aborted else SessionStatus.INCOMPLETE if not_done
                              else SessionStatus.RECORDED, ended=aborted,
                              recording=RecordingSummary(runs_done=runs_done, frame_rate_hz=d.frame_rate, paced=d.paced,
                                                         samples_received=stats.samples_received,
                                                         lost_samples=stats.lost_samples,
                                                         epochs_rejected=dict(stats.epochs_rejected),
                                                         online_dropped=stats.online_dropped, scheduling=d.scheduling,
                                                         cpu_steal_pct_max=steal))
        durs = np.array([t.duration_s for t in self.timings]) if self.timings else np.array([np.nan])
        err = np.abs(durs - p.paradigm.image_s)
        mmf = [abs(t.marker_lsl - t.actual_onset_lsl) for t in self.timings] or [np.nan]
        BUS.publish(Finished("aborted" if aborted else "recorded", sid))
        raw_dir = db.data_dir / "raw" / f"sub-{ctx.subject}" / f"ses-{sid:04d}"
        ctx.record = RecordResult(
            session_id=sid, frame_rate_hz=d.frame_rate, measured_rate_hz=d.measured_rate, paced=d.paced,
            runs_done=runs_done, aborted=aborted, epochs=db.count_epochs(sid),
            expected_epochs=sum(len(r.trials) for r in self.todo), samples_received=stats.samples_received,
            samples_expected=stats.samples_expected, lost_samples=stats.lost_samples,
            dropped_frames=int(sum(t.dropped_frames for t in self.timings)),
            stim_duration_ms_median=float(np.median(durs) * 1000),
            stim_duration_ms_max_abs_error=float(np.max(err) * 1000),
            marker_minus_flip_ms_max=float(np.max(mmf) * 1000),
            raw_files=sorted(str(f) for f in raw_dir.glob("*.vhdr")), scheduling=d.scheduling,
            captured=self.captured, cpu_steal_pct_max=steal)
        if aborted:
            ctx.ended = "aborted"
        ctx.recording_started = False  # the recorder is stopped: a later phase records anew


def _round(x: Optional[float], digits: int = 1) -> Optional[float]:
    return None if x is None else round(float(x), digits)


def steal_note(pct: Optional[float]) -> str:
    """A clause for the timing line when the host took a noticeable share of a virtual machine's CPU."""
    if pct is None or pct < STEAL_NOTE_PCT:
        return ""
    return (f"; the virtual machine's host took up to {pct:.0f} % of its CPU during a block (steal time): frames "
            f"drop then whatever the priority")


def _timing_rows(timings) -> list[dict]:
    """Trial timings as the block store takes them (keyed by trial)."""
    return [dict(trial=t.trial, **t.as_db()) for t in timings]


def _task(protocol: Protocol) -> str:
    """The protocol's name as a BIDS ``task-`` label (letters and digits)."""
    label = "".join(ch for ch in protocol.name if ch.isascii() and ch.isalnum())
    return label or "eegloop"
