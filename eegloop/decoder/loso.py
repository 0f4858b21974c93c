"""Leave one subject out: each of several subjects scored by a group model that never saw it.

:func:`loso` scores each of several subjects with a group model trained in memory on the others that gave group
consent (:func:`~.group.fit_group_in_memory`; nothing stored), zero calibration (aligned on the subject's own
unlabelled epochs), chance and a permutation p (the model never saw the subject's labels: shuffling them needs no
refit). :func:`plan_loso` checks a request before any work (consent, epochs, classes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import EegloopError
from ..progress import Reporter
from ..types import EpochSet
from .calibration import _check_has_epochs, _preload, subject_epochs

__all__ = ["LosoRow", "LosoReport", "plan_loso", "loso"]


@dataclass
class LosoRow:
    """One held-out subject's zero-calibration score by a group model trained on ``trained_on``."""

    subject: str
    trained_on: list
    score: float
    chance: float
    p: Optional[float]
    n_epochs: int


@dataclass
class LosoReport:
    """:func:`loso`'s result."""

    method: str
    metric: str
    permutations: int
    rows: list

    def to_json(self) -> dict:
        scores = [r.score for r in self.rows]
        return {"metric": self.metric, "method": self.method, "permutations": self.permutations,
                "subjects": [{"subject": r.subject, "trained_on": r.trained_on, "score": round(r.score, 4),
                              "chance": r.chance, "p": None if r.p is None else round(r.p, 4),
                              "n_epochs": r.n_epochs} for r in self.rows],
                "mean": round(float(np.nanmean(scores)), 4)}

    def table(self) -> str:
        rows = [f"leave one subject out: {self.method} group model, zero calibration (aligned on the held-out "
                f"subject's unlabelled epochs), {self.metric}, {self.permutations} label shuffles",
                f"{'subject':<12} {self.metric:>8} {'chance':>7} {'p':>7} {'epochs':>7}  group model trained on"]
        for r in self.rows:
            p = "-" if r.p is None else f"{r.p:.3f}"
            rows.append(f"{r.subject:<12} {r.score:>8.3f} {r.chance:>7.3f} {p:>7} {r.n_epochs:>7}  "
                        f"{', '.join(r.trained_on)}")
        rows.append(f"{'mean':<12} {np.nanmean([r.score for r in self.rows]):>8.3f}")
        return "\n".join(rows)


def plan_loso(db, subjects: Sequence[str], method: str = "riemann", min_train: int = 1,
              same_classes: bool = True) -> dict:
    """Before any work: each subject -> the subjects its group model is trained on (the others with group consent;
    at least ``min_train``: a group model needs one, the zero-shot encoder two). With ``same_classes`` (a group
    classifier; not the zero-shot encoder) each held-out subject's classes must be among those its group shares.
    One line naming ``--subjects`` otherwise."""
    from .group import plan_group, subject_labels

    if len(subjects) < min_train + 1:
        raise EegloopError(f"--loso: needs at least {min_train + 1} subjects in --subjects (one held out, at least "
                           f"{min_train} to train on), got {len(subjects)}")
    consent = {c.code: c.group for c in db.subject_consents()}
    labels = {}  # each subject's classes, read once
    out = {}
    for s in subjects:
        _check_has_epochs(db, s, "--subjects")
        others = [c for c in subjects if c != s and consent.get(c)]
        if len(others) < min_train:
            raise EegloopError(f"--subjects: holding {s} out leaves {len(others)} subject(s) with group consent "
                               f"({', '.join(others) or 'none'}); at least {min_train} needed (record consent "
                               "with: eegloop subject consent CODE --group yes)")
        plan_group(db, subjects=others, method=method, same_classes=same_classes)
        if same_classes:
            for c in [s, *others]:
                if c not in labels:
                    labels[c] = subject_labels(db, c)
            shared = set.intersection(*(labels[c] for c in others))
            held = labels[s]
            if not held <= shared:
                raise EegloopError(f"--subjects: {s}'s epochs are of {', '.join(sorted(held))}; the group model of "
                                   f"{', '.join(others)} would decode {', '.join(sorted(shared))}: hold out "
                                   "subjects of the same classes together")
        out[s] = others
    return out


def loso(db, subjects: Sequence[str], method: str = "riemann", permutations: int = 1000, seed: int = 0,
         progress: Optional[Callable[[str], None]] = None, cluster=None, workers: Optional[int] = None) -> LosoReport:
    """Each subject scored by a group model (``method``) trained in memory on the other consenting subjects, zero
    calibration; chance and a permutation p (the held-out subject's labels shuffled) beside.

    Each held-out subject is one task (its group model's fit, its scoring and its label shuffles), run in this
    process one after another, or on Dask: ``cluster`` (a scheduler's address or client) or ``workers`` (a
    ``LocalCluster`` of that many processes on 127.0.0.1), every subject's epochs read once here and sent once;
    the same numbers either way (:mod:`eegloop.cluster`)."""
    from ..cluster import open_executor
    from .group import load_members

    say = Reporter(progress, bus=False)
    plan = plan_loso(db, subjects, method)
    # the scheduler first: one that never answers is one line before any epoch is read
    with open_executor(cluster, workers, preload=_preload(method)) as ex:
        members = dict(zip(subjects, load_members(db, subjects)))
        held = {s: subject_epochs(db, s)[0] for s in plan}
        say(f"leave one subject out: {len(plan)} {method} group models, {ex.describe()}")
        shared = {c: ex.share(d) for c, d in members.items()}
        calls = [(s, ex.share(held[s]), [shared[o] for o in others], method, permutations, seed)
                 for s, others in plan.items()]

        def done(_i, res):
            row, metric = res
            say(f"{row.subject}: {metric} {row.score:.3f} by a {method} group model of {', '.join(row.trained_on)}")

        results = ex.map(_loso_row, calls, done)
    return LosoReport(method, results[-1][1], permutations, [r for r, _ in results])


def _loso_row(s: str, es: EpochSet, others: list, method: str, permutations: int, seed: int):
    """One held-out subject: ``others`` (loaded members) make the group model, ``es`` is scored by it (a task)."""
    from .adapt import Adapted, key_score
    from .group import fit_group_from
    from .scoring import chance_levels, key_metric, permutation_pvalue

    model = fit_group_from(others, method=method, seed=seed)
    classes = {c: n for c, n in es.classes.items() if c in model.classes}
    es = es.subset(np.flatnonzero(np.isin(es.labels, list(classes))))
    es.classes = classes
    metric = key_metric(len(classes))
    proba = Adapted(list(classes), 1.0, None, 0, "zero calibration", model).predict_proba(es)
    y = es.y
    score = key_score(y, proba)
    rng = np.random.default_rng(seed + 1000)
    null = [key_score(y[rng.permutation(len(y))], proba) for _ in range(permutations)]
    p = permutation_pvalue(score, null) if permutations and score == score else None  # NaN: one class, no score
    return LosoRow(s, list(model.subjects), float(score), chance_levels(es)[f"chance_{metric}"], p, len(es)), metric
