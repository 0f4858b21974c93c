"""What a lab needs to decide on group models: the calibration curve (leave-one-subject-out scores: :mod:`.loso`).

:func:`calibration_curve` scores a subject against minutes of their own labelled data (0, 2, 5, 10, 20, all: the
points the subject has data for), with and without a group model:

- the test folds hold whole blocks or runs out (:func:`~.folds.make_folds`); for each fold the calibration
  epochs are the remaining blocks/runs in recording order, taken whole from the start while their minutes stay
  within the point's (:func:`plan_calibration`): a test fold never holds a calibration epoch;
- a block's (or run's) minutes are its epochs' onset span (first to last onset, plus one stimulus onset
  asynchrony; the paradigm's ``image_s`` per epoch when onsets are unknown), summed over the calibration groups:
  recorded time without the pauses between groups and the held-out groups — with ``split="run"`` the pauses
  between a run's own blocks are inside its span and count;
- without the group model: the per-subject default (``decoder.model``) fitted on those epochs (0 minutes: chance);
  with it: :func:`~.adapt.adapt` (zero calibration at 0 minutes, then the blend weighed on inner folds);
- chance and a permutation p beside each point: the subject's labels shuffled (calibration and test epochs
  alike, the same shuffle), everything refitted, ``permutations`` times. A shuffle of the calibration labels
  alone would leave the group model's zero-calibration score untouched: it tests the score, not the labels' use.

Leave-one-subject-out scores are :mod:`.loso`'s. :func:`blend_cross_validation` is the curve's "all" point on a
visit's session: the group-based decoder the feedback used, refitted on each of the protocol's folds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import EegloopError
from ..progress import Reporter
from ..protocol import Protocol
from ..types import EpochSet

__all__ = ["CURVE_MINUTES", "CalibrationFold", "CalibrationPlan", "CurvePoint", "CalibrationCurve",
           "plan_calibration", "calibration_curve", "subject_epochs", "plot_curve", "check_curve_request",
           "fold_weights", "blend_cross_validation"]

#: the calibration curve's points, minutes of the subject's own data (and "all")
CURVE_MINUTES = (0, 2, 5, 10, 20)


# -- the fold plan ---------------------------------------------------------------------------------------------
@dataclass
class CalibrationFold:
    """One test fold and its calibration sets.

    Attributes
    ----------
    test : array of int
        The held-out epochs (whole blocks/runs).
    pool : array of int
        The other epochs, in recording order.
    calibration : dict
        Point (minutes, or ``"all"``) -> the calibration epochs: whole blocks/runs of ``pool`` from its start.
    minutes : dict
        Point -> the minutes those epochs span.
    """

    test: np.ndarray
    pool: np.ndarray
    calibration: dict = field(default_factory=dict)
    minutes: dict = field(default_factory=dict)


@dataclass
class CalibrationPlan:
    """The curve's points (those every fold has data for, then ``"all"``) and its folds."""

    split: str
    points: list
    folds: list


def _group_minutes(es: EpochSet, groups: np.ndarray, order: list, image_s: float) -> dict:
    """Each group's recorded minutes: its onsets' span plus one onset asynchrony (``image_s`` per epoch when its
    onsets are unknown)."""
    out = {}
    for g in order:
        on = np.sort(es.onsets[groups == g])
        d = np.diff(on)
        if len(on) and np.isfinite(on).all() and (d > 0).any():
            out[g] = (on[-1] - on[0] + float(np.median(d[d > 0]))) / 60.0
        else:
            out[g] = len(on) * image_s / 60.0
    return out


def plan_calibration(es: EpochSet, split: str, n_folds: int, image_s: float, seed: int = 0,
                     minutes: Sequence[float] = CURVE_MINUTES) -> CalibrationPlan:
    """Test folds of whole ``split`` groups and, for each, the calibration epochs of every point (see the module)."""
    from .folds import make_folds

    if split not in ("block", "run"):
        raise EegloopError(f"--split: the calibration curve holds whole blocks or runs out, got {split!r}")
    groups = es.groups(split)
    _, first = np.unique(groups, return_index=True)
    order = [groups[i] for i in sorted(first)]  # recording order: the epochs are stored in it
    span = _group_minutes(es, groups, order, image_s)
    folds = []
    for _, te in make_folds(es, split, n_folds, seed):
        held = set(groups[te].tolist())
        kept = [g for g in order if g not in held]
        pool = np.concatenate([np.flatnonzero(groups == g) for g in kept])
        fold = CalibrationFold(np.asarray(te), pool)
        for m in minutes:
            lead, total = [], 0.0
            for g in kept:
                if total + span[g] > m + 1e-9:
                    break
                lead.append(g)
                total += span[g]
            fold.calibration[m] = pool[np.isin(groups[pool], lead)]
            fold.minutes[m] = total
        fold.calibration["all"], fold.minutes["all"] = pool, sum(span[g] for g in kept)
        folds.append(fold)
    points = [m for m in minutes if m == 0 or all(len(f.calibration[m]) and f.minutes["all"] >= m for f in folds)]
    return CalibrationPlan(split, points + ["all"], folds)


# -- the curve -------------------------------------------------------------------------------------------------
@dataclass
class CurvePoint:
    """One point of the curve: mean scores over the test folds (their fold-to-fold spread beside), chance, p."""

    minutes: object  # float, or "all"
    minutes_used: float  # the calibration epochs' minutes, mean over the folds
    n_calibration: float
    without_group: Optional[float]
    with_group: Optional[float]
    chance: float
    p_with_group: Optional[float] = None
    p_without_group: Optional[float] = None
    spread_without: Optional[float] = None
    spread_with: Optional[float] = None
    weights: list = field(default_factory=list)  # the group's weight in each fold's blend
    tuned: list = field(default_factory=list)  # per fold: whether the blend's group side was the tuned model
    budget_skipped: dict = field(default_factory=dict)  # candidate -> folds (true labels) auto's time budget skipped it


@dataclass
class CalibrationCurve:
    """:func:`calibration_curve`'s result."""

    subject: str
    metric: str
    group: Optional[str]
    split: str
    n_folds: int
    permutations: int
    points: list
    plan: CalibrationPlan
    seconds: float = 0.0
    png: Optional[Path] = None
    budget_s: Optional[float] = None  # auto's comparison budget in each fit (None: the protocol's; 0: none)

    def to_json(self) -> dict:
        """What ``evaluate --calibration-curve --json`` prints (``minutes`` of ``all``: the minutes it spans)."""
        return {"subject": self.subject, "metric": self.metric,
                "curve": [{"minutes": p.minutes if p.minutes != "all" else round(p.minutes_used, 2),
                           "without_group": _rounded(p.without_group), "with_group": _rounded(p.with_group),
                           "chance": _rounded(p.chance), "p_with_group": _rounded(p.p_with_group)} for p in self.points]}

    def full_json(self) -> dict:
        """Everything, for the report folder."""
        from dataclasses import asdict

        return {**self.to_json(), "group_model": self.group, "split": self.split, "n_folds": self.n_folds,
                "permutations": self.permutations, "seconds": round(self.seconds, 2), "budget_s": self.budget_s,
                "points": [_no_nan(asdict(p)) for p in self.points],
                "folds": [{"test": f.test.tolist(), "calibration": {str(k): v.tolist() for k, v in f.calibration.items()},
                           "minutes": {str(k): round(v, 3) for k, v in f.minutes.items()}} for f in self.plan.folds]}

    def table(self) -> str:
        """The curve as text."""
        def cell(v, s=None):
            return "      -     " if v is None or v != v else f"{v:.3f}" + (f" ±{s:.3f}" if s == s and s else "       ")

        def pv(v):
            return "  -  " if v is None or v != v else f"{v:.3f}"

        g = self.group or "none"
        rows = [f"calibration curve of {self.subject}: {self.metric}, {self.n_folds} {self.split}-wise test folds "
                f"(whole {self.split}s held out), group model {g}, {_shuffles(self.permutations)}",
                f"{'minutes':>14}  {'epochs':>6}  {'without group':>13}  {'p':>5}  {'with group':>13}  {'p':>5}  "
                f"{'chance':>6}  group weight"]
        for p in self.points:
            name = f"{p.minutes:g}" if p.minutes != "all" else "all"
            w = fold_weights(p.weights, p.tuned)
            rows.append(f"{name + f' ({p.minutes_used:.1f})':>14}  {p.n_calibration:>6.0f}  "
                        f"{cell(p.without_group, p.spread_without):>13}  {pv(p.p_without_group):>5}  "
                        f"{cell(p.with_group, p.spread_with):>13}  {pv(p.p_with_group):>5}  {p.chance:>6.3f}  {w}")
        rows.append("minutes (in brackets: the recorded minutes used, mean over folds) of whole blocks/runs from the "
                    "start; ± the fold-to-fold standard deviation; p: permutation p (labels shuffled, refitted); "
                    "group weight per fold, 't': the group model tuned to the subject")
        skipped = self.budget_note()
        if skipped:
            rows.append(skipped)
        return "\n".join(rows)

    def budget_note(self) -> str:
        """The candidates auto's wall-clock budget left out (and where), or ''."""
        total: dict = {}
        for p in self.points:
            for name, n in p.budget_skipped.items():
                at = "all" if p.minutes == "all" else f"{p.minutes:g} min"
                total.setdefault(name, []).append(f"{at}: {n} of {self.n_folds} folds")
        if not total:
            return ""
        where = "; ".join(f"{name} ({', '.join(v)})" for name, v in total.items())
        whose = "decoder.select_budget_s" if self.budget_s is None else f"--budget {self.budget_s:g} s"
        return (f"the per-subject default's comparison ran out of its time budget ({whose}, wall-clock) and left "
                f"out {where}: these numbers depend on this machine's speed; --budget 0 compares every candidate")


def _rounded(v) -> Optional[float]:
    """A score for JSON: 4 decimals, None for none or NaN (nothing could be fitted)."""
    return None if v is None or v != v else round(float(v), 4)


def _no_nan(obj):
    """``obj`` with every NaN float as None: the report's JSON is read by strict parsers (NaN is not JSON)."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return None if isinstance(obj, float) and obj != obj else obj


def fold_weights(weights, tuned=()) -> str:
    """The group's weight in each fold's blend, ``t`` after it where the group side was the tuned model (what the
    curve's table, the report and bench_group print); ``-`` for none."""
    tuned = list(tuned) + [False] * (len(weights) - len(tuned))
    return ", ".join(f"{w:g}{'t' if t is True and w > 0 else ''}" for w, t in zip(weights, tuned)) or "-"


def check_curve_request(db, subject: str, group: Optional[str]) -> None:
    """Before any work: the subject has epochs, the group model exists and never saw ``subject`` (one line naming
    the option)."""
    _check_has_epochs(db, subject, "--subject")
    if group is None:
        return
    if not db.group_model_exists(group):
        raise EegloopError(f"--group-model: no group model named {group!r} (list them: eegloop pretrain --list)")
    if subject in db.get_group_model(group).subjects:
        raise EegloopError(f"--group-model: {group!r} was trained on {subject}'s epochs: its calibration curve would "
                           f"not be honest (pretrain one without it: eegloop pretrain --all --exclude {subject} ...)")
    from .group import subject_labels
    from .groupstart import check_group_classes, warn_withdrawn

    check_group_classes(db, group, subject_labels(db, subject), "--group-model", f"{subject}'s epochs")
    warn_withdrawn(db, db.get_group_model(group))  # after every refusal: a refused request prints one line


class _Memo:
    """A group model whose probabilities are remembered by the epochs' content: a test fold's probabilities
    (aligned on that fold's epochs) are the same at every point of the curve and under every label shuffle."""

    def __init__(self, model):
        self.model, self.classes, self._seen = model, model.classes, {}
        self.n_subjects = getattr(model, "n_subjects", None)
        self.prior = getattr(model, "prior", None)  # whether it can be tuned (adapt's words when it cannot)

    def tuned(self, es: EpochSet):
        """The group model tuned on ``es`` (not remembered: each fold's calibration epochs differ)."""
        return self.model.tuned(es)

    def predict_proba(self, es: EpochSet) -> np.ndarray:
        import hashlib

        key = hashlib.sha1(np.ascontiguousarray(es.data).tobytes()).hexdigest()
        if key not in self._seen:
            self._seen[key] = self.model.predict_proba(es)
        return self._seen[key]


def _check_has_epochs(db, subject: str, option: str) -> None:
    if not any(db.count_epochs(s.id) for s in db.list_sessions(subject)):
        raise EegloopError(f"{option}: {subject} has no epochs (record or import a session first)")


def _fold_scores(group, es: EpochSet, cal, te, protocol: Protocol, seed: int, budget_s: Optional[float]) -> tuple:
    """One fold's scores without and with the group model (NaN where nothing can be fitted; without at 0 minutes:
    None), the group's weight in the blend, whether its group side is the tuned model, and the candidates auto's
    time budget left out of the subject's own model."""
    from .adapt import adapt, key_score
    from .groupdecoder import TunedGroup

    test = es.subset(te)
    without = with_ = weight = None
    tuned = False
    base = None
    if len(cal):
        try:
            base = adapt(None, es.subset(cal), protocol, seed=seed, budget_s=budget_s)
            without = key_score(test.y, base.predict_proba(test))
        except EegloopError:
            without = float("nan")
    if group is not None:
        cand = adapt(group, es.subset(cal), protocol, seed=seed, base=base, budget_s=budget_s)
        with_, weight = key_score(test.y, cand.predict_proba(test)), cand.weight
        tuned = isinstance(cand.group, TunedGroup)
    return without, with_, weight, tuned, base.budget_skipped if base is not None else ()


@dataclass
class _Pass:
    """One point of the curve under one labelling (the true labels, or shuffle ``shuffle``): every fold's scores."""

    minutes: object
    shuffle: Optional[int]  # None: the true labels; else the shuffle's index
    without: np.ndarray
    with_: np.ndarray
    sides: list  # per fold: (the group's weight, tuned)
    skipped: list  # per fold: the candidates the time budget left out
    seconds: float = 0.0  # the task's own time (the progress's estimate of what is left)


def _pass(group, es: EpochSet, plan: CalibrationPlan, m, protocol: Protocol, shuffle: Optional[int], perm,
          seed: int, budget_s: Optional[float]) -> _Pass:
    """Every fold of point ``m`` with the labels permuted by ``perm`` (None: the true labels): one task."""
    import time

    from .tasks import labelled

    t0 = time.perf_counter()
    les = labelled(es, perm)
    out = [_fold_scores(group, les, f.calibration[m], f.test, protocol, seed + k, budget_s)
           for k, f in enumerate(plan.folds)]
    col = [np.array([np.nan if r[i] is None else r[i] for r in out], float) for i in (0, 1)]
    return _Pass(m, shuffle, col[0], col[1], [(r[2], r[3]) for r in out], [r[4] for r in out],
                 time.perf_counter() - t0)


def _point(true: _Pass, shuffled: list, plan: CalibrationPlan, chance: float, has_group: bool) -> CurvePoint:
    """One point of the curve from its passes: means over the folds, their spread, and each column's permutation p
    (the same shuffles refit both: the per-subject default's is free beside the group's)."""
    from collections import Counter

    from .scoring import permutation_pvalue

    m, folds = true.minutes, plan.folds

    def p(attr):  # none where the true labels' score is missing (nothing could be fitted): no p of nothing
        observed = _mean(getattr(true, attr))
        return None if observed != observed else permutation_pvalue(observed, [_mean(getattr(s, attr))
                                                                               for s in shuffled])

    p_without = p("without") if shuffled and m != 0 else None
    p_with = p("with_") if shuffled and has_group else None
    return CurvePoint(m, float(np.mean([f.minutes[m] for f in folds])),
                      float(np.mean([len(f.calibration[m]) for f in folds])),
                      None if m == 0 else _mean(true.without), _mean(true.with_) if has_group else None, chance,
                      p_with, p_without, None if m == 0 else _spread(true.without),
                      _spread(true.with_) if has_group else None,
                      [w for w, _ in true.sides if w is not None], [t for w, t in true.sides if w is not None],
                      dict(Counter(n for names in true.skipped for n in names)))


def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def _mean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _spread(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def calibration_curve(db, subject: str, group: Optional[str] = None, split: str | None = None,
                      n_folds: int | None = None, permutations: int = 10, seed: int = 0,
                      progress: Optional[Callable[[str], None]] = None, cluster=None,
                      workers: Optional[int] = None, budget_s: Optional[float] = None) -> CalibrationCurve:
    """The subject's score against minutes of their own data, with and without the group model ``group``.

    Parameters
    ----------
    db : Database
    subject : str
    group : str | None
        A stored group model's name (:func:`~.group.load_group_model`); it must not hold ``subject``'s epochs.
    split, n_folds
        The test folds (default: the subject's protocol's ``training.split`` and ``n_folds``).
    permutations : int
        Label shuffles per point for the permutation p (each refits every fold; both columns get their p).
    cluster, workers
        Where the fits run, as :func:`~.loso.loso`: a scheduler's address or client, or a ``LocalCluster`` of
        ``workers`` processes (0: here). Each point under each labelling (the true labels, each shuffle) is one
        task, all sent at once to a cluster. Neither given: the curve here, one point after another, then its
        shuffles on a ``LocalCluster`` of one worker per core where they would take over
        :data:`~.tasks.CLUSTER_WORTH_S` here, else here too.
    budget_s : float | None
        The wall-clock budget of ``auto``'s comparison in each fit (None: the protocol's
        ``decoder.select_budget_s``; 0: none, every candidate compared and every network trained fully: the
        same numbers on any machine, serial or on a cluster). The candidates it left out are counted per point.
    """
    import time

    from ..cluster import open_executor
    from .group import load_group_model
    from .scoring import chance_levels, key_metric
    from .trainingset import subject_protocol

    t0 = time.perf_counter()
    say = Reporter(progress, bus=False)
    if budget_s is not None and not 0 <= budget_s <= 864_000:  # also NaN
        raise EegloopError(f"budget_s: 0 to 864000 seconds (0: none), got {budget_s!r}")
    check_curve_request(db, subject, group)
    budget = None if budget_s is None else (budget_s or float("inf"))
    preload = _preload(subject_protocol(db, subject)[0].decoder.model)
    # the scheduler first: one that never answers is one line before any epoch is read
    with open_executor(cluster, workers, preload=preload) as ex:
        es, protocol = subject_epochs(db, subject)
        split = split or protocol.training.split
        plan = plan_calibration(es, split, n_folds or protocol.training.n_folds, protocol.paradigm.image_s, seed)
        model = _Memo(load_group_model(db, group)) if group else None
        metric = key_metric(len(es.classes))
        chance = chance_levels(es)[f"chance_{metric}"]
        rng = np.random.default_rng(seed + 1000)
        perms = [rng.permutation(len(es)) for _ in range(permutations)]
        # the true labels at every point first (the curve), then each point's shuffles (its p)
        shuffles = [(m, q, perms[q]) for m in plan.points for q in range(permutations)
                    if not (group is None and m == 0)]  # nothing is fitted or scored there
        progress_of = _CurveProgress(say, subject, metric, chance, plan, permutations, len(shuffles), ex.describe(),
                                     group is not None)
        inputs = _share(ex, (model, es, plan, protocol))
        true = [(m, None, None) for m in plan.points]
        t1 = time.perf_counter()
        if ex.client is not None:  # a cluster: every task at once (its workers never wait for the curve's end)
            shuffles, true = [], true + shuffles
        passes = _run_passes(ex, inputs, true, seed, budget, progress_of)
        per_pass = (time.perf_counter() - t1) / len(plan.points)
        with _shuffle_executor(ex, cluster is not None or workers is not None, len(shuffles), per_pass,
                               preload) as ex2:
            if ex2.client is not ex.client:  # a LocalCluster opened for them: the inputs sent to its workers
                say(f"{subject}: the label-shuffled refits {ex2.describe()}")
                inputs = _share(ex2, (model, es, plan, protocol))
            passes += _run_passes(ex2, inputs, shuffles, seed, budget, progress_of)
    by_point = {m: [r for r in passes if r.minutes == m] for m in plan.points}
    points = [_point(next(r for r in rs if r.shuffle is None), [r for r in rs if r.shuffle is not None], plan,
                     chance, group is not None) for m, rs in by_point.items()]
    return CalibrationCurve(subject, metric, group, split, len(plan.folds), permutations, points, plan,
                            time.perf_counter() - t0, budget_s=budget_s)


def _share(ex, inputs: tuple) -> tuple:
    """The curve's inputs (the group model, epochs, plan, protocol) as ``ex``'s tasks get them (sent once)."""
    return tuple(None if v is None else ex.share(v) for v in inputs)


def _run_passes(ex, inputs: tuple, calls: list, seed: int, budget, progress) -> list:
    """Every ``(minutes, shuffle, permutation)`` call as a :func:`_pass` task on ``ex`` (``inputs``: :func:`_share`'s)."""
    if not calls:
        return []
    model, es, plan, protocol = inputs
    return ex.map(_pass, [(model, es, plan, m, protocol, q, perm, seed, budget) for m, q, perm in calls], progress)


def _shuffle_executor(ex, chosen: bool, n: int, per_pass_s: float, preload: tuple):
    """Where the ``n`` label-shuffled passes run: where the curve ran (``--cluster``/``--workers`` given, one core, or under :data:`~.tasks.CLUSTER_WORTH_S` of passes at the measured pace), else a Dask LocalCluster
    of one worker per core, as ``evaluate`` opens for a permutation test (not closed with the curve's executor)."""
    from ..cluster import open_executor

    k = _shuffle_workers(chosen, n, per_pass_s)  # a client exists only where --cluster/--workers chose one
    return open_executor(workers=k, preload=preload) if k else open_executor(ex)


def _shuffle_workers(chosen: bool, n: int, per_pass_s: float) -> int:
    """:func:`_shuffle_executor`'s rule: the LocalCluster's workers, or 0 to stay where the curve ran."""
    from .tasks import CLUSTER_WORTH_S, default_workers

    k = default_workers(n)
    return 0 if chosen or k < 2 or per_pass_s * n < CLUSTER_WORTH_S else k


class _CurveProgress:
    """The curve's progress lines as its tasks finish: each point's scores, the label shuffles (how many are
    done, about how long the rest will take) and each point's p once its true labels' pass and its last shuffle
    are both in (in either order: on a cluster a point's shuffles may finish before its true pass)."""

    def __init__(self, say, subject: str, metric: str, chance: float, plan: CalibrationPlan, permutations: int,
                 n_shuffles: int, where: str, has_group: bool):
        import time

        self.say, self.subject, self.metric, self.chance, self.plan = say, subject, metric, chance, plan
        self.permutations, self.n_shuffles, self.t0 = permutations, n_shuffles, time.perf_counter()
        self.has_group, self.done_shuffles, self.true, self.null = has_group, 0, {}, {}
        self._t_shuffles: Optional[float] = None
        then = (f", then {_shuffles(permutations)} of each ({n_shuffles} refits) for the permutation p"
                if n_shuffles else "")
        say(f"{subject}: calibration curve: {len(plan.points)} points{then}; {where}")

    def __call__(self, _i, r: _Pass) -> None:
        import time

        name = r.minutes if r.minutes == "all" else f"{r.minutes:g}"
        if r.shuffle is None:
            self.true[r.minutes] = r
            used = np.mean([f.minutes[r.minutes] for f in self.plan.folds])
            self.say(f"{self.subject}: {name} minutes ({used:.1f}): {self.metric} without the group model "
                     f"{_fmt(_mean(r.without))}, with it {_fmt(_mean(r.with_))} (chance {self.chance:.3f})")
        else:
            self.done_shuffles += 1
            self.null.setdefault(r.minutes, []).append(r)
            left = self.n_shuffles - self.done_shuffles
            eta = self._left_s(time.perf_counter())
            eta = "" if not left else f", about {eta / 60:.0f} min left" if eta >= 90 else f", about {eta:.0f} s left"
            self.say(f"{self.subject}: label shuffle {self.done_shuffles} of {self.n_shuffles} done ({name} minutes)"
                     f"{eta}")
        null, true = self.null.get(r.minutes, []), self.true.get(r.minutes)
        if self.permutations and len(null) == self.permutations and true is not None:
            pt = _point(true, null, self.plan, self.chance, self.has_group)  # the p the table will give
            ps = [f"{label} {v:.3f}" for v, label in ((pt.p_without_group, "without the group model"),
                                                      (pt.p_with_group, "with it")) if v is not None]
            if ps:
                self.say(f"{self.subject}: {name} minutes: permutation p {', '.join(ps)} ({_shuffles(len(null))})")

    def _left_s(self, now: float) -> float:
        """Seconds left: the shuffles' elapsed time scaled by the work left over the work done, a shuffle costing
        what its point's true-labels pass cost (a 20-minute point's folds cost more than a 2-minute point's)."""
        def cost(m):
            t = self.true.get(m)
            return t.seconds if t is not None else float(np.mean([p.seconds for p in self.true.values()] or [1.0]))

        if self._t_shuffles is None:  # the shuffles' start: the first one's end less its own time
            self._t_shuffles = now - min(p.seconds for ps in self.null.values() for p in ps)
        done = sum(cost(m) * len(ps) for m, ps in self.null.items())
        n_per = self.permutations
        left = sum(cost(m) * (n_per - len(self.null.get(m, []))) for m in self.plan.points
                   if not (m == 0 and not self.has_group))
        return (now - self._t_shuffles) * left / max(done, 1e-9)


def _shuffles(n: int) -> str:
    return f"{n} label shuffle{'s' * (n != 1)}"


def subject_epochs(db, subject: str) -> tuple[EpochSet, Protocol]:
    """The subject's recording-block epochs, artifacts rejected with its protocol (as a group model's members')."""
    from .rejection import reject_artifacts
    from .trainingset import load_training_epochs

    data = load_training_epochs(db, subject)
    rej = reject_artifacts(data.es, data.protocol)
    return (data.es.subset(rej.kept) if rej.n_rejected else data.es), data.protocol


def plot_curve(curve: CalibrationCurve, path: Path) -> Path:
    """The curve drawn (matplotlib, Agg): score against minutes, with and without the group model (each point's
    permutation p beside it), chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        fig, ax = plt.subplots(figsize=(6, 4))
        x = [p.minutes_used if p.minutes == "all" else p.minutes for p in curve.points]
        for attr, spread, label in (("without_group", "spread_without", "per-subject default"),
                                    ("with_group", "spread_with", f"with group model {curve.group}")):
            y = [getattr(p, attr) for p in curve.points]
            if all(v is None for v in y):
                continue
            y = [np.nan if v is None else v for v in y]
            e = [np.nan if getattr(p, spread) is None else getattr(p, spread) for p in curve.points]
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
            for xi, yi, pt in zip(x, y, curve.points):  # each point's permutation p beside it, where it was computed
                pv = getattr(pt, "p_" + attr)
                if pv is not None and np.isfinite(yi):
                    ax.annotate(f"p {pv:.2g}", (xi, yi), textcoords="offset points", xytext=(4, 6), fontsize=7)
        ax.plot(x, [p.chance for p in curve.points], "k--", label="chance")
        ax.set_xlabel("minutes of the subject's own labelled data (whole blocks/runs)")
        ax.set_ylabel(curve.metric)
        ax.set_title(f"calibration curve: {curve.subject}")
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        from .._files import atomic_path

        try:  # private (0600) like the JSON beside it, and whole or not at all
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=100, format="png")
        finally:
            plt.close(fig)
    return path


def blend_cross_validation(es: EpochSet, protocol: Protocol, group, seed: int = 0) -> dict:
    """The decoder a visit's feedback used when it started from ``group``, cross-validated: on each of the
    protocol's folds (``training.split``, ``n_folds``: whole blocks or runs out) the same procedure as quick-train
    (:func:`~.adapt.adapt`: the subject's own default fitted, the group's weight and side chosen on the fold's
    training part) is refitted on the other blocks and scored on the held-out ones, beside the subject's own default
    alone on the same folds (the calibration curve's "all" point). ``{"error": why}`` where no such folds exist."""
    from .scoring import chance_levels, key_metric

    try:
        plan = plan_calibration(es, protocol.training.split, protocol.training.n_folds, protocol.paradigm.image_s,
                                seed, minutes=())
        r = _pass(group, es, plan, "all", protocol, None, None, seed, None)
    except EegloopError as exc:  # NoHonestFoldError, a random split, too few blocks
        return {"error": str(exc), "group_model": group.name}
    metric = key_metric(len(es.classes))
    return {"group_model": group.name, "metric": metric, "split": plan.split, "n_folds": len(plan.folds),
            "with_group": _rounded(_mean(r.with_)), "spread_with": _rounded(_spread(r.with_)),
            "without_group": _rounded(_mean(r.without)), "spread_without": _rounded(_spread(r.without)),
            "chance": _rounded(chance_levels(es)[f"chance_{metric}"]), "folds_with": [_rounded(v) for v in r.with_],
            "folds_without": [_rounded(v) for v in r.without], "weights": [w for w, _ in r.sides],
            "tuned": [bool(t) for _, t in r.sides],
            "budget_skipped": sorted({n for names in r.skipped for n in names})}


def _preload(method: str) -> tuple:
    """What a local worker of the leave-one-subject-out or curve tasks imports once (:func:`~.tasks.preload_for`)."""
    from .methods import LIGHT, get_method, is_sklearn
    from .tasks import preload_for

    return ("eegloop.decoder.calibration", "eegloop.decoder.loso", "eegloop.decoder.group") + preload_for(
        None if not (is_sklearn(method) and get_method(method).cost == LIGHT) else [method])
