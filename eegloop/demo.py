"""``eegloop demo``: a whole visit on the virtual amplifier, in a few minutes, with no hardware.

The demo protocol template (4 drawn classes, 3 short runs) on the simulator, a SQLite
database and every output in one folder, a real PsychoPy window (Xvfb is
started when there is no display), feedback from a generator when one is
cached (bank mode) or else held-out stimulus images (stimulus mode). Ends with
``summary.json`` (numbers as measured, checked against the database by the
tests) and ``report.html``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

from .database import Database
from .progress import verbose
from .types import FEEDBACK_BLOCK_BASE

__all__ = ["run_demo", "demo_protocol_path"]

SUBJECT = "demo01"


def demo_protocol_path() -> Path:
    from .protocol import template_path

    return template_path("demo")


@verbose
def run_demo(out: str | Path = "eegloop-demo", quick: bool = False,
             progress: Callable[[str], None] | None = None, verbose: bool | str | int | None = None) -> dict:
    """Run the demo visit into ``out``; returns the summary written to ``out/summary.json``.

    Its progress lines go to ``progress`` when given, else to the ``eegloop.progress`` logger; ``verbose`` sets
    eegloop's log level for the call (see :mod:`eegloop.progress`).
    """
    return _run_demo(Path(out), quick, progress)


def _run_demo(out: Path, quick: bool, progress: Callable[[str], None] | None) -> dict:
    from .feedback.generator import generator_available
    from .paradigm.display import ensure_display
    from .protocol import load_protocol
    from .session import run_visit, steal_note

    from ._files import private_dir, write_private_text
    from .progress import Reporter

    t_start = time.monotonic()
    out = Path(out).resolve()
    private_dir(out)  # the demo's data folder: 0700 when eegloop creates it
    ensure_display()
    data = yaml.safe_load(demo_protocol_path().read_text())
    data["stimuli"]["folder"] = "stimuli"  # drawn inside the output folder
    if quick:  # the test suite's shorter variant
        data["paradigm"].update(images_per_class=10, runs=2)
        data["training"].update(max_epochs=10, patience=5, n_folds=2)
        data["feedback"].update(trials=4)
        # auto compares the pipelines; a network that would not finish in 8 s is skipped (and listed as such)
        data.setdefault("decoder", {}).update(select_budget_s=8)
    proto_path = out / "protocol.yaml"
    write_private_text(proto_path, yaml.safe_dump(data, sort_keys=False))  # 0600, as all in the data folder
    proto = load_protocol(proto_path)
    db = Database(f"sqlite:///{out / 'eegloop.db'}", data_dir=out)
    mode = "bank" if generator_available(proto.feedback.generator) else "stimulus"
    say = Reporter(progress, bus=False)  # the visit's own lines go on the bus; the demo's around it never did
    say(f"eegloop demo: virtual amplifier, {proto_path.name}, database {out / 'eegloop.db'}, feedback mode {mode}")
    visit = run_visit(proto, SUBJECT, db, simulate=True, progress=progress, feedback_mode=mode, report_dir=out)
    summary = build_summary(db, visit.session_id, proto_path)
    write_private_text(out / "summary.json", json.dumps(summary, indent=2))
    tm = summary["timing"]
    say(f"stimuli: {tm['dropped_frames']} dropped frames, image duration max error "
        f"{tm['stim_duration_ms_max_abs_error']:.1f} ms{steal_note(tm['cpu_steal_pct_max'])}")
    say(f"demo finished in {time.monotonic() - t_start:.0f} s; summary: {out / 'summary.json'}")
    say(f"report: {out / summary['report']}")
    return summary


def build_summary(db: Database, session_id: int, protocol_path: Path) -> dict:
    """The numbers of a visit, read back from the database."""
    info = db.get_session(session_id)
    rec = info.info.get("recording", {})
    ev = info.info.get("evaluation") or {}
    epochs = [e for e in db.get_epochs(session_id) if e.block < FEEDBACK_BLOCK_BASE]
    runs = db.get_runs(session_id)
    timings = db.get_trial_timings(session_id)
    durs = np.array([t.duration_s for t in timings]) * 1000
    fr = float(rec.get("frame_rate_hz", float("nan")))
    intended = np.array([t.intended_frames for t in timings]) * 1000 / fr
    fts = db.get_feedback_trials(session_id)
    m = db.get_model(info.info["model_id"])
    main = ev.get("main_method")
    s = (ev.get("summary") or {}).get(main, {})
    n_classes = len(ev.get("classes") or {}) or len(m.config.get("classes", {}))
    med = lambda k: float(np.median([f.latencies[k] for f in fts])) if fts else None  # noqa: E731
    from .paradigm.schedule import make_schedule
    from .protocol import load_protocol
    from .stimuli import load_stimuli

    proto = load_protocol(protocol_path)
    expected = len(make_schedule(proto, load_stimuli(proto, hash_files=False)).trials)
    return {
        "subject": info.subject,
        "session_id": session_id,
        "protocol": proto.name,
        "epochs": {"recorded": len(epochs), "expected": expected},
        "samples": {"received": int(sum(r.samples_received or 0 for r in runs)),
                    "lost": int(sum(r.lost_samples or 0 for r in runs))},
        "timing": {"frame_rate_hz": round(fr, 3), "stim_duration_ms_median": round(float(np.median(durs)), 3),
                   "stim_duration_ms_max_abs_error": round(float(np.max(np.abs(durs - intended))), 3),
                   "dropped_frames": int(sum(t.dropped_frames for t in timings)),
                   # the worst block's share of the CPU a virtual machine's host took (frames drop then)
                   "cpu_steal_pct_max": rec.get("cpu_steal_pct_max")},
        "training": {"seconds": round(float(info.info.get("train_seconds", m.metrics.get("seconds", 0.0))), 2),
                     "split": ev.get("split", m.metrics.get("split")),
                     "top1": round(float(s.get("top1", m.metrics["heldout"]["top1"])), 4),
                     "top5": round(float(s.get("top5", 1.0 if n_classes <= 5 else float("nan"))), 4),
                     "chance_top1": round(float(ev.get("chance_top1", m.metrics.get("chance_top1"))), 4),
                     "teacher_top1": m.metrics.get("teacher_top1"),
                     # cross-validated (ev) unless the visit has none: then quick-train's tuned-on set, optimistic
                     "inflated": bool(ev.get("inflated")), "optimistic": not s and m.metrics.get("heldout_optimistic", True)},
        "feedback": {"mode": fts[0].mode if fts else None, "trials": len(fts),
                     "correct": int(sum(f.predicted_class == f.true_class for f in fts)),
                     "latency_ms": {"decode_median": med("decode_ms"), "image_ready_median": med("image_ready_ms"),
                                    "to_screen_median": med("to_screen_ms"),
                                    "onset_to_screen_median": med("onset_to_screen_ms")}},
        "signal_check": [c.get("verdict") for c in info.info.get("signal_checks") or []],
        "photon_delay_ms": _photon(db, session_id, proto.timing.static_offset_ms),
        "report": "report.html",
    }


def _photon(db: Database, session_id: int, offset_ms: float) -> Optional[dict]:
    from .recorder.timing import summarize

    t = summarize(*db.photon_delays(session_id), offset_ms)
    return None if t is None else {"median": t.median_ms, "sd": t.sd_ms, "found": t.n_found, "stimuli": t.n_stimuli,
                                   "static_offset": offset_ms}
