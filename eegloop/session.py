"""A subject's visit: phases run in order by this process (the orchestrator) over the processes of one rig.

Who owns what
    The rig (:mod:`eegloop.rig`) starts one process per role and keeps them for the whole visit. The **presenter**
    process owns the subject's window — one window from the instructions to the last feedback image — its frame
    loop and the marker outlet. The **acquisition** process records (LSL, raw files, blocks into the database);
    with ``--simulate`` the **amplifier** process is the simulated subject; the **worker** process decodes and
    generates during the feedback block. This process runs the phases below, holds the session's claim, trains
    the decoder, and hosts the console and the bus.

When the quick-train runs
    After the run by whose end ``training.quick_train_after_min`` minutes are recorded, while the subject rests
    (the presenter shows the rest screen with the time left), before the next run; if the recording ends first,
    right after it (:class:`QuickTrainPhase`). It runs in this process, within ``training.budget_s``.

The phases (each a class with ``run(context)``; a command runs a list of them, see :func:`phases_for`)::

    record   : SignalCheckPhase → RecordingPhase
    feedback : FeedbackPhase
    session  : SignalCheckPhase → RecordingPhase (→ quick-train between runs) → QuickTrainPhase → FeedbackPhase
               → EvaluationPhase → ReportPhase

:class:`Visit` runs a list: every phase's ``prepare`` first (cheap checks, before any process starts or anything is
written), then the rig, then each phase's ``run``; the rig is closed as soon as no later phase needs it (the
report's cross-validation has the machine to itself). A phase that ends the visit early (Escape, the operator's
abort) sets ``context.ended``; the phases after it do not run.

A child process that dies or hangs, a lost stream, a full disk or a lost session claim stops the visit within a
second: the paradigm stops at its next frame (the subject sees a neutral message), every completed block stays
stored, session and run are marked ``failed`` with the reason, the other processes are stopped, and
:class:`RecordingError` says it in one line (continue with ``--resume``).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ._logging import logger
from ._machine import StealMeter
from ._worker import Worker
from .bus import BUS, CONTROLS, Finished, Phase, SignalChecked, TrainEpoch, VisitStats
from .database import Database
from .database.claim import SessionClaim
from .errors import EegloopError
from .protocol import Protocol
from .roles.child import ChildFailed
from .types import FEEDBACK_BLOCK_BASE

__all__ = ["RecordResult", "VisitResult", "record_session", "run_visit", "RecordingError", "SignalCheckFailed",
           "gate_on_signal", "Visit", "VisitContext", "VisitPhase", "SignalCheckPhase", "RecordingPhase",
           "QuickTrainPhase", "FeedbackPhase", "EvaluationPhase", "ReportPhase", "phases_for",
           "resumable_session", "FEEDBACK_BLOCK_BASE"]

STEAL_NOTE_PCT = 5.0  # the host's share of the CPU in a block above which the timing line names it


class RecordingError(EegloopError):
    """The recording failed during a visit; what was recorded before is stored."""


class SignalCheckFailed(EegloopError):
    """The signal check failed on some channels and the visit was not forced."""


@dataclass
class RecordResult:
    session_id: int
    frame_rate_hz: float
    measured_rate_hz: float
    paced: bool
    runs_done: int
    aborted: bool
    epochs: int
    expected_epochs: int
    samples_received: int
    samples_expected: int
    lost_samples: int
    dropped_frames: int
    stim_duration_ms_median: float
    stim_duration_ms_max_abs_error: float
    marker_minus_flip_ms_max: float
    raw_files: list = field(default_factory=list)
    scheduling: str = ""  # the presenter's priority, obtained or refused (one line)
    cpu_steal_pct_max: Optional[float] = None  # the worst block's share of the CPU the host took (virtual machines)
    captured: dict = field(default_factory=dict)  # trial -> frame (capture_trials)


@dataclass
class VisitResult:
    session_id: int
    record: Optional[RecordResult]
    model_id: Optional[int]
    train_seconds: float
    evaluation: Optional[dict]
    feedback: Optional[object]
    report: Optional[Path]


@dataclass
class Trained:
    """What the quick-train produced (kept the moment it exists: Escape on the rest screen must not lose it)."""

    model: object = None  # TrainedModel
    seconds: float = 0.0
    encoder: object = None
    encoder_error: Optional[str] = None


@dataclass
class VisitContext:
    """Everything the phases of one visit share: what was asked, and what each phase found or made."""

    protocol: Protocol
    subject: str
    db: Database
    say: Callable[[str], None]
    progress: Optional[Callable[[str], None]] = None
    simulate: bool = False
    force: bool = False
    feedback_mode: Optional[str] = None
    feedback_trials: Optional[int] = None
    trial_offset: int = 0
    report_dir: Optional[Path] = None
    session_id: Optional[int] = None
    skip_blocks: frozenset = frozenset()
    runs: Optional[list] = None
    capture_trials: tuple = ()
    # filled in as the visit goes
    rig: object = None  # eegloop.rig.Rig
    claims: Optional[contextlib.ExitStack] = None
    stimuli: object = None
    schedule: object = None
    signal_check: object = None
    recording_started: bool = False  # the acquisition records into the session (connected, writer running)
    record: Optional[RecordResult] = None
    trained: Trained = field(default_factory=Trained)
    feedback: object = None
    evaluation: Optional[dict] = None
    report: Optional[Path] = None
    ended: Optional[str] = None  # "aborted": the phases after this one do not run
    window_open: bool = False


class VisitPhase:
    """One step of a visit. ``prepare`` runs before any process starts (checks that cost nothing); ``run`` does
    the work. ``uses_rig``: whether the phase needs the visit's processes."""

    name = "phase"
    uses_rig = True

    def prepare(self, ctx: VisitContext) -> None:
        pass

    def run(self, ctx: VisitContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Visit:
    """Run ``phases`` for ``context``: prepare them all, start the rig, run each, close the rig when no later phase
    needs it; the session claims taken meanwhile are released at the end."""

    def __init__(self, context: VisitContext, phases: list):
        self.ctx, self.phases = context, list(phases)

    def run(self) -> VisitContext:
        from .rig import Rig

        ctx = self.ctx
        if ctx.db.url.startswith("sqlite") and ctx.db.sqlite_path is None:
            raise EegloopError("--db: a visit's processes share the database: give a SQLite file or a database "
                               "server, not an in-memory SQLite")
        for ph in self.phases:
            ph.prepare(ctx)
        last_rig = max((i for i, ph in enumerate(self.phases) if ph.uses_rig), default=-1)
        with contextlib.ExitStack() as claims:
            ctx.claims = claims
            if ctx.session_id is not None:  # a resumed or continued session: this process's from now on
                claims.enter_context(SessionClaim(ctx.db, ctx.session_id))
            feedback = any(isinstance(ph, FeedbackPhase) for ph in self.phases)
            rig = Rig(ctx.protocol, ctx.simulate, ctx.db, say=ctx.say, worker=feedback) if last_rig >= 0 else None
            try:
                if rig is not None:
                    ctx.rig = rig.start()
                for i, ph in enumerate(self.phases):
                    if ctx.ended:
                        break
                    ph.run(ctx)
                    if i == last_rig:
                        rig.close()
            except BaseException as exc:
                from .paradigm.presentation import Aborted

                if isinstance(exc, Aborted) and ctx.session_id is not None:  # Escape with nothing to keep
                    ctx.db.set_session_status(ctx.session_id, "aborted", ended=True)
                    BUS.publish(Finished("aborted", ctx.session_id))
                elif ctx.session_id is not None and not isinstance(exc, (RecordingError, SignalCheckFailed)):
                    reason = _describe(exc)
                    if _mark_failed(ctx.db, ctx.session_id, None, reason, only_open=isinstance(exc, EegloopError)):
                        BUS.publish(Finished("failed", ctx.session_id))
                raise
            finally:
                if rig is not None:
                    rig.close()
        return ctx


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, EegloopError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


# -- signal check ------------------------------------------------------------------------------------------------
class SignalCheckPhase(VisitPhase):
    """Every electrode pass/warn/fail before anything is written (``signal_check.before_visit``); a fail refuses
    the visit unless forced."""

    name = "signal check"

    def run(self, ctx: VisitContext) -> None:
        if ctx.protocol.signal_check.before_visit:
            ctx.signal_check = gate_on_signal(ctx.protocol, ctx.say, ctx.force, eeg_source_id=ctx.rig.eeg_source_id)


def gate_on_signal(protocol: Protocol, say, force: bool, eeg_source_id: str | None = None):
    """Run the signal check, show its table, and refuse (:class:`SignalCheckFailed`) on a fail unless ``force``."""
    from .recorder.signal_check import check_signal

    BUS.publish(Phase("signal check"))
    check = check_signal(protocol, progress=say, eeg_source_id=eeg_source_id)
    BUS.publish(SignalChecked(check))
    say(check.table())
    if check.verdict == "fail":
        bad = check.failed()
        names = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        if not force:
            raise SignalCheckFailed(f"signal check failed on {len(bad)} channel(s): {names}; fix those electrodes "
                                    "and start again, or record anyway with --force (stored with the session)")
        say(f"signal check FAILED on {names}: recording anyway (--force); the check is stored with the session")
    return check


# -- the recording ---------------------------------------------------------------------------------------------
def _fmt(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}"


def _connect(ctx: VisitContext, expect_timings: bool) -> None:
    """The acquisition finds the amplifier; the session may exist from then on."""
    from .roles.messages import Connect

    rig = ctx.rig
    if rig.stream is None:
        rig.stream = rig.call(rig.acquisition, Connect(marker_source_id=rig.marker_id,
                                                       eeg_source_id=rig.eeg_source_id,
                                                       expect_timings=expect_timings,
                                                       forward_samples=BUS.wants_samples))
        if rig.amplifier is not None:  # the simulated subject follows the markers from the first one
            from .roles.messages import WaitMarkers

            if not rig.call(rig.amplifier, WaitMarkers(10.0)):
                logger.warning("the simulator did not connect to the marker stream")


def _start_recording(ctx: VisitContext, task: str) -> None:
    """The acquisition writes into the session from now on (raw files under the data folder)."""
    from .roles.messages import StartRecording

    if ctx.recording_started:
        return
    sid = ctx.session_id
    ctx.rig.watch("claim", lambda: SessionClaim.lost(ctx.db, sid))
    raw_dir = ctx.db.data_dir / "raw" / f"sub-{ctx.subject}" / f"ses-{sid:04d}"
    ctx.rig.call(ctx.rig.acquisition, StartRecording(sid, str(raw_dir),
                                                     f"sub-{ctx.subject}_ses-{sid:04d}_task-{task}_run"))
    ctx.recording_started = True


def _open_window(ctx: VisitContext):
    from .roles.messages import OpenWindow

    d = ctx.rig.call(ctx.rig.presenter, OpenWindow())
    if not ctx.window_open:
        ctx.window_open = True
        ctx.rig.display = d
        ctx.say(f"display: {d.frame_rate:.2f} Hz" + (f" (software-paced; measured {d.measured_rate:.0f} Hz, no "
                                                     "vsync)" if d.paced else " (measured)") + f"; {d.scheduling}")
    return d


class RecordingPhase(VisitPhase):
    """The protocol's runs: the paradigm in the presenter, the recording in the acquisition process, each block
    stored as soon as its last epoch is cut. Between runs, ``between_runs(context, run)`` (the session's
    quick-train)."""

    name = "recording"

    def __init__(self, between_runs: Optional[Callable] = None):
        self.between_runs = between_runs

    def prepare(self, ctx: VisitContext) -> None:
        from .lsl import configure_lsl
        from .montage import load_montage
        from .paradigm.schedule import Run, make_schedule
        from .stimuli import load_stimuli

        ctx.db.check_new_subject(ctx.subject)
        configure_lsl(ctx.protocol.amplifier.lsl_scope)
        ctx.stimuli = load_stimuli(ctx.protocol)
        ctx.schedule = make_schedule(ctx.protocol, ctx.stimuli)
        load_montage(ctx.protocol.amplifier.montage, ctx.protocol.base_dir)  # a bad montage: one line now
        todo = [Run(run=r.run, blocks=tuple(b for b in r.blocks if b.block not in ctx.skip_blocks))
                for r in ctx.schedule.runs if ctx.runs is None or r.run in ctx.runs]
        self.todo = [r for r in todo if r.blocks]
        if not self.todo:
            raise EegloopError(f"session {ctx.session_id}: every block is already recorded; nothing to resume")

    def run(self, ctx: VisitContext) -> None:
        db, p, rig = ctx.db, ctx.protocol, ctx.rig
        _connect(ctx, expect_timings=True)
        # the amplifier is there: now the session may exist
        db.get_or_add_subject(ctx.subject)
        if ctx.session_id is None:
            ctx.session_id = db.create_session(ctx.subject, p)
            ctx.claims.enter_context(SessionClaim(db, ctx.session_id))
        sid = ctx.session_id
        checks = list((db.get_session(sid).info or {}).get("signal_checks", []))
        if ctx.signal_check is not None:
            check = ctx.signal_check
            checks.append({**check.to_json(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "forced": bool(ctx.force and check.verdict == "fail")})
        db.update_session_info(sid, channels=rig.stream.channels, signal_checks=checks)
        db.add_stimuli(ctx.stimuli)
        _start_recording(ctx, _task(p))
        db.set_session_status(sid, "recording")
        _Recording(ctx, self.todo, self.between_runs).run()


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
        from .rig import ChildFailedEvent
        from .roles.messages import AddTimings, BlockShown, GetStats, Interrupted, PausedAfter, Resumed

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
                f"{_fmt(time.monotonic() - self.t_start)}  ~{_fmt(left)} left  epochs {st.epochs}"
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
        from .roles.messages import Fail

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
            _mark_failed(self.ctx.db, self.ctx.session_id, self.current_run, self.failure)

    def _add_timings(self, run: int, block: int, timings: list) -> None:
        from .roles.messages import AddTimings

        try:
            self.ctx.rig.acquisition.call(AddTimings(run, block, _timing_rows(timings)), timeout=10)
        except Exception as exc:  # the acquisition may be what failed
            logger.warning("the timings of block %d could not be stored: %s", block, exc)

    def _take_interrupted(self, seconds: float) -> None:
        """The interrupted block's timings, which the presenter sends at its next frame: stored with its epochs."""
        import queue as _queue

        from .roles.messages import Interrupted

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
        from .roles.messages import EndRun, StopRecording

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
        from .paradigm.presentation import Aborted, RecordingFailed
        from .roles.messages import BeginRun, EndRun, PushMarker, ShowRun, ShowText

        ctx = self.ctx
        p, say, rig, sid = ctx.protocol, ctx.say, ctx.rig, ctx.session_id
        pres, acq = rig.presenter, rig.acquisition
        aborted = False
        runs_done = 0
        try:
            _open_window(ctx)
            pres.call(PushMarker("session_start", {"protocol": p.name,
                                                   "frame_rate_hz": round(rig.display.frame_rate, 3)}))
            if p.paradigm.instructions:
                BUS.publish(Phase("instructions", session_id=sid))
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
                        from .roles.messages import AddTimings

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
                if self.between_runs is not None:
                    try:
                        self.between_runs(ctx, run.run)
                    except (RecordingError, ChildFailed, Aborted):
                        raise
                    except Exception as exc:  # e.g. the quick-train: it must not end the recording
                        logger.debug("after run %d", run.run, exc_info=True)
                        say(f"after run {run.run}: {exc} (the recording goes on)")
                    rig.check()
                    if ctx.ended:  # Escape on the rest screen, the model kept: the recording ends here
                        aborted = True
                        break
            if self.failure is None:
                pres.call(PushMarker("session_end", {"status": "aborted" if aborted else "completed"}))
        except Aborted:  # Escape during the instructions (or on a rest screen with nothing trained)
            aborted = True
        except (ChildFailed, RecordingError, RecordingFailed) as exc:
            self.fail_now(rig.failure or str(exc))
        except BaseException as exc:  # Ctrl-C, a bug: stored as failed, then raised
            self.fail_now(_describe(exc))
            raise
        finally:
            if self.failure is None:
                self._stop_recording("done", None)
        if self.failure is not None:
            BUS.publish(Finished("failed", sid))
            raise RecordingError(f"session {sid}: {self.failure}; completed blocks are stored "
                                 f"(continue with: eegloop record/session --resume)")
        self.finish(aborted, runs_done)

    def finish(self, aborted: bool, runs_done: int) -> None:
        ctx = self.ctx
        db, p, sid, d = ctx.db, ctx.protocol, ctx.session_id, ctx.rig.display
        stats = self.stopped.stats
        not_done = [(b, reason) for b, _, st, reason in self.stopped.blocks_stored if st != "done"]
        if not_done and not aborted:
            ctx.say(f"{len(not_done)} block(s) incomplete ({not_done[0][1]}, ...): record them again with --resume")
        steal = _round(self.steal.max_pct)  # the worst block's
        db.set_session_status(sid, "aborted" if aborted else "incomplete" if not_done else "recorded",
                              ended=aborted,
                              recording={"runs_done": runs_done, "frame_rate_hz": d.frame_rate, "paced": d.paced,
                                         "samples_received": stats.samples_received,
                                         "lost_samples": stats.lost_samples,
                                         "epochs_rejected": dict(stats.epochs_rejected),
                                         "online_dropped": stats.online_dropped, "scheduling": d.scheduling,
                                         "cpu_steal_pct_max": steal})
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


def _mark_failed(db: Database, session_id: int, run: Optional[int], reason: str, only_open: bool = False) -> bool:
    """Session (and the run that was recording) -> ``failed`` with the reason; best effort, the database itself
    may be what failed. ``only_open``: leave a session that already ended (completed, aborted, failed) as it is."""
    try:
        if only_open and db.get_session(session_id).status in ("completed", "aborted", "failed"):
            return False
        for r in db.get_runs(session_id):
            if r.status == "recording" or r.index == run:
                db.update_run(r.id, status="failed", info={**(r.info or {}), "reason": reason})
        db.set_session_status(session_id, "failed", ended=True, failure=reason)
        return True
    except Exception as exc:
        logger.error("could not mark session %d failed: %s", session_id, str(exc))
        return False


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


# -- the quick-train ---------------------------------------------------------------------------------------------
class _Stop(EegloopError):
    """Raised in the training's progress callback: the visit failed, the training stops at its next epoch."""


class _Training(Worker):
    thread_name = "eegloop-quick-train"
    log_errors = False  # the visit reports a failed training itself

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.value = None

    def run(self) -> None:
        self.value = self.fn()


class QuickTrainPhase(VisitPhase):
    """Select and fit the decoder (and the EEG encoder when the feedback needs it) within ``training.budget_s``,
    while the subject's window shows the rest screen with the time left. Skipped when done between runs.

    Escape or the operator's abort on the rest screen lets the training finish: its model is kept and registered
    with the session, and the visit ends as aborted (feedback later with ``eegloop feedback``)."""

    name = "quick-train"

    def prepare(self, ctx: VisitContext) -> None:
        from .feedback.loop import EMBEDDING_MODES
        from .stimuli import load_stimuli

        p = ctx.protocol.paradigm
        design = ctx.protocol.design(len(load_stimuli(ctx.protocol, hash_files=False).classes))
        self.n_blocks = design.n_blocks
        self.minutes_per_run = design.blocks_per_run * (p.block_s + p.pause_s) / 60
        # the retrieve/embedding feedback modes decode with the EEG encoder: quick-train fits it too
        self.with_encoder = ((ctx.feedback_mode or ctx.protocol.feedback.mode) in EMBEDDING_MODES
                             or ctx.protocol.encoder.enabled)

    def between_runs(self, ctx: VisitContext, run_no: int) -> None:
        """After run ``run_no``: train now if enough is recorded (and not trained yet)."""
        after = ctx.protocol.training.quick_train_after_min
        if after is not None and ctx.trained.model is None and run_no * self.minutes_per_run >= after:
            self.train(ctx)

    def run(self, ctx: VisitContext) -> None:
        if ctx.trained.model is None:
            self.train(ctx)
        if ctx.ended:
            return
        t = ctx.trained
        ctx.db.set_session_status(ctx.session_id, "trained", model_id=t.model.model_id, train_seconds=t.seconds,
                                  **({"encoder_id": t.encoder.model_id} if t.encoder is not None else {}))

    def train(self, ctx: VisitContext) -> None:
        from .decoder import quick_train, train_encoder
        from .paradigm.presentation import Aborted
        from .rig import ChildFailedEvent
        from .roles.messages import EscapePressed, SetScreen
        from .stimuli import feedback_cue_shas

        say, p, sid, rig = ctx.say, ctx.protocol, ctx.session_id, ctx.rig
        if not ctx.window_open:  # a resumed visit whose recording was complete: the rest screen needs the window
            _open_window(ctx)
        rig.prestart_worker()  # the feedback's worker gets ready while the subject rests (no stimulus on screen)
        say("quick-train: starting")
        BUS.publish(Phase("quick-train", "selecting and fitting the decoder", session_id=sid))
        t0 = time.monotonic()
        budget = p.training.budget_s
        eta: dict = {}
        stage = {"t0": t0, "budget": budget}  # the training now running (the decoder, then the encoder)
        state = {"stop": None, "abort": CONTROLS.abort_requested.is_set()}
        t = ctx.trained

        def watch(r):  # each training epoch: the bus (console), the rest screen, and a line every 10 epochs
            if state["stop"]:
                raise _Stop(state["stop"])
            eta["left"], eta["at"] = r.get("eta_s"), time.monotonic()
            planned = int(r.get("planned") or p.training.max_epochs)
            BUS.publish(TrainEpoch(int(r["epoch"]), planned, r.get("val_acc"), r.get("train_loss")))
            if r["epoch"] % 10 == 0:
                say(f"quick-train: epoch {r['epoch']}/{planned}, validation top-1 {r['val_acc']:.3f}, "
                    f"~{_fmt(eta['left'] or 0)} left")

        def watch_encoder(r):
            if state["stop"]:
                raise _Stop(state["stop"])
            eta["left"], eta["at"] = r.get("eta_s"), time.monotonic()
            if r["epoch"] % 10 == 0:
                say(f"quick-train: encoder epoch {r['epoch']}/{r.get('planned')}, ~{_fmt(eta['left'] or 0)} left")

        def rest_text() -> str:
            if "left" in eta:  # the plan measured on the epochs so far
                left = max((eta["left"] or 0) - (time.monotonic() - eta["at"]), 0)
            else:  # before the first epoch: what the budget allows
                left = (max(stage["budget"] - (time.monotonic() - stage["t0"]), 0) if stage["budget"] > 0 else None)
            when = f"about {_fmt(left)} left" if left is not None else "a moment"
            return f"Rest for a moment.\n\nThe decoder is training: {when}."

        def done(tm):
            from .decoder import heldout_line, honest_estimate

            stop = (f"; stopped at its {budget:g} s budget after {tm.metrics.get('epochs_run')} epochs (best "
                    f"weights kept, epoch {tm.metrics.get('best_epoch')})"
                    if tm.metrics.get("stopped") == "time_budget" else "")
            say(f"quick-train: model {tm.model_id} in {t.seconds:.1f} s{stop}; {heldout_line(tm.metrics)}")
            say(honest_estimate(ctx.db, ctx.subject, tm.metrics.get("method")) or "honest estimate: the "
                "cross-validation after the feedback block (whole blocks out)")

        def fit():  # the model is kept at once: Escape on the rest screen must not lose a finished training
            cues = feedback_cue_shas(p, ctx.stimuli)  # the feedback block's cues: kept out of training
            tm = quick_train(ctx.db, ctx.subject, [sid], protocol=p, progress=watch, exclude_images=cues)
            t.model, t.seconds = tm, time.monotonic() - t0
            done(tm)
            if self.with_encoder:  # after the decoder, in the same rest: a failure leaves the decoder's modes
                say("quick-train: fitting the EEG encoder (EEG -> CLIP image embedding)")
                BUS.publish(Phase("quick-train", "fitting the EEG encoder", session_id=sid))
                eta.clear()
                stage.update(t0=time.monotonic(), budget=p.encoder.budget_s)
                try:
                    te = train_encoder(ctx.db, ctx.subject, [sid], protocol=p, progress=watch_encoder,
                                       exclude_images=cues)
                except _Stop:
                    raise
                except Exception as exc:  # a bad image, torch, numpy: the decoder's feedback modes remain
                    t.encoder_error = str(exc) or type(exc).__name__
                    logger.error("EEG encoder: %s", t.encoder_error)
                    say(f"quick-train: the EEG encoder could not be trained: {exc}")
                    return tm
                t.encoder = te
                m = te.metrics
                held = (f"held-out blocks {m['val_k']}-way top-1 {m['val_top1']:.3f} (chance "
                        f"{m['chance_top1']:.3f})" if "val_top1" in m else "no held-out blocks")
                say(f"quick-train: EEG encoder {te.model_id} in {te.seconds:.1f} s; {held}")
            return tm

        job = _Training(fit)
        unhook = CONTROLS.on_abort(lambda: state.update(abort=True))
        try:
            job.start()
            last = 0.0
            while job.alive:  # the rest screen's countdown, Escape, a failed process
                if time.monotonic() - last >= 0.25:
                    last = time.monotonic()
                    rig.presenter.control(SetScreen(rest_text()))
                try:
                    ev = rig.events.get(timeout=0.02)
                except Exception:
                    continue
                if isinstance(ev, EscapePressed):
                    state["abort"] = True
                elif isinstance(ev, ChildFailedEvent):
                    state["stop"] = ev.reason  # the training stops at its next epoch; the visit fails now
                    _mark_failed(ctx.db, sid, None, ev.reason)
                    BUS.publish(Finished("failed", sid))
                    job.join(30)
                    raise RecordingError(f"session {sid}: {ev.reason}; completed blocks are stored (continue "
                                         "with: eegloop session --resume)")
            job.join()
        finally:
            unhook()
            if job.error is None or not isinstance(job.error, _Stop):
                rig.presenter.control(SetScreen(None))
        if job.error is not None:
            raise job.error
        if state["abort"]:
            if t.model is None:
                raise Aborted("aborted by the operator (Escape)")
            ctx.db.set_session_status(sid, "trained", model_id=t.model.model_id, train_seconds=t.seconds)
            say(f"session {sid}: Escape during the quick-train; the model is kept and the feedback block skipped "
                "(run it later with: eegloop feedback)")
            BUS.publish(Finished("aborted", sid))
            ctx.ended = "aborted"


# -- feedback ----------------------------------------------------------------------------------------------------
class FeedbackPhase(VisitPhase):
    """One closed-loop block with the subject's latest decoder (or EEG encoder): the presenter shows each cue, the
    acquisition cuts its epoch, the worker decodes it and sends the image of what it read, the presenter shows it
    at the next flip; every trial is stored with its latencies.

    In a visit (``in_visit``) the mode falls back to what is available (the encoder's modes without an encoder, a
    generator that is not cached), the subject is thanked and the window closed afterwards."""

    name = "feedback"

    def __init__(self, in_visit: bool = False):
        self.in_visit = in_visit

    def prepare(self, ctx: VisitContext) -> None:
        from .feedback.loop import EMBEDDING_MODES
        from .lsl import configure_lsl
        from .stimuli import load_stimuli

        mode = ctx.feedback_mode or ctx.protocol.feedback.mode
        if mode not in ("live", "bank", "stimulus") + EMBEDDING_MODES:
            raise EegloopError(f"feedback mode {mode!r}: one of live, bank, stimulus, retrieve, embedding")
        configure_lsl(ctx.protocol.amplifier.lsl_scope)
        if not self.in_visit:  # what the block needs, before any process starts
            from .errors import ModelNotAvailableError
            from .feedback.generator import generator_available
            from .feedback.loop import load_encoder_for

            ctx.db.get_subject(ctx.subject)  # an unknown subject is its own one-line error
            if mode in EMBEDDING_MODES:
                try:
                    ctx.db.latest_model(ctx.subject, encoder=True)
                except EegloopError:
                    load_encoder_for(ctx.db, ctx.subject, mode)  # its one line saying how to train one
            else:
                ctx.db.latest_model(ctx.subject)
            gen = ctx.protocol.feedback.generator
            if mode in ("live", "bank") and not generator_available(gen):
                raise ModelNotAvailableError(
                    f"generator '{gen}' is not available locally (feedback.generator); download it once on a "
                    f"connected machine (e.g. huggingface-cli download {gen}) or set feedback.generator to a local "
                    "folder; or use feedback.mode: stimulus")
        ctx.stimuli = ctx.stimuli or load_stimuli(ctx.protocol)

    def _mode(self, ctx: VisitContext) -> str:
        """The visit's mode, falling back to what is available."""
        from .feedback.generator import generator_available
        from .feedback.loop import EMBEDDING_MODES

        p, say, t = ctx.protocol, ctx.say, ctx.trained
        mode = ctx.feedback_mode or p.feedback.mode
        if not self.in_visit:
            return mode
        if mode in EMBEDDING_MODES and t.encoder is None:
            say(f"feedback mode '{mode}' needs the EEG encoder, which was not trained "
                f"({t.encoder_error or 'no encoder'}): feedback uses mode 'stimulus'")
            mode = "stimulus"
        egen = p.feedback.embedding_generator
        if mode == "embedding" and not (egen and generator_available(egen)):
            what = f"embedding generator '{egen}' is not available locally" if egen else "no feedback.embedding_generator"
            say(f"{what}: feedback uses mode 'retrieve' (the candidate image nearest to the decoded embedding); "
                "download a Stable unCLIP model or point feedback.embedding_generator at a folder to see generated "
                "images")
            mode = "retrieve"
        if mode in ("live", "bank") and not generator_available(p.feedback.generator):
            say(f"generator '{p.feedback.generator}' is not available locally: feedback uses mode 'stimulus' "
                "(held-out stimulus images of the decoded class); download the model or point feedback.generator "
                "at a folder to see generated images")
            mode = "stimulus"
        return mode

    def run(self, ctx: VisitContext) -> None:
        from ._files import private_dir
        from .feedback.loop import TrialLog, choose_trials, feedback_result
        from .paradigm.presentation import Aborted
        from .rig import ChildFailedEvent
        from .roles.messages import (BeginRun, EndRun, FeedbackBlock, FeedbackShown, LoadModel, PrepareFeedback,
                                     ShowText, StartDecoding, StopDecoding, StopRecording, Subscribe,
                                     Unsubscribe)
        from .feedback.cues import cue_pools

        db, p, say, rig = ctx.db, ctx.protocol, ctx.say, ctx.rig
        fb = p.feedback
        mode = self._mode(ctx)
        n_trials = ctx.feedback_trials or fb.trials
        worker = rig.start_worker()
        loaded = rig.call(worker, LoadModel(ctx.subject, mode))  # a bad model: one line, nothing made
        _connect(ctx, expect_timings=False)
        db.get_or_add_subject(ctx.subject)
        created = ctx.session_id is None
        if created:
            ctx.session_id = db.create_session(ctx.subject, p, kind="feedback")
            ctx.claims.enter_context(SessionClaim(db, ctx.session_id))
        sid = ctx.session_id
        trial_offset = ctx.trial_offset
        if self.in_visit:  # feedback trials are numbered after the recording's
            trial_offset = max((e.trial or 0 for e in db.get_events(sid, "stim_on")), default=0)
        img_dir = db.data_dir / "images" / f"sub-{ctx.subject}" / f"ses-{sid:04d}"
        rows: list = []
        try:
            private_dir(img_dir)  # images/...: 0700 when eegloop creates it
            # cues are images the model never saw (feedback/cues.py)
            trained = frozenset(loaded.trained) if loaded.trained is not None else None
            plan = choose_trials(ctx.stimuli, n_trials, fb.seed, trial_offset,
                                 cue_pools(ctx.stimuli, fb.cue_share, trained, say), fb.images_per_trial)
            ready = rig.call(worker, PrepareFeedback(plan, str(img_dir), ctx.progress is not None))
            _start_recording(ctx, "feedback")
            run_index = max((r.index for r in db.get_runs(sid)), default=0) + 1
            BUS.publish(Phase("feedback", f"{n_trials} trials, mode {mode}", session_id=sid))
            d = _open_window(ctx)
            rig.acquisition.call(BeginRun(run_index, expect_timings=False))  # no trial timings in feedback
            rig.acquisition.call(Subscribe())
            worker.call(StartDecoding())
            e = p.epochs
            timeout = e.tmax + max(e.margin_s, e.right_margin_s or 0) + 3.0 + (60 if ready.live else 0)
            log = TrialLog(db, sid, loaded.model_id, mode, n_trials, say, fb.images_per_trial, plan, trained)
            failure: dict = {}

            def on_event(ev):
                if isinstance(ev, FeedbackShown):
                    rows.append(log.add(ev))
                elif isinstance(ev, ChildFailedEvent):
                    failure.setdefault("reason", ev.reason)
                    _mark_failed(db, sid, run_index, ev.reason)

            try:
                shown = rig.wait(rig.presenter.request(FeedbackBlock(
                    plan, run_index, FEEDBACK_BLOCK_BASE + run_index, mode,
                    max(1, int(round(fb.display_s * d.frame_rate))), timeout, ready.preload)), on_event, grace_s=5.0)
            except ChildFailed as exc:  # the presenter itself died
                failure.setdefault("reason", rig.failure or str(exc))
                shown = None
            reason = failure.get("reason") or (shown.failed if shown is not None else None) or rig.failure
            if reason is None:
                worker.call(StopDecoding())
                rig.acquisition.call(Unsubscribe())
                rig.acquisition.call(EndRun(status="aborted" if shown.aborted else "done",
                                            reason="aborted by the operator (Escape)" if shown.aborted else None),
                                     timeout=60)
                rig.stream, ctx.recording_started = None, False
                rig.acquisition.call(StopRecording(), timeout=60)  # everything written before the block counts
            else:
                if rig.acquisition.failure is None:
                    try:
                        rig.acquisition.call(EndRun(wait=False, status="failed", reason=f"recording failed: {reason}"),
                                             timeout=30)
                    except Exception as exc:
                        logger.error("stopping the recording: %s", exc)
                _mark_failed(db, sid, run_index, reason)
                BUS.publish(Finished("failed", sid))
                raise RecordingError(f"session {sid}: {reason}; the feedback trials so far are stored")
            if shown.aborted:
                say("feedback aborted by the operator; trials so far are kept")
            if self.in_visit:
                try:
                    rig.call(rig.presenter, ShowText("That was the last image.\n\nThank you!", duration=1.0))
                except Aborted:
                    pass
                from .roles.messages import CloseWindow

                rig.presenter.call(CloseWindow())  # the subject is done: nothing frozen on screen meanwhile
        except BaseException:
            # a feedback session that never got a trial (no amplifier, no generator, ...) is not left behind
            if created and not rows and not db.get_feedback_trials(sid) and db.count_epochs(sid) == 0:
                if ctx.recording_started and rig.acquisition.failure is None:
                    try:  # its recorder first: nothing may write into a session being deleted
                        rig.stream, ctx.recording_started = None, False
                        rig.acquisition.call(StopRecording(status="failed"), timeout=30)
                    except Exception as exc:
                        logger.warning("stopping the recording: %s", exc)
                ctx.claims.close()
                db.delete_session(sid)
                ctx.session_id = None
            raise
        ctx.feedback = feedback_result(db, sid, loaded.model_id, mode, fb, rows, ready.warmup_s, d.frame_rate,
                                       ready.n_classes, ready.candidates)


# -- after the subject: cross-validation and the report -----------------------------------------------------------
class EvaluationPhase(VisitPhase):
    """The report's cross-validation (whole blocks left out), once the subject is done: between recording and
    feedback the subject waits for the quick-train alone (at paper scale these folds took ~7 min on 2 cores)."""

    name = "evaluation"
    uses_rig = False

    def run(self, ctx: VisitContext) -> None:
        ctx.say("cross-validating (whole blocks left out) for the report; the subject is done")
        BUS.publish(Phase("evaluation", "cross-validating for the report", session_id=ctx.session_id))
        ctx.evaluation = _evaluate_for_report(ctx.db, ctx.subject, ctx.session_id, ctx.protocol, ctx.say)
        ctx.db.set_session_status(ctx.session_id, "completed", ended=True, evaluation=ctx.evaluation)  # merged


class ReportPhase(VisitPhase):
    """The self-contained HTML report."""

    name = "report"
    uses_rig = False

    def run(self, ctx: VisitContext) -> None:
        from .report import write_report

        BUS.publish(Phase("report", "writing the report", session_id=ctx.session_id))
        ctx.report = write_report(ctx.db, ctx.session_id, ctx.report_dir)
        ctx.say(f"report: {ctx.report}")
        BUS.publish(Finished("completed", ctx.session_id, str(ctx.report)))


def _evaluate_for_report(db: Database, subject: str, session_id: int, protocol: Protocol, say) -> dict:
    from .decoder import evaluate, fit_teacher
    from .decoder.evaluation import NoHonestFoldError, main_method
    from .errors import ModelNotAvailableError

    es = db.load_epochs(subject, [session_id])
    es = es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))  # recording blocks only, not feedback cues
    teacher = None
    try:
        teacher = fit_teacher(db, protocol, es)
    except ModelNotAvailableError as exc:
        say(f"teacher unavailable: {exc}")
    try:
        rep = evaluate(es, protocol, teacher=teacher, progress=say)
    except NoHonestFoldError as exc:
        say(str(exc))
        return {"error": str(exc)}
    return {**rep.to_json(), "main_method": main_method(protocol), "summary": rep.summary(),
            "confusion": rep.confusion, "classes": rep.classes, "chance": rep.chance, "notes": rep.notes,
            "folds": rep.methods}


# -- the commands' phase lists and the public functions -------------------------------------------------------------
def phases_for(command: str) -> list:
    """The phases a command runs: ``record``, ``feedback`` or ``session``."""
    if command == "record":
        return [SignalCheckPhase(), RecordingPhase()]
    if command == "feedback":
        return [FeedbackPhase()]
    if command == "session":
        train = QuickTrainPhase()
        return [SignalCheckPhase(), RecordingPhase(between_runs=train.between_runs), train,
                FeedbackPhase(in_visit=True), EvaluationPhase(), ReportPhase()]
    raise ValueError(f"no phases for {command!r}")


def resumable_session(db: Database, subject: str, protocol: Protocol) -> tuple[int, set]:
    """The subject's latest interrupted session of this protocol (same file contents) and its complete blocks."""
    for s in reversed(db.list_sessions(subject)):
        if s.kind == "recorded" and s.status in ("created", "recording", "aborted", "failed", "incomplete") \
                and s.protocol_sha256 == protocol.sha256:
            done = {b.index for b in db.get_blocks(s.id) if b.status == "done"}
            return s.id, done
    raise EegloopError(f"--resume: subject {subject!r} has no interrupted session of protocol "
                       f"'{protocol.name}' (same protocol file contents) to continue")




def record_session(protocol: Protocol, subject: str, db: Database, simulate: bool = False,
                   progress: Callable[[str], None] | None = print, session_id: int | None = None,
                   runs: Optional[list[int]] = None, capture_trials=(), skip_blocks=frozenset(),
                   force: bool = False) -> RecordResult:
    """Run the paradigm and the recorder for the protocol's runs (each in its own process).

    Nothing is written to the database before the amplifier is found and the
    session is claimed. Each block is stored (events, epochs, rejected epochs,
    trial timings) in one transaction as soon as its last epoch is cut. If the
    recording fails (a process dies or hangs, the stream is lost, the disk or the database fails) the paradigm
    stops at the next frame, the subject sees a neutral message, every completed block stays stored, session and
    run get status ``failed`` with the reason, and :class:`RecordingError` is raised.

    Parameters
    ----------
    protocol : Protocol
    subject : str
        Pseudonymous code (letters and digits); added to the database if new.
    db : Database
    simulate : bool
        Run the virtual amplifier (its own process, ``amplifier.simulate`` settings).
    progress : callable | None
        Receives one line per block (run/block, time left).
    session_id : int | None
        Continue this session instead of creating one.
    runs : list of int | None
        Only these runs (1-based); default all.
    capture_trials : iterable of int
        Trials whose drawn frame comes back in :attr:`RecordResult.captured`.
    skip_blocks : set of int
        Blocks already recorded completely (``--resume``): not shown again.
    force : bool
        Record even when the signal check (``signal_check.before_visit``) fails on some channels.
    """
    ctx = VisitContext(protocol, subject, db, BUS.tee(progress), progress, simulate=simulate, force=force,
                       session_id=session_id, skip_blocks=frozenset(skip_blocks), runs=runs,
                       capture_trials=tuple(capture_trials))
    Visit(ctx, phases_for("record")).run()
    return ctx.record


def run_visit(protocol: Protocol, subject: str, db: Database, simulate: bool = False, resume: bool = False,
              progress: Callable[[str], None] | None = print, feedback_mode: str | None = None,
              report_dir: Path | None = None, force: bool = False) -> VisitResult:
    """A subject's visit: signal check -> record -> quick-train (automatic, while the subject rests; within
    ``training.budget_s``) -> feedback -> cross-validation for the report (the subject is done) -> report.
    ``force`` records even when the signal check fails (see :func:`record_session`)."""
    say = BUS.tee(progress)
    db.check_new_subject(subject)
    session_id, done = None, set()
    if resume:
        session_id, done = resumable_session(db, subject, protocol)
        with SessionClaim(db, session_id):  # a second --resume of it refuses here, before anything starts
            pass
        say(f"resuming session {session_id}: {len(done)} complete block(s) are kept; the others are shown again")
    ctx = VisitContext(protocol, subject, db, say, progress, simulate=simulate, force=force,
                       feedback_mode=feedback_mode, report_dir=report_dir, session_id=session_id,
                       skip_blocks=frozenset(done))
    phases = phases_for("session")
    design = protocol.design(len(_stimulus_classes(protocol)))
    if session_id is not None and len(done) >= design.n_blocks:  # a resume after the recording was complete
        say(f"session {session_id}: every block is recorded; going on with the quick-train")
        phases = [ph for ph in phases if not isinstance(ph, (SignalCheckPhase, RecordingPhase))]
    Visit(ctx, phases).run()
    if ctx.record is not None and ctx.record.aborted:
        say(f"session {ctx.session_id} aborted during recording: continue later with --resume")
        BUS.publish(Finished("aborted", ctx.session_id))
    t = ctx.trained
    return VisitResult(ctx.session_id, ctx.record, t.model.model_id if t.model is not None else None, t.seconds,
                       ctx.evaluation, ctx.feedback, ctx.report)


def _stimulus_classes(protocol: Protocol) -> dict:
    from .stimuli import load_stimuli

    return load_stimuli(protocol, hash_files=False).classes
