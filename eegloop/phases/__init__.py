"""The phases of a visit (see :mod:`eegloop.session`): each a class with ``prepare(context)`` and
``run(context)``, in its own module."""
from .context import (RecordingError, RecordResult, SignalCheckFailed, Trained, VisitContext, VisitPhase,
                      describe_failure, mark_failed)
from .feedback import FeedbackPhase
from .quick_train import QuickTrainPhase
from .recording import STEAL_NOTE_PCT, RecordingPhase, steal_note
from .report import EvaluationPhase, ReportPhase
from .signal import SignalCheckPhase, gate_on_signal

__all__ = ["RecordingError", "RecordResult", "SignalCheckFailed", "Trained", "VisitContext", "VisitPhase",
           "describe_failure", "mark_failed", "FeedbackPhase", "QuickTrainPhase", "STEAL_NOTE_PCT", "RecordingPhase",
           "steal_note", "EvaluationPhase", "ReportPhase", "SignalCheckPhase", "gate_on_signal"]
