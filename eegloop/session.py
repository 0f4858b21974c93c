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

The phases (each a class with ``run(context)``, each in its own module of :mod:`eegloop.phases`; a command runs a
list of them, see :func:`phases_for`)::

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .bus import BUS, Finished
from .database import Database, SessionStatus
from .database.claim import SessionClaim
from .errors import EegloopError
from .phases.context import (RecordingError, RecordResult, SignalCheckFailed, Trained, VisitContext, VisitPhase,
                             describe_failure, mark_failed)
from .phases.feedback import FeedbackPhase
from .phases.quick_train import QuickTrainPhase
from .phases.recording import STEAL_NOTE_PCT, RecordingPhase, steal_note
from .phases.report import EvaluationPhase, ReportPhase
from .phases.signal import SignalCheckPhase, gate_on_signal
from .progress import Reporter, verbose
from .protocol import Protocol
from .types import FEEDBACK_BLOCK_BASE

__all__ = ["RecordResult", "VisitResult", "record_session", "run_visit", "RecordingError", "SignalCheckFailed",
           "gate_on_signal", "Visit", "VisitContext", "VisitPhase", "SignalCheckPhase", "RecordingPhase",
           "QuickTrainPhase", "FeedbackPhase", "EvaluationPhase", "ReportPhase", "phases_for",
           "resumable_session", "FEEDBACK_BLOCK_BASE", "STEAL_NOTE_PCT", "steal_note", "Trained"]


@dataclass
class VisitResult:
    session_id: int
    record: Optional[RecordResult]
    model_id: Optional[int]
    train_seconds: float
    evaluation: Optional[dict]
    feedback: Optional[object]
    report: Optional[Path]


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
                    ctx.db.set_session_status(ctx.session_id, SessionStatus.ABORTED, ended=True)
                    BUS.publish(Finished("aborted", ctx.session_id))
                elif ctx.session_id is not None and not isinstance(exc, (RecordingError, SignalCheckFailed)):
                    reason = describe_failure(exc)
                    if mark_failed(ctx.db, ctx.session_id, None, reason, only_open=isinstance(exc, EegloopError)):
                        BUS.publish(Finished("failed", ctx.session_id))
                raise
            finally:
                if rig is not None:
                    rig.close()
        return ctx


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
        if s.kind == "recorded" and s.status in (SessionStatus.CREATED, SessionStatus.RECORDING, SessionStatus.ABORTED,
                                                 SessionStatus.FAILED, SessionStatus.INCOMPLETE) \
                and s.protocol_sha256 == protocol.sha256:
            done = {b.index for b in db.get_blocks(s.id) if b.status == "done"}
            return s.id, done
    raise EegloopError(f"--resume: subject {subject!r} has no interrupted session of protocol "
                       f"'{protocol.name}' (same protocol file contents) to continue")




@verbose
def record_session(protocol: Protocol, subject: str, db: Database, simulate: bool = False,
                   progress: Callable[[str], None] | None = None, session_id: int | None = None,
                   runs: Optional[list[int]] = None, capture_trials=(), skip_blocks=frozenset(),
                   force: bool = False, verbose: bool | str | int | None = None) -> RecordResult:
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
        Receives the progress lines (one per block: run/block, time left) instead of the ``eegloop.progress``
        logger (:mod:`eegloop.progress`); they are published on the bus either way.
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
    verbose : bool | str | int | None
        eegloop's log level for the call, progress lines included (``False``: silent but for problems; ``None``:
        as it is; see :mod:`eegloop.progress`).
    """
    ctx = VisitContext(protocol, subject, db, Reporter(progress), simulate=simulate, force=force,
                       session_id=session_id, skip_blocks=frozenset(skip_blocks), runs=runs,
                       capture_trials=tuple(capture_trials))
    Visit(ctx, phases_for("record")).run()
    return ctx.record


@verbose
def run_visit(protocol: Protocol, subject: str, db: Database, simulate: bool = False, resume: bool = False,
              progress: Callable[[str], None] | None = None, feedback_mode: str | None = None,
              report_dir: Path | None = None, force: bool = False,
              verbose: bool | str | int | None = None) -> VisitResult:
    """A subject's visit: signal check -> record -> quick-train (automatic, while the subject rests; within
    ``training.budget_s``) -> feedback -> cross-validation for the report (the subject is done) -> report.
    ``force`` records even when the signal check fails; ``progress`` and ``verbose`` as in :func:`record_session`."""
    return _run_visit(protocol, subject, db, simulate, resume, Reporter(progress), feedback_mode, report_dir, force)


def _run_visit(protocol: Protocol, subject: str, db: Database, simulate: bool, resume: bool, say: Reporter,
               feedback_mode: str | None, report_dir: Path | None, force: bool) -> VisitResult:
    db.check_new_subject(subject)
    from .decoder.groupstart import check_group_start

    check_group_start(db, protocol)  # decoder.group_model: there, and reading channels this amplifier records
    session_id, done = None, set()
    if resume:
        session_id, done = resumable_session(db, subject, protocol)
        from .decoder.groupstart import check_not_trained_on

        check_not_trained_on(db, protocol, subject, [session_id])  # its quick-train would train on those epochs
        with SessionClaim(db, session_id):  # a second --resume of it refuses here, before anything starts
            pass
        say(f"resuming session {session_id}: {len(done)} complete block(s) are kept; the others are shown again")
    ctx = VisitContext(protocol, subject, db, say, simulate=simulate, force=force,
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
