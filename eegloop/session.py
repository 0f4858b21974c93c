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
from .database import Database
from .lsl import configure_lsl
from .protocol import Protocol

__all__ = ["RecordResult", "record_session"]


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


def record_session(protocol: Protocol, subject: str, db: Database, simulate: bool = False,
                   progress: Callable[[str], None] | None = print, session_id: int | None = None,
                   runs: Optional[list[int]] = None, capture_trials=(), presenter_hook=None) -> RecordResult:
    """Run the paradigm and the recorder for the protocol's runs.

    Parameters
    ----------
    protocol : Protocol
    subject : str
        Pseudonymous code; added to the database if new.
    db : Database
    simulate : bool
        Start the virtual amplifier in this process (``amplifier.simulate`` settings).
    progress : callable | None
        Receives one line per block (run/block, time left).
    session_id : int | None
        Continue this session instead of creating one.
    runs : list of int | None
        Only these runs (1-based); default all.
    """
    from .paradigm.markers import make_marker_outlet
    from .paradigm.presentation import Presenter
    from .paradigm.schedule import make_schedule
    from .recorder.recorder import Recorder
    from .recorder.simulator import VirtualAmplifier
    from .stimuli import load_stimuli

    say = progress or (lambda _m: None)
    amp = protocol.amplifier
    configure_lsl(amp.lsl_scope)
    stimuli = load_stimuli(protocol)
    schedule = make_schedule(protocol, stimuli)
    db.get_or_add_subject(subject)
    if session_id is None:
        session_id = db.create_session(subject, protocol)
    db.add_stimuli(stimuli)
    raw_dir = db.data_dir / "raw" / f"sub-{subject}" / f"ses-{session_id:04d}"
    todo = [r for r in schedule.runs if runs is None or r.run in runs]

    outlet = make_marker_outlet(amp.marker_stream_name)
    sim = None
    if simulate:
        sim = VirtualAmplifier(amp, amp.simulate).start()
        if not sim.markers_connected.wait(10):
            logger.warning("the simulator did not connect to the marker stream")
    rec = Recorder(protocol, db=db, session_id=session_id, raw_dir=raw_dir,
                   raw_prefix=f"sub-{subject}_ses-{session_id:04d}_run").connect()
    rec.start()
    pres = Presenter(protocol, outlet, capture_trials=capture_trials)
    if presenter_hook:
        presenter_hook(pres)
    db.set_session_status(session_id, "recording")
    timings = []
    aborted = False
    runs_done = 0
    t_start = time.monotonic()
    total_blocks = sum(len(r.blocks) for r in todo)
    blocks_done = 0
    block_cost = protocol.paradigm.block_s + protocol.paradigm.pause_s
    try:
        pres.open()
        say(f"display: {pres.frame_rate:.2f} Hz" + (f" (software-paced; measured {pres.measured_rate:.0f} Hz, no vsync)"
                                                    if pres.paced else " (measured)"))
        pres.push_now("session_start", protocol=protocol.name, frame_rate_hz=round(pres.frame_rate, 3))
        outlet.wait_for_consumers(2.0)
        if protocol.paradigm.instructions:
            pres.show_text(protocol.paradigm.instructions, wait_space=protocol.paradigm.wait_for_space,
                           duration=None if protocol.paradigm.wait_for_space else 1.0)

        def on_block(block, tt):
            nonlocal blocks_done
            blocks_done += 1
            left = (total_blocks - blocks_done) * block_cost
            say(f"run {block.run}/{len(schedule.runs)}  block {block.block}/{len(schedule.blocks)}  "
                f"({len(tt)} images)  elapsed {_fmt(time.monotonic() - t_start)}  ~{_fmt(left)} left  "
                f"epochs {rec.stats.epochs}  lost samples {rec.stats.lost_samples}")

        for run in todo:
            rec.begin_run(run.run)
            result = pres.run(run, on_block=on_block)
            rec.end_run()
            rec.flush()
            timings += result.timings
            db.add_trial_timings_by_trial(session_id, [dict(trial=t.trial, **t.as_db()) for t in result.timings])
            if result.aborted:
                aborted = True
                say(f"run {run.run} aborted by the operator; everything recorded so far is kept")
                break
            runs_done += 1
        pres.push_now("session_end", status="aborted" if aborted else "completed")
    finally:
        time.sleep(0.05)
        pres.close()
        stats = rec.stop()
        if sim is not None:
            sim.stop()
    db.set_session_status(session_id, "aborted" if aborted else "recorded", ended=aborted,
                          recording={"runs_done": runs_done, "frame_rate_hz": pres.frame_rate,
                                     "paced": pres.paced, "samples_received": stats.samples_received,
                                     "lost_samples": stats.lost_samples})
    durs = np.array([t.duration_s for t in timings]) if timings else np.array([np.nan])
    err = np.abs(durs - protocol.paradigm.image_s)
    mmf = [abs(t.marker_lsl - t.actual_onset_lsl) for t in timings] or [np.nan]
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
