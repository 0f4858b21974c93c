"""The feedback block of a visit: the worker decodes each cue's epoch and sends the image of what it read, the
presenter shows it at the next flip, every trial is stored with its latencies."""
from __future__ import annotations

from .._logging import logger
from ..bus import BUS, Finished, Phase
from ..database.claim import SessionClaim
from ..errors import EegloopError
from ..roles.child import ChildFailed
from ..types import FEEDBACK_BLOCK_BASE
from .context import RecordingError, VisitContext, VisitPhase, connect, mark_failed, open_window, start_recording

__all__ = ["FeedbackPhase"]


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
        from ..feedback.block import EMBEDDING_MODES
        from ..lsl import configure_lsl
        from ..stimuli import load_stimuli

        mode = ctx.feedback_mode or ctx.protocol.feedback.mode
        if mode not in ("live", "bank", "stimulus") + EMBEDDING_MODES:
            raise EegloopError(f"feedback mode {mode!r}: one of live, bank, stimulus, retrieve, embedding")
        configure_lsl(ctx.protocol.amplifier.lsl_scope)
        if not self.in_visit:  # what the block needs, before any process starts
            from ..errors import ModelNotAvailableError
            from ..feedback.generator import generator_available
            from ..feedback.block import load_encoder_for

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
        from ..feedback.generator import generator_available
        from ..feedback.block import EMBEDDING_MODES

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
        from ..feedback.block import feedback_result
        from ..roles.messages import LoadModel

        db, rig = ctx.db, ctx.rig
        mode = self._mode(ctx)
        worker = rig.start_worker()
        loaded = rig.call(worker, LoadModel(ctx.subject, mode))  # a bad model: one line, nothing made
        connect(ctx, expect_timings=False)
        db.get_or_add_subject(ctx.subject)
        created = ctx.session_id is None
        if created:
            ctx.session_id = db.create_session(ctx.subject, ctx.protocol, kind="feedback")
            ctx.claims.enter_context(SessionClaim(db, ctx.session_id))
        sid = ctx.session_id
        rows: list = []
        try:
            ready, d = self._block(ctx, worker, loaded, mode, rows)
        except BaseException:
            # a feedback session that never got a trial (no amplifier, no generator, ...) is not left behind
            if created and not rows and not db.get_feedback_trials(sid) and db.count_epochs(sid) == 0:
                self._forget(ctx)
            raise
        ctx.feedback = feedback_result(db, sid, loaded.model_id, mode, ctx.protocol.feedback, rows, ready.warmup_s,
                                       d.frame_rate, ready.n_classes, ready.candidates)

    def _block(self, ctx: VisitContext, worker, loaded, mode: str, rows: list):
        """The block: its trials planned, the worker prepared, the presenter showing them while the worker decodes;
        each shown trial appended to ``rows``. The worker's readiness and the display."""
        from .._files import private_dir
        from ..feedback.block import TrialLog, choose_trials
        from ..feedback.cues import cue_pools
        from ..paradigm.presentation import Aborted
        from ..roles.messages import BeginRun, CloseWindow, PrepareFeedback, ShowText, StartDecoding, Subscribe

        db, fb, say, rig, sid = ctx.db, ctx.protocol.feedback, ctx.say, ctx.rig, ctx.session_id
        n_trials = ctx.feedback_trials or fb.trials
        trial_offset = ctx.trial_offset
        if self.in_visit:  # feedback trials are numbered after the recording's
            trial_offset = max((e.trial or 0 for e in db.get_events(sid, "stim_on")), default=0)
        img_dir = db.data_dir / "images" / f"sub-{ctx.subject}" / f"ses-{sid:04d}"
        private_dir(img_dir)  # images/...: 0700 when eegloop creates it
        # cues are images the model never saw (feedback/cues.py)
        trained = frozenset(loaded.trained) if loaded.trained is not None else None
        plan = choose_trials(ctx.stimuli, n_trials, fb.seed, trial_offset,
                             cue_pools(ctx.stimuli, fb.cue_share, trained, say), fb.images_per_trial)
        ready = rig.call(worker, PrepareFeedback(plan, str(img_dir), ctx.say.shown))
        start_recording(ctx, "feedback")
        run_index = max((r.index for r in db.get_runs(sid)), default=0) + 1
        BUS.publish(Phase("feedback", f"{n_trials} trials, mode {mode}", session_id=sid))
        d = open_window(ctx)
        rig.acquisition.call(BeginRun(run_index, expect_timings=False))  # no trial timings in feedback
        rig.acquisition.call(Subscribe())
        worker.call(StartDecoding())
        log = TrialLog(db, sid, loaded.model_id, mode, n_trials, say, fb.images_per_trial, plan, trained)
        shown = self._show(ctx, worker, plan, run_index, mode, d, ready, log, rows)
        if shown.aborted:
            say("feedback aborted by the operator; trials so far are kept")
        if self.in_visit:
            try:
                rig.call(rig.presenter, ShowText("That was the last image.\n\nThank you!", duration=1.0))
            except Aborted:
                pass
            rig.presenter.call(CloseWindow())  # the subject is done: nothing frozen on screen meanwhile
        return ready, d

    @staticmethod
    def _show(ctx: VisitContext, worker, plan, run_index: int, mode: str, d, ready, log, rows: list):
        """The presenter shows the planned trials; the recording of the block is ended as it went (done, aborted,
        or failed: :class:`RecordingError`, the trials so far stored). The presenter's answer."""
        from ..rig import ChildFailedEvent
        from ..roles.messages import EndRun, FeedbackBlock, FeedbackShown, StopDecoding, StopRecording, Unsubscribe

        db, fb, rig, sid = ctx.db, ctx.protocol.feedback, ctx.rig, ctx.session_id
        e = ctx.protocol.epochs
        timeout = e.tmax + max(e.margin_s, e.right_margin_s or 0) + 3.0 + (60 if ready.live else 0)
        failure: dict = {}

        def on_event(ev):
            if isinstance(ev, FeedbackShown):
                rows.append(log.add(ev))
            elif isinstance(ev, ChildFailedEvent):
                failure.setdefault("reason", ev.reason)
                mark_failed(db, sid, run_index, ev.reason)

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
            return shown
        if rig.acquisition.failure is None:
            try:
                rig.acquisition.call(EndRun(wait=False, status="failed", reason=f"recording failed: {reason}"),
                                     timeout=30)
            except Exception as exc:
                logger.error("stopping the recording: %s", exc)
        mark_failed(db, sid, run_index, reason)
        BUS.publish(Finished("failed", sid))
        raise RecordingError(f"session {sid}: {reason}; the feedback trials so far are stored")

    @staticmethod
    def _forget(ctx: VisitContext) -> None:
        """Delete the session this phase created (no trial, no epoch): its recorder stopped first, its claim
        released."""
        from ..roles.messages import StopRecording

        rig = ctx.rig
        if ctx.recording_started and rig.acquisition.failure is None:
            try:  # its recorder first: nothing may write into a session being deleted
                rig.stream, ctx.recording_started = None, False
                rig.acquisition.call(StopRecording(status="failed"), timeout=30)
            except Exception as exc:
                logger.warning("stopping the recording: %s", exc)
        ctx.claims.close()
        ctx.db.delete_session(ctx.session_id)
        ctx.session_id = None
