"""What the phases of a visit share: the context they fill in, the phase's shape, the steps several phases take
on the rig (connect, record, open the window), and how a failed session is marked.

A visit (:class:`eegloop.session.Visit`) runs a list of phases over one rig; each phase reads and fills in the
:class:`VisitContext`. The phases themselves are :mod:`.signal`, :mod:`.recording`, :mod:`.quick_train`,
:mod:`.feedback` and :mod:`.report`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .._logging import logger
from ..bus import BUS
from ..database import Database, SessionStatus
from ..database.claim import SessionClaim
from ..errors import EegloopError
from ..progress import Reporter
from ..protocol import Protocol

__all__ = ["RecordingError", "SignalCheckFailed", "RecordResult", "Trained", "VisitContext", "VisitPhase",
           "describe_failure", "mark_failed", "fmt_duration", "connect", "start_recording", "open_window"]


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
    say: Reporter  # the visit's progress lines (eegloop.progress)
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


def describe_failure(exc: BaseException) -> str:
    """One line for a failed session's ``failure``: Ctrl-C, eegloop's own message, or a bug's type and first line."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, EegloopError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"

def mark_failed(db: Database, session_id: int, run: Optional[int], reason: str, only_open: bool = False) -> bool:
    """Session (and the run that was recording) -> ``failed`` with the reason; best effort, the database itself
    may be what failed. ``only_open``: leave a session that already ended (completed, aborted, failed) as it is."""
    try:
        if only_open and db.get_session(session_id).status in (SessionStatus.COMPLETED, SessionStatus.ABORTED,
                                                                SessionStatus.FAILED):
            return False
        for r in db.get_runs(session_id):
            if r.status == "recording" or r.index == run:
                db.update_run(r.id, status="failed", info={**(r.info or {}), "reason": reason})
        db.set_session_status(session_id, SessionStatus.FAILED, ended=True, failure=reason)
        return True
    except Exception as exc:
        logger.error("could not mark session %d failed: %s", session_id, str(exc))
        return False


def fmt_duration(s: float) -> str:
    """``m:ss``."""
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}"


def connect(ctx: VisitContext, expect_timings: bool) -> None:
    """The acquisition finds the amplifier; the session may exist from then on."""
    from ..roles.messages import Connect

    rig = ctx.rig
    if rig.stream is None:
        rig.stream = rig.call(rig.acquisition, Connect(marker_source_id=rig.marker_id,
                                                       eeg_source_id=rig.eeg_source_id,
                                                       expect_timings=expect_timings,
                                                       forward_samples=BUS.wants_samples))
        if rig.amplifier is not None:  # the simulated subject follows the markers from the first one
            from ..roles.messages import WaitMarkers

            if not rig.call(rig.amplifier, WaitMarkers()):
                logger.warning("the simulator did not connect to the marker stream")


def start_recording(ctx: VisitContext, task: str) -> None:
    """The acquisition writes into the session from now on (raw files under the data folder)."""
    from ..roles.messages import StartRecording

    if ctx.recording_started:
        return
    sid = ctx.session_id
    ctx.rig.watch("claim", lambda: SessionClaim.lost(ctx.db, sid))
    raw_dir = ctx.db.data_dir / "raw" / f"sub-{ctx.subject}" / f"ses-{sid:04d}"
    ctx.rig.call(ctx.rig.acquisition, StartRecording(sid, str(raw_dir),
                                                     f"sub-{ctx.subject}_ses-{sid:04d}_task-{task}_run"))
    ctx.recording_started = True


def open_window(ctx: VisitContext):
    """The subject's window (opened once; its display line said the first time)."""
    from ..roles.messages import OpenWindow

    d = ctx.rig.call(ctx.rig.presenter, OpenWindow())
    if not ctx.window_open:
        ctx.window_open = True
        ctx.rig.display = d
        ctx.say(f"display: {d.frame_rate:.2f} Hz" + (f" (software-paced; measured {d.measured_rate:.0f} Hz, no "
                                                     "vsync)" if d.paced else " (measured)") + f"; {d.scheduling}")
    return d
