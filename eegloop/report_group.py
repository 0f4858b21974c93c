"""The report's section on a subject's calibration curve (``eegloop evaluate --calibration-curve``): the score
against minutes of the subject's own data, with and without a group model, chance and permutation p beside.

The curve is read back from the latest ``reports/calibration-<subject>-*.json`` that evaluate wrote (plain JSON,
never executed; a file that does not read as a curve is named and skipped) and drawn again, so the session report
shows what the lab measured before deciding how long this subject's calibration needs to be.
"""
from __future__ import annotations

import glob
import json
import math
from pathlib import Path
from typing import Optional

from ._html import _e, _fig, _png, _table

__all__ = ["calibration_sections", "latest_curve"]


def latest_curve(data_dir: Path, subject: str) -> Optional[tuple[Path, dict]]:
    """The latest calibration curve evaluate wrote for ``subject`` (its file and its JSON), or None."""
    files = sorted(Path(data_dir, "reports").glob(f"calibration-{glob.escape(subject)}-*.json"),
                   key=lambda f: f.stat().st_mtime)
    for f in reversed(files):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("subject") == subject and isinstance(d.get("points"), list):
            return f, d
    return None


def _weights(p: dict) -> str:
    """A point's group weight per fold (:func:`~.decoder.calibration.fold_weights`), from a curve file that may be
    damaged: only numbers kept, each with its own fold's mark."""
    from .decoder.calibration import fold_weights

    weights = p.get("weights") if isinstance(p.get("weights"), list) else []
    tuned = p.get("tuned") if isinstance(p.get("tuned"), list) else []
    tuned = tuned + [False] * (len(weights) - len(tuned))
    pairs = [(_num(w), t) for w, t in zip(weights, tuned) if _num(w) is not None]
    return fold_weights([w for w, _ in pairs], [t for _, t in pairs])


def _num(v) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _cell(v, s=None) -> str:
    v, s = _num(v), _num(s)
    return "-" if v is None else f"{v:.3f}" + (f" ± {s:.3f}" if s else "")


def calibration_sections(plt, data_dir: Path, subject: str) -> list[str]:
    """The section (a figure and a table), or nothing when evaluate never drew the subject's curve."""
    found = latest_curve(data_dir, subject)
    if found is None:
        return []
    path, d = found
    pts = [p for p in d["points"] if isinstance(p, dict) and _num(p.get("chance")) is not None]
    if not pts:
        return [f"<h2>Calibration curve</h2><p class='note'>{_e(path.name)} holds no point.</p>"]
    x = [_num(p.get("minutes_used")) if p.get("minutes") == "all" else _num(p.get("minutes")) for p in pts]
    group, metric = d.get("group_model"), str(d.get("metric", "score"))
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for key, spread, label in (("without_group", "spread_without", "per-subject default"),
                               ("with_group", "spread_with", f"with group model {group}")):
        y = [_num(p.get(key)) for p in pts]
        if all(v is None for v in y):
            continue
        e = [_num(p.get(spread)) or 0.0 for p in pts]
        ax.errorbar(x, [math.nan if v is None else v for v in y], yerr=e, marker="o", capsize=3, label=label)
    ax.plot(x, [_num(p["chance"]) for p in pts], "k--", label="chance")
    ax.set_xlabel("minutes of the subject's own labelled data (whole blocks/runs)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8, frameon=False)
    rows = [[("all" if p.get("minutes") == "all" else _e(p.get("minutes"))) + f" ({_num(p.get('minutes_used')) or 0:.1f})",
             _cell(p.get("without_group"), p.get("spread_without")), _cell(p.get("p_without_group")),
             _cell(p.get("with_group"), p.get("spread_with")), _cell(p.get("p_with_group")), _cell(p.get("chance")),
             _weights(p)] for p in pts]
    head = ["minutes (used)", "without group", "p", "with group", "p", "chance",
            "group weight per fold (t: tuned to the subject)"]
    what = (f"{_e(d.get('n_folds'))} {_e(d.get('split'))}-wise test folds (whole {_e(d.get('split'))}s held out), "
            f"{_e(d.get('permutations'))} label shuffles per point; ± the fold-to-fold standard deviation")
    return [f"<h2>Calibration curve ({_e(metric)}, group model {_e(group or 'none')})</h2>"
            f"<p>From <code>{_e(path.name)}</code> (<code>eegloop evaluate --calibration-curve</code>): {what}.</p>",
            _fig(_png(fig), f"calibration curve of {subject}: {metric} against minutes of their own data"),
            _table(rows, head)]
