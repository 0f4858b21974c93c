"""A subject's visit: record (paradigm + recorder) -> quick-train -> feedback -> report.

:func:`record_session` runs the protocol's runs with the PsychoPy paradigm and
the LSL recorder together (optionally with the virtual amplifier in-process),
storing everything in the database as it goes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ._logging import logger
from .database import CLAIM_OWNER, Database
from .database.claim import SessionClaim
from .errors import EegloopError
from .lsl import configure_lsl
from .bus import BUS, CONTROLS, Finished, Phase, SignalChecked, TrainEpoch, VisitStats
from .protocol import Protocol

__all__ = ["RecordResult", "record_session", "run_visit", "RecordingError", "SignalCheckFailed", "gate_on_signal"]


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


def _fmt(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}"


NEUTRAL_MESSAGE = "The recording has stopped.\n\nPlease stay seated; the experimenter will be with you."


def record_session(protocol: Protocol, subject: str, db: Database, simulate: bool = False,
                   progress: Callable[[str], None] | None = print, session_id: int | None = None,
                   runs: Optional[list[int]] = None, capture_trials=(), presenter_hook=None,
                   skip_blocks=frozenset(), after_run=None, on_session=None, force: bool = False) -> RecordResult:
    """Run the paradigm and the recorder for the protocol's runs.

    Nothing is written to the database before the amplifier is found and the
    session is claimed. Each block is stored (events, epochs, rejected epochs,
    trial timings) in one transaction as soon as its last epoch is cut. If the
    recorder fails (disk full, stream lost, database error) the paradigm stops
    at the next frame, the subject sees a neutral message, every completed
    block stays stored, session and run get status ``failed`` with the reason,
    and :class:`RecordingError` is raised.

    Parameters
    ----------
    protocol : Protocol
    subject : str
        Pseudonymous code (letters and digits); added to the database if new.
    db : Database
    simulate : bool
        Start the virtual amplifier in this process (``amplifier.simulate`` settings).
    progress : callable | None
        Receives one line per block (run/block, time left).
    session_id : int | None
        Continue this session instead of creating one.
    runs : list of int | None
        Only these runs (1-based); default all.
    skip_blocks : set of int
        Blocks already recorded completely (``--resume``): not shown again.
    after_run : callable | None
        Called as ``after_run(run_number, presenter)`` after each completed run
        (the visit uses it to start the quick-train during a rest).
    on_session : callable | None
        Called with the session id once the session exists (after the amplifier was found).
    force : bool
        Record even when the signal check (``signal_check.before_visit``) fails on some channels.
    """
    from .paradigm.schedule import Run, make_schedule
    from .rig import Rig
    from .stimuli import load_stimuli

    say = BUS.tee(progress)
    amp = protocol.amplifier
    db.check_new_subject(subject)
    configure_lsl(amp.lsl_scope)
    stimuli = load_stimuli(protocol)
    schedule = make_schedule(protocol, stimuli)
    from .montage import load_montage

    load_montage(protocol.amplifier.montage, protocol.base_dir)  # a bad montage is one line now, not after the visit
    todo = [Run(run=r.run, blocks=tuple(b for b in r.blocks if b.block not in skip_blocks))
            for r in schedule.runs if runs is None or r.run in runs]
    todo = [r for r in todo if r.blocks]
    if not todo:
        raise EegloopError(f"session {session_id}: every block is already recorded; nothing to resume")

    with Rig(protocol, simulate) as rig:
        check = None
        if protocol.signal_check.before_visit:  # refuse bad electrodes before anything is written
            check = gate_on_signal(protocol, say, force, eeg_source_id=rig.eeg_source_id)
        rec = rig.connect(db=db, expect_timings=True, owner=CLAIM_OWNER)
        # the amplifier is there: now the session may exist
        db.get_or_add_subject(subject)
        if session_id is None:
            session_id = db.create_session(subject, protocol)
        checks = list((db.get_session(session_id).info or {}).get("signal_checks", []))
        if check is not None:
            checks.append({**check.to_json(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "forced": bool(force and check.verdict == "fail")})
        db.update_session_info(session_id, channels=rec.channels, signal_checks=checks)
        if on_session is not None:
            on_session(session_id)
        with SessionClaim(db, session_id):
            return _record(protocol, subject, db, session_id, schedule, stimuli, todo, rig.outlet, rec, say,
                           capture_trials, presenter_hook, after_run)


class SignalCheckFailed(EegloopError):
    """The signal check failed on some channels and the visit was not forced."""


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


class RecordingError(EegloopError):
    """The recording failed during a visit; what was recorded before is stored."""


def _record(protocol, subject, db, session_id, schedule, stimuli, todo, outlet, rec, say, capture_trials,
            presenter_hook, after_run) -> RecordResult:
    from .paradigm.presentation import Presenter, RecordingFailed

    db.add_stimuli(stimuli)
    raw_dir = db.data_dir / "raw" / f"sub-{subject}" / f"ses-{session_id:04d}"
    rec.session_id = session_id
    rec.raw_dir = raw_dir
    rec.raw_prefix = f"sub-{subject}_ses-{session_id:04d}_task-{_task(protocol)}_run"
    rec.start()
    pres = Presenter(protocol, outlet, capture_trials=capture_trials)
    pres.health = lambda: rec.failure or SessionClaim.lost(db, session_id)
    unhook_abort = CONTROLS.on_abort(pres.request_abort)  # the console's abort button
    if presenter_hook:
        presenter_hook(pres)
    db.set_session_status(session_id, "recording")
    timings = []
    aborted = False
    failure: Optional[str] = None
    unexpected: Optional[BaseException] = None
    runs_done = 0
    t_start = time.monotonic()
    total_blocks = sum(len(r.blocks) for r in todo)
    blocks_done = 0
    block_cost = protocol.paradigm.block_s + protocol.paradigm.pause_s
    stats = rec.stats
    current_run = None
    try:
        pres.open()
        say(f"display: {pres.frame_rate:.2f} Hz" + (f" (software-paced; measured {pres.measured_rate:.0f} Hz, no vsync)"
                                                    if pres.paced else " (measured)"))
        pres.push_now("session_start", protocol=protocol.name, frame_rate_hz=round(pres.frame_rate, 3))
        outlet.wait_for_consumers(2.0)
        if protocol.paradigm.instructions:
            BUS.publish(Phase("instructions", session_id=session_id))
            pres.show_text(protocol.paradigm.instructions, wait_space=protocol.paradigm.wait_for_space,
                           duration=None if protocol.paradigm.wait_for_space else 1.0)
        n_runs, n_blocks = len(schedule.runs), len(schedule.blocks)

        def on_block(block, tt):
            nonlocal blocks_done
            blocks_done += 1
            rec.add_timings(block.run, block.block, _timing_rows(tt))
            left = (total_blocks - blocks_done) * block_cost
            rej = sum(rec.stats.epochs_rejected.values())
            say(f"run {block.run}/{n_runs}  block {block.block}/{n_blocks}  "
                f"({len(tt)} images)  elapsed {_fmt(time.monotonic() - t_start)}  ~{_fmt(left)} left  "
                f"epochs {rec.stats.epochs}" + (f" (+{rej} rejected)" if rej else "")
                + f"  lost samples {rec.stats.lost_samples}")
            st = rec.stats
            BUS.publish(VisitStats(st.epochs, st.lost_samples, st.gaps, pres.dropped_frames, rej))
            BUS.publish(Phase("recording", "pause between blocks", block.run, n_runs, block.block, n_blocks, left,
                              session_id))
            if CONTROLS.pause.is_set():  # the operator asked for a pause after this block
                say(f"paused by the operator after block {block.block}")
                BUS.publish(Phase("paused", f"after block {block.block}", block.run, n_runs, block.block, n_blocks,
                                  left, session_id))
                while CONTROLS.pause.is_set():  # the window keeps flipping; Escape and abort still work
                    pres.show_text("Paused.\n\nThe experimenter will continue in a moment.", duration=0.25)
                say("resumed by the operator")
                BUS.publish(Phase("recording", "resumed", block.run, n_runs, block.block, n_blocks, left,
                                  session_id))

        for run in todo:
            current_run = run.run
            BUS.publish(Phase("recording", f"run {run.run}", run.run, n_runs, run.blocks[0].block, n_blocks,
                              (total_blocks - blocks_done) * block_cost, session_id))
            rec.begin_run(run.run)
            result = pres.run(run, on_block=on_block)
            timings += result.timings
            if result.aborted:
                aborted = True
                if result.partial_block is not None:
                    shown = [t for t in result.timings if t.block == result.partial_block]
                    rec.add_timings(run.run, result.partial_block, _timing_rows(shown))
                rec.end_run(status="aborted", reason="aborted by the operator (Escape)")
                current_run = None
                rec.flush()
                say(f"run {run.run} aborted by the operator; every completed block is stored "
                    f"(continue with --resume: unfinished blocks are shown again)")
                break
            rec.end_run()
            current_run = None
            rec.flush()
            if rec.failure is not None:
                raise RecordingFailed(f"the recording failed: {rec.failure}")
            runs_done += 1
            if after_run is not None:
                try:
                    after_run(run.run, pres)
                except RecordingFailed:
                    raise
                except Exception as exc:  # e.g. the quick-train: it must not end the recording
                    logger.error("after run %d: %s", run.run, str(exc))
                    say(f"after run {run.run}: {exc} (the recording goes on)")
        pres.push_now("session_end", status="aborted" if aborted else "completed")
    except RecordingFailed as exc:
        failure = str(rec.failure or SessionClaim.lost(db, session_id) or exc)
        shown = getattr(exc, "timings", [])
        timings += shown
        if shown:  # what the interrupted block showed is timed, like after Escape
            rec.add_timings(shown[0].run, shown[0].block, _timing_rows(shown))
        logger.error("%s", str(failure))
        try:
            if pres.win is not None:
                pres.show_text(NEUTRAL_MESSAGE, duration=2.0)
        except Exception as e:  # the window must not hide the failure
            logger.warning("could not show the neutral message: %s", e)
    except BaseException as exc:  # anything else (Ctrl-C, a window error, a bug): stored as failed, then raised
        unexpected = exc
        failure = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else \
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        raise
    finally:
        # every step runs even if one before it raises: the store is always drained
        try:
            unhook_abort()
            time.sleep(0.05)
            pres.close()
        finally:
            try:
                stats = rec.stop(status="failed" if failure else "done",
                                 reason=f"recording failed: {failure}" if failure else None)
            except Exception as exc:
                failure = failure or str(exc)
                logger.error("stopping the recorder: %s", str(exc))
            pres.outlet = None
            if unexpected is not None:
                _mark_failed(db, session_id, current_run, failure)
    if failure is not None:
        _mark_failed(db, session_id, current_run, failure)
        BUS.publish(Finished("failed", session_id))
        raise RecordingError(f"session {session_id}: {failure}; completed blocks are stored "
                             f"(continue with: eegloop record/session --resume)")
    not_done = [(b, reason) for b, _, st, reason in rec.blocks_stored if st != "done"]
    if not_done and not aborted:
        say(f"{len(not_done)} block(s) incomplete ({not_done[0][1]}, ...): record them again with --resume")
    db.set_session_status(session_id, "aborted" if aborted else "incomplete" if not_done else "recorded",
                          ended=aborted,
                          recording={"runs_done": runs_done, "frame_rate_hz": pres.frame_rate,
                                     "paced": pres.paced, "samples_received": stats.samples_received,
                                     "lost_samples": stats.lost_samples,
                                     "epochs_rejected": dict(stats.epochs_rejected),
                                     "online_dropped": stats.online_dropped})
    durs = np.array([t.duration_s for t in timings]) if timings else np.array([np.nan])
    err = np.abs(durs - protocol.paradigm.image_s)
    mmf = [abs(t.marker_lsl - t.actual_onset_lsl) for t in timings] or [np.nan]
    BUS.publish(Finished("aborted" if aborted else "recorded", session_id))
    return RecordResult(
        session_id=session_id, frame_rate_hz=pres.frame_rate, measured_rate_hz=pres.measured_rate,
        paced=pres.paced, runs_done=runs_done, aborted=aborted, epochs=db.count_epochs(session_id),
        expected_epochs=sum(len(r.trials) for r in todo), samples_received=stats.samples_received,
        samples_expected=stats.samples_expected, lost_samples=stats.lost_samples,
        dropped_frames=int(sum(t.dropped_frames for t in timings)),
        stim_duration_ms_median=float(np.median(durs) * 1000),
        stim_duration_ms_max_abs_error=float(np.max(err) * 1000),
        marker_minus_flip_ms_max=float(np.max(mmf) * 1000),
        raw_files=sorted(str(p) for p in raw_dir.glob("*.vhdr")),
    )


def _mark_failed(db: Database, session_id: int, run: Optional[int], reason: str) -> None:
    """Session (and the run that was recording) -> ``failed`` with the reason; best effort, the
    database itself may be what failed."""
    try:
        for r in db.get_runs(session_id):
            if r.status == "recording" or r.index == run:
                db.update_run(r.id, status="failed", info={**(r.info or {}), "reason": reason})
        db.set_session_status(session_id, "failed", ended=True, failure=reason)
    except Exception as exc:
        logger.error("could not mark session %d failed: %s", session_id, str(exc))


def _timing_rows(timings) -> list[dict]:
    """Trial timings as the block store takes them (keyed by trial)."""
    return [dict(trial=t.trial, **t.as_db()) for t in timings]


def _task(protocol: Protocol) -> str:
    """The protocol's name as a BIDS ``task-`` label (letters and digits)."""
    label = "".join(ch for ch in protocol.name if ch.isascii() and ch.isalnum())
    return label or "eegloop"


@dataclass
class VisitResult:
    session_id: int
    record: Optional[RecordResult]
    model_id: Optional[int]
    train_seconds: float
    evaluation: Optional[dict]
    feedback: Optional[object]
    report: Optional[Path]


def _resumable_session(db: Database, subject: str, protocol: Protocol) -> tuple[int, set]:
    for s in reversed(db.list_sessions(subject)):
        if s.kind == "recorded" and s.status in ("created", "recording", "aborted", "failed", "incomplete") \
                and s.protocol_sha256 == protocol.sha256:
            done = {b.index for b in db.get_blocks(s.id) if b.status == "done"}
            return s.id, done
    raise EegloopError(f"--resume: subject {subject!r} has no interrupted session of protocol "
                       f"'{protocol.name}' (same protocol file contents) to continue")


def _evaluate_for_report(db: Database, subject: str, session_id: int, protocol: Protocol, say) -> dict:
    from .decoder import evaluate, fit_teacher
    from .decoder.evaluation import NoHonestFoldError, main_method
    from .errors import ModelNotAvailableError

    es = db.load_epochs(subject, [session_id])
    es = es.subset(np.flatnonzero(es.blocks < 10_000))  # recording blocks only, not feedback cues
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


def run_visit(protocol: Protocol, subject: str, db: Database, simulate: bool = False, resume: bool = False,
              progress: Callable[[str], None] | None = print, feedback_mode: str | None = None,
              report_dir: Path | None = None, force: bool = False) -> VisitResult:
    """A subject's visit: signal check -> record -> quick-train (automatic, while the subject rests; within
    ``training.budget_s``) -> feedback -> cross-validation for the report (the subject is done) -> report. ``force`` records even when the signal check fails (see :func:`record_session`)."""

    import contextlib

    say = BUS.tee(progress)
    db.check_new_subject(subject)
    with contextlib.ExitStack() as claims:
        session_id, done = (None, set())
        if resume:
            session_id, done = _resumable_session(db, subject, protocol)
            claims.enter_context(SessionClaim(db, session_id))  # a second --resume of it refuses here
            say(f"resuming session {session_id}: {len(done)} complete block(s) are kept; the others are shown again")
        return _visit(protocol, subject, db, simulate, progress, feedback_mode, report_dir, say, session_id, done,
                      claims, force)


def _visit(protocol, subject, db, simulate, progress, feedback_mode, report_dir, say, session_id, done, claims,
           force=False):
    from .decoder import quick_train
    from .stimuli import load_stimuli

    state = {"session": session_id}

    def on_session(sid):
        state["session"] = sid

    p = protocol.paradigm
    design = protocol.design(len(load_stimuli(protocol, hash_files=False).classes))
    minutes_per_run = design.blocks_per_run * (p.block_s + p.pause_s) / 60
    after = protocol.training.quick_train_after_min
    trained = {"model": None, "seconds": 0.0, "encoder": None, "encoder_error": None}
    from .feedback.loop import EMBEDDING_MODES

    # the retrieve/embedding feedback modes decode with the EEG encoder: quick-train fits it too
    with_encoder = (feedback_mode or protocol.feedback.mode) in EMBEDDING_MODES or protocol.encoder.enabled

    def train_now(pres=None):
        """The quick-train (and the EEG encoder when the feedback needs it); with a window, in a thread while the
        subject's rest screen shows the time left."""
        say("quick-train: starting")
        BUS.publish(Phase("quick-train", "selecting and fitting the decoder", session_id=state["session"]))
        t0 = time.monotonic()
        budget = protocol.training.budget_s
        eta: dict = {}
        stage = {"t0": t0, "budget": budget}  # the training now running (the decoder, then the encoder)

        def watch(r):  # each training epoch: the bus (console), the rest screen, and a line every 10 epochs
            eta["left"], eta["at"] = r.get("eta_s"), time.monotonic()
            planned = int(r.get("planned") or protocol.training.max_epochs)
            BUS.publish(TrainEpoch(int(r["epoch"]), planned, r.get("val_acc"), r.get("train_loss")))
            if r["epoch"] % 10 == 0:
                say(f"quick-train: epoch {r['epoch']}/{planned}, validation top-1 {r['val_acc']:.3f}, "
                    f"~{_fmt(eta['left'] or 0)} left")

        def rest_text():
            if "left" in eta:  # the plan measured on the epochs so far
                left = max((eta["left"] or 0) - (time.monotonic() - eta["at"]), 0)
            else:  # before the first epoch: what the budget allows
                left = (max(stage["budget"] - (time.monotonic() - stage["t0"]), 0) if stage["budget"] > 0
                        else None)
            when = f"about {_fmt(left)} left" if left is not None else "a moment"
            return f"Rest for a moment.\n\nThe decoder is training: {when}."

        def watch_encoder(r):  # the rest screen's time left, and a line every 10 epochs
            eta["left"], eta["at"] = r.get("eta_s"), time.monotonic()
            if r["epoch"] % 10 == 0:
                say(f"quick-train: encoder epoch {r['epoch']}/{r.get('planned')}, ~{_fmt(eta['left'] or 0)} left")

        def fit_encoder():  # after the decoder, in the same rest: a failure leaves the decoder's feedback modes
            from .decoder import train_encoder

            say("quick-train: fitting the EEG encoder (EEG -> CLIP image embedding)")
            BUS.publish(Phase("quick-train", "fitting the EEG encoder", session_id=state["session"]))
            eta.clear()
            stage.update(t0=time.monotonic(), budget=protocol.encoder.budget_s)
            try:
                te = train_encoder(db, subject, [state["session"]], protocol=protocol, progress=watch_encoder)
            except Exception as exc:  # a bad image, torch, numpy: the decoder's feedback modes remain
                trained["encoder_error"] = str(exc) or type(exc).__name__
                logger.error("EEG encoder: %s", trained["encoder_error"])
                say(f"quick-train: the EEG encoder could not be trained: {exc}")
                return
            trained["encoder"] = te
            m = te.metrics
            held = (f"held-out blocks {m['val_k']}-way top-1 {m['val_top1']:.3f} (chance {m['chance_top1']:.3f})"
                    if "val_top1" in m else "no held-out blocks")
            say(f"quick-train: EEG encoder {te.model_id} in {te.seconds:.1f} s; {held}")

        def done(tm):
            from .decoder import heldout_line, honest_estimate

            stop = (f"; stopped at its {budget:g} s budget after {tm.metrics.get('epochs_run')} epochs (best "
                    f"weights kept, epoch {tm.metrics.get('best_epoch')})"
                    if tm.metrics.get("stopped") == "time_budget" else "")
            say(f"quick-train: model {tm.model_id} in {trained['seconds']:.1f} s{stop}; {heldout_line(tm.metrics)}")
            say(honest_estimate(db, subject, tm.metrics.get("method")) or "honest estimate: the cross-validation "
                "after the feedback block (whole blocks out)")

        def fit():  # the model is kept here too: Escape on the rest screen must not lose a finished training
            tm = quick_train(db, subject, [state["session"]], protocol=protocol, progress=watch)
            trained["model"], trained["seconds"] = tm, time.monotonic() - t0
            if with_encoder:  # the decoder's line first, then the encoder in the same rest
                done(tm)
                fit_encoder()
            return tm

        tm = fit() if pres is None else _while_resting(pres, fit, rest_text)
        if not with_encoder:
            done(tm)

    def after_run(run_no, pres):
        recorded_min = run_no * minutes_per_run
        if after is not None and trained["model"] is None and recorded_min >= after:
            train_now(pres)

    if session_id is not None and len(done) >= design.n_blocks:  # a resume after the recording was complete
        say(f"session {session_id}: every block is recorded; going on with the quick-train")
        rec = None
    else:
        rec = record_session(protocol, subject, db, simulate=simulate, progress=progress, session_id=session_id,
                             skip_blocks=done, after_run=after_run, on_session=on_session, force=force)
        session_id = rec.session_id
    claims.enter_context(SessionClaim(db, session_id))  # train, feedback and report: still this process's visit
    if rec is not None and rec.aborted:
        say(f"session {session_id} aborted during recording: continue later with --resume")
        BUS.publish(Finished("aborted", session_id))
        return VisitResult(session_id, rec, None, 0.0, None, None, None)
    from .paradigm.presentation import Aborted

    window = None  # one window from the rest screen to the end of the feedback block
    try:
        if trained["model"] is None:
            window = _rest_window(protocol)
            unhook_abort = CONTROLS.on_abort(window.request_abort)  # the console's abort button, as Escape
            try:
                train_now(window)
            except Aborted:
                if trained["model"] is None:  # nothing trained to keep: the abort goes up as it is
                    raise
                db.set_session_status(session_id, "trained", model_id=trained["model"].model_id,
                                      train_seconds=trained["seconds"])
                say(f"session {session_id}: Escape during the quick-train; the model is kept and the feedback "
                    "block skipped (run it later with: eegloop feedback)")
                BUS.publish(Finished("aborted", session_id))
                return VisitResult(session_id, rec, trained["model"].model_id, trained["seconds"], None, None,
                                   None)
        return _feedback_and_report(protocol, subject, db, simulate, progress, feedback_mode, report_dir, say,
                                    session_id, rec, trained, window)
    finally:
        if window is not None:
            unhook_abort()
            window.close()


def _rest_window(protocol: Protocol):
    """The subject's window between the recording and the feedback block, with its own marker outlet."""
    from .paradigm.markers import make_marker_outlet
    from .paradigm.presentation import Presenter

    configure_lsl(protocol.amplifier.lsl_scope)
    return Presenter(protocol, make_marker_outlet(protocol.amplifier.marker_stream_name)).open()


def _while_resting(pres, fn, text: Callable[[], str]):
    """``fn()`` in a thread while ``pres`` shows ``text()`` (refreshed four times a second); its result or
    its exception. Escape in the window raises :class:`Aborted` once ``fn`` has finished."""
    import threading

    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc

    th = threading.Thread(target=target, name="eegloop-quick-train", daemon=True)
    th.start()
    try:
        while True:  # at least once: the subject always sees the rest screen
            pres.show_text(text(), duration=0.25)
            if not th.is_alive():
                break
    finally:
        th.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _feedback_and_report(protocol, subject, db, simulate, progress, feedback_mode, report_dir, say, session_id,
                         rec, trained, window):
    from .feedback.generator import generator_available
    from .feedback.loop import EMBEDDING_MODES, run_feedback
    from .report import write_report

    tm = trained["model"]
    te = trained.get("encoder")
    db.set_session_status(session_id, "trained", model_id=tm.model_id, train_seconds=trained["seconds"],
                          **({"encoder_id": te.model_id} if te is not None else {}))
    mode = feedback_mode or protocol.feedback.mode
    if mode in EMBEDDING_MODES and te is None:
        say(f"feedback mode '{mode}' needs the EEG encoder, which was not trained "
            f"({trained.get('encoder_error') or 'no encoder'}): feedback uses mode 'stimulus'")
        mode = "stimulus"
    egen = protocol.feedback.embedding_generator
    if mode == "embedding" and not (egen and generator_available(egen)):
        what = f"embedding generator '{egen}' is not available locally" if egen else "no feedback.embedding_generator"
        say(f"{what}: feedback uses mode 'retrieve' (the candidate image nearest to the decoded embedding); download "
            "a Stable unCLIP model or point feedback.embedding_generator at a folder to see generated images")
        mode = "retrieve"
    if mode in ("live", "bank") and not generator_available(protocol.feedback.generator):
        say(f"generator '{protocol.feedback.generator}' is not available locally: feedback uses mode 'stimulus' "
            "(held-out stimulus images of the decoded class); download the model or point feedback.generator at "
            "a folder to see generated images")
        mode = "stimulus"
    max_trial = max((e.trial or 0 for e in db.get_events(session_id, "stim_on")), default=0)
    fb = run_feedback(protocol, subject, db, simulate=simulate, session_id=session_id, mode=mode,
                      progress=progress, trial_offset=max_trial, presenter=window)
    if window is not None:
        from .paradigm.presentation import Aborted

        try:
            window.show_text("That was the last image.\n\nThank you!", duration=1.0)
        except Aborted:
            pass
        window.close()  # the subject is done: nothing frozen on screen while the report is prepared
    # the report's cross-validation runs once the subject is done: between recording and feedback the subject
    # waits for the quick-train alone (at paper scale these folds took ~7 min on 2 cores)
    say("cross-validating (whole blocks left out) for the report; the subject is done")
    BUS.publish(Phase("evaluation", "cross-validating for the report", session_id=session_id))
    ev = _evaluate_for_report(db, subject, session_id, protocol, say)
    db.set_session_status(session_id, "completed", ended=True, evaluation=ev)  # info is merged
    BUS.publish(Phase("report", "writing the report", session_id=session_id))
    report = write_report(db, session_id, report_dir)
    say(f"report: {report}")
    BUS.publish(Finished("completed", session_id, str(report)))
    return VisitResult(session_id, rec, tm.model_id, trained["seconds"], ev, fb, report)
