"""After the subject: the report's cross-validation (whole blocks left out) and the self-contained HTML report."""
from __future__ import annotations

import numpy as np

from ..bus import BUS, Finished, Phase
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
        ctx.evaluation = _evaluate_for_report(ctx.db, ctx.subject, ctx.session_id, ctx.protocol, ctx.say)
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


def _evaluate_for_report(db: Database, subject: str, session_id: int, protocol: Protocol, say) -> dict:
    from ..decoder import evaluate, fit_teacher
    from ..decoder.evaluation import NoHonestFoldError, main_method
    from ..errors import ModelNotAvailableError

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
