"""After the subject: the report's cross-validation (whole blocks left out) and the self-contained HTML report."""
from __future__ import annotations

import numpy as np

from .._logging import logger
from ..bus import BUS, Finished, Phase
from ..errors import EegloopError
from ..database import Database, SessionStatus
from ..protocol import Protocol
from ..types import FEEDBACK_BLOCK_BASE
from .context import VisitContext, VisitPhase

__all__ = ["EvaluationPhase", "ReportPhase"]


class EvaluationPhase(VisitPhase):
    """The report's cross-validation (whole blocks left out), once the subject is done: between recording and
    feedback the subject waits for the quick-train alone (at paper scale these folds took ~7 min on 2 cores)."""

    name = "evaluation"
    uses_rig = False

    def run(self, ctx: VisitContext) -> None:
        ctx.say("cross-validating (whole blocks left out) for the report; the subject is done")
        BUS.publish(Phase("evaluation", "cross-validating for the report", session_id=ctx.session_id))
        es = _recording_epochs(ctx.db, ctx.subject, ctx.session_id)  # read once for both cross-validations
        ctx.evaluation = _evaluate_for_report(ctx.db, es, ctx.protocol, ctx.say)
        blend = _cross_validate_blend(ctx.db, es, ctx.protocol, ctx.say)
        if blend is not None:
            ctx.evaluation = {**ctx.evaluation, "group_blend": blend}
        ctx.db.set_session_status(ctx.session_id, SessionStatus.COMPLETED, ended=True,
                                  evaluation=ctx.evaluation)  # merged


class ReportPhase(VisitPhase):
    """The self-contained HTML report."""

    name = "report"
    uses_rig = False

    def run(self, ctx: VisitContext) -> None:
        from ..report import write_report

        BUS.publish(Phase("report", "writing the report", session_id=ctx.session_id))
        ctx.report = write_report(ctx.db, ctx.session_id, ctx.report_dir)
        ctx.say(f"report: {ctx.report}")
        BUS.publish(Finished("completed", ctx.session_id, str(ctx.report)))


def _recording_epochs(db: Database, subject: str, session_id: int):
    """The session's recording-block epochs (not the feedback block's cues)."""
    es = db.load_epochs(subject, [session_id])
    return es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))


def _evaluate_for_report(db: Database, es, protocol: Protocol, say) -> dict:
    """The report's cross-validation of the session's recording epochs ``es`` (:func:`_recording_epochs`)."""
    from ..decoder import evaluate, fit_teacher
    from ..decoder.evaluation import NoHonestFoldError, main_method
    from ..errors import ModelNotAvailableError

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


def _cross_validate_blend(db: Database, es, protocol: Protocol, say) -> dict | None:
    """With ``decoder.group_model`` (a weight chosen or fixed below 1), the decoder the feedback used is a blend
    with the group model, not the subject's own model the report's cross-validation scores: the same procedure
    refitted on each fold (:func:`~eegloop.decoder.calibration.blend_cross_validation`). None without a group model,
    and at weight 1 (zero calibration: the quick-train's score used no label of the subject's)."""
    from ..decoder.calibration import blend_cross_validation
    from ..decoder.groupstart import group_for, score_text

    if not protocol.decoder.group_model or protocol.decoder.group_weight == 1.0:
        return None
    try:
        found = group_for(db, protocol, warn=False)
    except EegloopError as exc:  # deleted since the quick-train (a member withdrew): said, the visit completes
        say(f"the group-based decoder could not be cross-validated: {exc}")
        return {"error": str(exc), "group_model": protocol.decoder.group_model}
    if found is None:
        return None
    from ..decoder.rejection import reject_artifacts

    rej = reject_artifacts(es, protocol)  # as quick-train and the curve reject them
    es = es.subset(rej.kept) if rej.n_rejected else es
    say(f"cross-validating the decoder the feedback used (group model {found[0].name} blended, refitted on each "
        "fold) for the report")
    try:
        b = blend_cross_validation(es, protocol, found[0], seed=protocol.training.seed)
    except Exception as exc:  # an extra estimate: the visit's data and feedback are saved, it must not fail them
        logger.exception("cross-validating the group-based decoder")
        b = {"error": f"{type(exc).__name__}: {exc}"[:300], "group_model": found[0].name}
    if "error" in b:
        say(f"the group-based decoder could not be cross-validated: {b['error']}")
    else:
        say(f"group-based decoder, {b['n_folds']} {b['split']}-wise folds: {b['metric']} "
            f"{score_text(b['with_group'], b['spread_with'])}; the subject's own default alone on the same folds "
            f"{score_text(b['without_group'], b['spread_without'])} (chance {b['chance']:.3f}; group weight per fold "
            f"{', '.join(f'{w:g}' for w in b['weights'])})"
            + (f"; decoder.select_budget_s left {', '.join(b['budget_skipped'])} out of some folds' comparison"
               if b.get("budget_skipped") else ""))
    return b
