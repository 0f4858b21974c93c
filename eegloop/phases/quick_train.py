"""The quick-train: the decoder (and the EEG encoder when the feedback needs it) selected and fitted within
``training.budget_s`` while the subject rests, the rest screen counting down the time left."""
from __future__ import annotations

import time
from typing import Optional

from .._logging import logger
from .._worker import Worker
from ..bus import BUS, CONTROLS, Finished, Phase, TrainEpoch
from ..database import SessionStatus
from ..errors import EegloopError
from .context import RecordingError, VisitContext, VisitPhase, fmt_duration, mark_failed, open_window

__all__ = ["QuickTrainPhase"]


class _Stop(EegloopError):
    """Raised in the training's progress callback: the visit failed, the training stops at its next epoch."""


class _Training(Worker):
    """The quick-train's thread: the decoder, then (``with_encoder``) the EEG encoder; what each produced is kept in
    ``ctx.trained`` the moment it exists (Escape on the rest screen must not lose a finished training). The visit's
    thread reads :meth:`rest_text` for the rest screen and sets :attr:`failure` (a failed process) or :attr:`abort`."""

    thread_name = "eegloop-quick-train"
    log_errors = False  # the visit reports a failed training itself

    def __init__(self, ctx: VisitContext, with_encoder: bool):
        super().__init__()
        self.ctx, self.with_encoder = ctx, with_encoder
        self.t0 = time.monotonic()
        self.eta: dict = {}
        self.stage = {"t0": self.t0, "budget": ctx.protocol.training.budget_s}  # the training now running
        self.failure: Optional[str] = None  # set by the visit: a process failed, stop at the next epoch
        self.abort = CONTROLS.abort_requested.is_set()

    def watch(self, r) -> None:  # each training epoch: the bus (console), the rest screen, and a line every 10 epochs
        if self.failure:
            raise _Stop(self.failure)
        eta = self.eta
        eta["left"], eta["at"] = r.get("eta_s"), time.monotonic()
        planned = int(r.get("planned") or self.ctx.protocol.training.max_epochs)
        BUS.publish(TrainEpoch(int(r["epoch"]), planned, r.get("val_acc"), r.get("train_loss")))
        if r["epoch"] % 10 == 0:
            self.ctx.say(f"quick-train: epoch {r['epoch']}/{planned}, validation top-1 {r['val_acc']:.3f}, "
                         f"~{fmt_duration(eta['left'] or 0)} left")

    def watch_encoder(self, r) -> None:
        if self.failure:
            raise _Stop(self.failure)
        eta = self.eta
        eta["left"], eta["at"] = r.get("eta_s"), time.monotonic()
        if r["epoch"] % 10 == 0:
            self.ctx.say(f"quick-train: encoder epoch {r['epoch']}/{r.get('planned')}, "
                         f"~{fmt_duration(eta['left'] or 0)} left")

    def rest_text(self) -> str:
        eta, stage = self.eta, self.stage
        if "left" in eta:  # the plan measured on the epochs so far
            left = max((eta["left"] or 0) - (time.monotonic() - eta["at"]), 0)
        else:  # before the first epoch: what the budget allows
            left = (max(stage["budget"] - (time.monotonic() - stage["t0"]), 0) if stage["budget"] > 0 else None)
        when = f"about {fmt_duration(left)} left" if left is not None else "a moment"
        return f"Rest for a moment.\n\nThe decoder is training: {when}."

    def run(self) -> None:
        from ..decoder import quick_train
        from ..stimuli import feedback_cue_shas

        ctx = self.ctx
        p, sid, t = ctx.protocol, ctx.session_id, ctx.trained
        self.cues = feedback_cue_shas(p, ctx.stimuli)  # the feedback block's cues: kept out of training
        tm = quick_train(ctx.db, ctx.subject, [sid], protocol=p, progress=self.watch, exclude_images=self.cues)
        t.model, t.seconds = tm, time.monotonic() - self.t0
        self._said(tm)
        if self.with_encoder:  # after the decoder, in the same rest: a failure leaves the decoder's modes
            self._encoder()

    def _said(self, tm) -> None:
        from ..decoder import heldout_line, honest_estimate

        ctx, budget = self.ctx, self.ctx.protocol.training.budget_s
        stop = (f"; stopped at its {budget:g} s budget after {tm.metrics.get('epochs_run')} epochs (best "
                f"weights kept, epoch {tm.metrics.get('best_epoch')})"
                if tm.metrics.get("stopped") == "time_budget" else "")
        ctx.say(f"quick-train: model {tm.model_id} in {ctx.trained.seconds:.1f} s{stop}; {heldout_line(tm.metrics)}")
        from ..decoder.groupstart import group_estimate_note, group_line

        if group_line(tm.metrics):
            ctx.say(f"quick-train: {group_line(tm.metrics)}")
        note = group_estimate_note(tm.metrics, ctx.subject, pending=ctx.protocol.decoder.group_weight != 1.0)
        ctx.say(f"honest estimate: {note[0].lower()}{note[1:]}" if note else
                honest_estimate(ctx.db, ctx.subject, tm.metrics.get("method")) or "honest estimate: the "
                "cross-validation after the feedback block (whole blocks out)")

    def _encoder(self) -> None:
        from ..decoder import train_encoder

        ctx = self.ctx
        say, p, sid, t = ctx.say, ctx.protocol, ctx.session_id, ctx.trained
        say("quick-train: fitting the EEG encoder (EEG -> CLIP image embedding)")
        BUS.publish(Phase("quick-train", "fitting the EEG encoder", session_id=sid))
        self.eta.clear()
        self.stage.update(t0=time.monotonic(), budget=p.encoder.budget_s)
        try:
            te = train_encoder(ctx.db, ctx.subject, [sid], protocol=p, progress=self.watch_encoder,
                               exclude_images=self.cues)
        except _Stop:
            raise
        except Exception as exc:  # a bad image, torch, numpy: the decoder's feedback modes remain
            t.encoder_error = str(exc) or type(exc).__name__
            logger.error("EEG encoder: %s", t.encoder_error)
            say(f"quick-train: the EEG encoder could not be trained: {exc}")
            return
        t.encoder = te
        m = te.metrics
        held = (f"held-out blocks {m['val_k']}-way top-1 {m['val_top1']:.3f} (chance "
                f"{m['chance_top1']:.3f})" if "val_top1" in m else "no held-out blocks")
        say(f"quick-train: EEG encoder {te.model_id} in {te.seconds:.1f} s; {held}")


class QuickTrainPhase(VisitPhase):
    """Select and fit the decoder (and the EEG encoder when the feedback needs it) within ``training.budget_s``,
    while the subject's window shows the rest screen with the time left. Skipped when done between runs.

    Escape or the operator's abort on the rest screen lets the training finish: its model is kept and registered
    with the session, and the visit ends as aborted (feedback later with ``eegloop feedback``)."""

    name = "quick-train"

    def prepare(self, ctx: VisitContext) -> None:
        from ..feedback.block import EMBEDDING_MODES
        from ..stimuli import load_stimuli

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
        ctx.db.set_session_status(ctx.session_id, SessionStatus.TRAINED, model_id=t.model.model_id, train_seconds=t.seconds,
                                  **({"encoder_id": t.encoder.model_id} if t.encoder is not None else {}))

    def train(self, ctx: VisitContext) -> None:
        from ..paradigm.presentation import Aborted
        from ..roles.messages import SetScreen

        say, sid, rig = ctx.say, ctx.session_id, ctx.rig
        if not ctx.window_open:  # a resumed visit whose recording was complete: the rest screen needs the window
            open_window(ctx)
        rig.prestart_worker()  # the feedback's worker gets ready while the subject rests (no stimulus on screen)
        say("quick-train: starting")
        BUS.publish(Phase("quick-train", "selecting and fitting the decoder", session_id=sid))
        job = _Training(ctx, self.with_encoder)
        unhook = CONTROLS.on_abort(lambda: setattr(job, "abort", True))
        try:
            job.start()
            self._rest(ctx, job)
            job.join()
        finally:
            unhook()
            if job.error is None or not isinstance(job.error, _Stop):
                rig.presenter.control(SetScreen(None))
        if job.error is not None:
            raise job.error
        t = ctx.trained
        if job.abort:
            if t.model is None:
                raise Aborted("aborted by the operator (Escape)")
            ctx.db.set_session_status(sid, SessionStatus.TRAINED, model_id=t.model.model_id, train_seconds=t.seconds)
            say(f"session {sid}: Escape during the quick-train; the model is kept and the feedback block skipped "
                "(run it later with: eegloop feedback)")
            BUS.publish(Finished("aborted", sid))
            ctx.ended = "aborted"

    @staticmethod
    def _rest(ctx: VisitContext, job: _Training) -> None:
        """While the training runs: the rest screen's countdown, Escape, a failed process (the visit fails now; the
        training stops at its next epoch)."""
        from ..rig import ChildFailedEvent
        from ..roles.messages import EscapePressed, SetScreen

        rig, sid = ctx.rig, ctx.session_id
        last = 0.0
        while job.alive:
            if time.monotonic() - last >= 0.25:
                last = time.monotonic()
                rig.presenter.control(SetScreen(job.rest_text()))
            try:
                ev = rig.events.get(timeout=0.02)
            except Exception:
                continue
            if isinstance(ev, EscapePressed):
                job.abort = True
            elif isinstance(ev, ChildFailedEvent):
                job.failure = ev.reason
                mark_failed(ctx.db, sid, None, ev.reason)
                BUS.publish(Finished("failed", sid))
                job.join(30)
                raise RecordingError(f"session {sid}: {ev.reason}; completed blocks are stored (continue "
                                     "with: eegloop session --resume)")
