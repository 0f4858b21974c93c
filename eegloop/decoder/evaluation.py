"""Evaluation that cannot fool its user.

Folds leave whole blocks (default) or whole runs out, never a random split of trials; a class no honest fold can
test raises :class:`NoHonestFoldError` instead of a score (:mod:`.folds` says why); ``split="random"`` exists only
to show the difference and its results carry ``inflated: true``.

Scores always come with chance level (:mod:`.scoring`); ``shuffle_labels`` is the permutation
control.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .._logging import logger
from ..cluster import Executor, open_executor
from ..errors import EegloopError, short_repr
from ..progress import Reporter, verbose
from ..protocol import Protocol
from ..types import EpochSet
from .fitting import features_for, teacher_logits_for
from .folds import InnerSplit, NoHonestFoldError, inflation, inner_validation, make_folds
from .methods import METHODS, PAPER_NAMES, distils, get_method, is_network
from .rejection import Rejection, reject_artifacts
from .scoring import chance_levels, key_metric, paired_sign_flip, permutation_pvalue, scores
from .tasks import (CLUSTER_WORTH_S, FitResult, FitTask, SubjectData, default_workers, fixed_precision, labelled,
                    preload_for, run_fit)

__all__ = ["NoHonestFoldError", "make_folds", "scores", "evaluate", "evaluate_subjects", "EvalInput", "EvalReport",
           "METHODS", "PAPER_NAMES",
           "inner_validation", "InnerSplit", "reject_artifacts", "Rejection", "permutation_pvalue", "across_subjects",
           "main_method", "Ablation"]


def main_method(protocol: Protocol) -> str:
    """The decoder the protocol's online loop uses: ``decoder.model`` (``auto`` unless pinned)."""
    return protocol.decoder.model


def describe_alphas(alphas: list, configured: float) -> str:
    """In words, the distillation weight each fold trained with (1: plain cross-entropy; None: a pipeline)."""
    n = len(alphas)
    nets = [a for a in alphas if a is not None]
    kd = [a for a in nets if a < 1.0]
    parts = []
    if kd:
        parts.append(f"distilled from the teacher (alpha {kd[0]:g}) in {len(kd)}/{n} folds")
    if len(nets) > len(kd):
        parts.append(f"plain cross-entropy (alpha 1) in {len(nets) - len(kd)}/{n} folds")
    if len(nets) < n:
        parts.append(f"a pipeline (no distillation) in {n - len(nets)}/{n} folds")
    out = "; ".join(parts)
    if kd and len(kd) < len(nets):
        out += f" (training.alpha {configured:g} needs the teacher's soft targets for every training epoch)"
    return out



@dataclass
class Ablation:
    """One distilling method fitted on the same folds, with the same seeds, with and without the teacher."""

    method: str
    metric: str
    with_teacher: list  # key metric per fold
    without_teacher: list
    alpha_with: list  # alpha per fold (1: the teacher gave no soft targets for that fold)
    alpha_without: list
    stopped_with: int = 0  # folds the time budget ended
    stopped_without: int = 0

    @property
    def diff(self) -> list:
        return [a - b for a, b in zip(self.with_teacher, self.without_teacher)]

    @property
    def p(self) -> float:
        return paired_sign_flip(self.diff)

    def to_json(self) -> dict:
        d = self.diff
        return {"method": self.method, "metric": self.metric, "with_teacher": [round(v, 4) for v in self.with_teacher],
                "without_teacher": [round(v, 4) for v in self.without_teacher], "difference": [round(v, 4) for v in d],
                "mean_difference": round(float(np.nanmean(d)), 4), "std_difference": round(float(np.nanstd(d)), 4),
                "p": round(self.p, 4), "test": "exact paired sign-flip over folds, two-sided",
                "alpha_with": self.alpha_with, "alpha_without": self.alpha_without,
                "budget_stopped": [self.stopped_with, self.stopped_without]}

    def describe(self) -> str:
        d = self.diff
        label = {"balanced_accuracy": "bal. acc.", "auc": "AUC"}.get(self.metric, self.metric)
        line = (f"teacher ablation, {self.method}: {label} {np.nanmean(self.with_teacher):.3f} with the teacher, "
                f"{np.nanmean(self.without_teacher):.3f} without (alpha 1); paired difference "
                f"{np.nanmean(d):+.3f} (std {np.nanstd(d):.3f}) over {len(d)} folds, p {self.p:.3f} "
                f"(exact sign-flip, two-sided" + (f"; never below {2 / 2 ** len(d):.3f} with {len(d)} folds"
                                                  if len(d) <= 8 else "") + ")")
        if all(a is None for a in self.alpha_with + self.alpha_without):
            line += " — a pipeline in every fold: nothing to distil"
        elif not any(a is not None and a < 1 for a in self.alpha_with):
            line += " — the teacher gave no soft targets in any fold: nothing was distilled"
        if self.stopped_with or self.stopped_without:
            line += (f" — the time budget stopped {self.stopped_with} and {self.stopped_without} fits: "
                     "--budget 0 trains both fully")
        return line


@dataclass
class EvalReport:
    split: str
    n_folds: int
    n_epochs: int
    n_classes: int
    classes: dict
    chance: dict
    inflated: bool
    shuffled: bool
    inflated_why: str = ""  # what makes the scores inflated ("" when they are not)
    methods: dict = field(default_factory=dict)  # method -> list of per-fold score dicts
    confusion: dict = field(default_factory=dict)  # method -> matrix (true x predicted)
    histories: dict = field(default_factory=dict)  # method -> per-fold training histories
    teacher_accuracy: Optional[float] = None
    notes: list = field(default_factory=list)
    selected: list = field(default_factory=list)  # auto: the candidate chosen in each outer fold
    seconds: dict = field(default_factory=dict)  # method -> seconds over all folds
    null: dict = field(default_factory=dict)  # method -> key metric of each label-shuffled refit
    rejection: Optional[dict] = None
    budget_stopped: dict = field(default_factory=dict)  # method -> folds whose training the time budget ended
    select_skipped: dict = field(default_factory=dict)  # auto: candidate -> folds its selection's budget left it out
    fit_cap_s: dict = field(default_factory=dict)  # method -> seconds each of its fits was allowed
    alphas: dict = field(default_factory=dict)  # method -> distillation weight alpha per fold (1: no teacher)
    ablation: dict = field(default_factory=dict)  # method -> Ablation (evaluate(ablation="teacher"))

    @property
    def key_metric(self) -> str:
        return key_metric(self.n_classes)

    def pvalues(self) -> dict:
        """Permutation p-value of each method's key metric (AUC for two classes, else balanced accuracy)."""
        s = self.summary()
        return {m: permutation_pvalue(s[m][self.key_metric], v) for m, v in self.null.items() if m in s and v}

    def summary(self) -> dict:
        """Mean (and std) over folds per method and metric."""
        out = {}
        for m, folds in self.methods.items():
            keys = folds[0].keys()
            out[m] = {k: float(np.nanmean([f[k] for f in folds])) for k in keys}
            out[m].update({f"{k}_std": float(np.nanstd([f[k] for f in folds])) for k in keys})
        return out

    def to_json(self) -> dict:
        s = self.summary()
        d = {"split": self.split, "n_folds": self.n_folds, "n_epochs": self.n_epochs,
             "chance_top1": self.chance["chance_top1"], "inflated": self.inflated,
             **({"inflated_why": self.inflated_why} if self.inflated else {}),
             "shuffled_labels": self.shuffled, "key_metric": self.key_metric,
             "methods": {m: {k: round(v, 4) for k, v in s[m].items() if not k.endswith("_std")} for m in s}}
        if self.teacher_accuracy is not None:
            d["teacher_top1"] = round(self.teacher_accuracy, 4)
        if self.selected:
            d["selected"] = list(self.selected)
        if self.null:
            d["permutations"] = max(len(v) for v in self.null.values())
            d["pvalues"] = {m: round(p, 4) for m, p in self.pvalues().items()}
        if self.seconds:
            d["seconds"] = {m: round(v, 2) for m, v in self.seconds.items()}
        if self.rejection is not None:
            d["rejection"] = self.rejection
        if self.budget_stopped:
            d["budget_stopped"] = dict(self.budget_stopped)
        if self.select_skipped:
            d["select_budget_skipped"] = dict(self.select_skipped)
        if self.alphas:
            d["alpha"] = {m: list(v) for m, v in self.alphas.items()}
        if self.ablation:
            d["ablation"] = {m: a.to_json() for m, a in self.ablation.items()}
        return d

    def table(self) -> str:
        """The paper's Table 1 layout: mean (std) over folds, chance beside."""
        s = self.summary()
        metrics = [k for k in ("top1", "balanced_accuracy", "top3", "top5", "f1", "kappa", "auc")
                   if any(k in v for v in s.values())]
        label = {"balanced_accuracy": "bal. acc."}
        pv = self.pvalues()
        head = f"{'method':<48}" + "".join(f"{label.get(k, k):>16}" for k in metrics) + (f"{'p':>8}" if pv else "") \
            + f"{'seconds':>9}"
        lines = []
        if self.inflated:
            lines.append("!! RANDOM SPLIT: trials of the same block are in train and test — these scores are INFLATED !!"
                         if self.split == "random" else f"!! {self.inflated_why} — these scores are INFLATED !!")
        if self.shuffled:
            lines.append("(control: labels shuffled — scores should sit at chance)")
        lines.append(f"{self.split}-wise folds: {self.n_folds}, epochs: {self.n_epochs}, classes: {self.n_classes}")
        lines.append(head)
        lines.append("-" * len(head))
        for m in [m for m in METHODS if m in s] + [m for m in s if m not in METHODS]:
            row = f"{PAPER_NAMES.get(m, m):<48}"
            for k in metrics:
                row += f"{s[m][k]:>9.3f} ({s[m][k + '_std']:.3f})" if k in s[m] else f"{'':>16}"
            if pv:
                row += f"{pv[m]:>8.3f}" if m in pv else f"{'':>8}"
            row += f"{self.seconds.get(m, float('nan')):>9.1f}"
            lines.append(row)
        ch = self.chance
        row = f"{'chance':<48}"
        for k in metrics:
            key = {"top1": "chance_top1", "top3": "chance_top3", "top5": "chance_top5", "auc": "chance_auc",
                   "balanced_accuracy": "chance_balanced_accuracy", "kappa": None, "f1": None}[k]
            row += f"{ch[key]:>16.3f}" if key and key in ch else (f"{0.0:>16.3f}" if k == "kappa" else f"{'':>16}")
        lines.append(row)
        if pv:
            lines.append(f"p: permutation p-value of {label.get(self.key_metric, self.key_metric)} from "
                         f"{max(len(v) for v in self.null.values())} label-shuffled refits per method")
        if self.selected:
            from collections import Counter

            lines.append("auto chose, per outer fold: " + ", ".join(f"{m} x{n}" for m, n in
                                                                   Counter(self.selected).most_common()))
        if self.teacher_accuracy is not None:
            lines.append(f"teacher (CLIP linear head) accuracy over images: {self.teacher_accuracy:.3f}")
        lines += [a.describe() for a in self.ablation.values()]
        lines += self.notes
        return "\n".join(lines)



@dataclass
class EvalInput:
    """One subject for :func:`evaluate_subjects`: its epochs, its protocol, the methods (None: the protocol's
    decoder) and the teacher (None: no soft targets)."""

    es: EpochSet
    protocol: Protocol
    methods: Optional[Sequence[str]] = None
    teacher: object = None


@dataclass
class _Plan:
    """One subject's evaluation before any fit: the epochs, the folds, their features, the methods, the teacher
    (None when it gives no soft targets), the time budget and the report the fits fill."""

    subject: str
    es: EpochSet
    folds: list
    feats: dict
    protocol: Protocol
    split: str
    teacher: object
    methods: tuple
    budget: float
    report: "EvalReport"
    say: Callable[[str], None]

    def tasks(self, methods, ablation, permutations: int, seed: int, max_s=None, fix_precision=False) -> list:
        """Every fit of ``methods``: each fold with the true labels (and without the teacher for the ablation),
        then each label shuffle's folds; the seeds and shuffles are the serial evaluation's."""
        n = len(self.es)
        rng = np.random.default_rng(seed + 1000)  # the same shuffles for every method
        perms = [rng.permutation(n) for _ in range(permutations)]
        out = []
        for m in methods:
            tr0 = self.folds[0][0]
            prec = fixed_precision(m, self.es, self.feats, tr0, self.protocol) if fix_precision else None
            passes = [(0, None, True, seed)] + ([(0, None, False, seed)] if ablation and distils(m) else [])
            passes += [(i + 1, perm, True, seed + 7919 * (i + 1)) for i, perm in enumerate(perms)]
            for i, perm, teach, s in passes:
                les = labelled(self.es, perm)
                for k, (tr_all, te) in enumerate(self.folds):
                    tl = (teacher_logits_for(self.teacher, les, tr_all)
                          if teach and self.teacher is not None and distils(m) else None)
                    out.append(FitTask(self.subject, m, k, i, s + k, tr_all, te, perm, tl, teach, max_s, prec,
                                       None if self.budget else float("inf")))  # --budget 0: no time limit
        return out


def _plan(subject: str, inp: EvalInput, split, n_folds, shuffle_labels: bool, seed: int, reject: bool,
          ablation, budget_s, base_say) -> _Plan:
    """Everything before the fits (every check, the folds, the features): one line for a bad request."""
    protocol = inp.protocol
    say = (lambda text: base_say(f"{subject}: {text}")) if subject else base_say
    split = split or protocol.training.split
    n_folds = n_folds or protocol.training.n_folds
    methods = _checked_methods(inp.methods, protocol, ablation)
    es, rej = _prepared_epochs(inp.es, protocol, reject, shuffle_labels, seed, say)
    folds = make_folds(es, split, n_folds, seed)
    notes = []
    methods = _fittable(methods, es, say, notes)
    teacher = inp.teacher
    has_teacher = teacher is not None and len(es.images) == len(es) and all(es.images)
    if ablation and not has_teacher:
        raise EegloopError("--ablation teacher: no teacher soft targets (teacher disabled, its weights "
                           "unavailable, or epochs without known stimulus images): nothing to compare")
    if not has_teacher and any(distils(m) for m in methods):
        notes.append("no teacher soft targets (teacher disabled, unavailable, or epochs without images): "
                     "kd_* methods trained with alpha = 1 (plain cross-entropy)")
    if rej is not None and rej["rejected"]:
        notes.append(f"artifact rejection: {rej['rejected']} epochs dropped before the folds were made")
    feats = features_for(es, protocol, methods)
    why = inflation(es, folds, split)
    if why and split != "random":
        say(f"!! {why}: scores INFLATED")
    report = EvalReport(split=split, n_folds=len(folds), n_epochs=len(es), n_classes=len(es.classes),
                        classes=dict(es.classes), chance=chance_levels(es), inflated=bool(why), inflated_why=why,
                        shuffled=shuffle_labels, teacher_accuracy=getattr(teacher, "accuracy", None), notes=notes,
                        rejection=rej)
    budget = protocol.decoder.evaluate_budget_s if budget_s is None else budget_s
    return _Plan(subject, es, folds, feats, protocol, split, teacher if has_teacher else None, methods, budget,
                 report, say)


class _Progress:
    """One line per (subject, method) when its last fit is done (in whatever order the workers finish them)."""

    def __init__(self, plans: dict, tasks: list):
        self.plans, self.tasks, self.results = plans, tasks, {}
        self.left = {}
        for t in tasks:
            self.left[t.group] = self.left.get(t.group, 0) + 1
        self.n_done = 0

    def __call__(self, i: int, result: FitResult) -> None:
        task = self.tasks[i]
        self.results[i] = result
        self.n_done += 1
        self.left[task.group] -= 1
        if self.left[task.group]:
            return
        plan = self.plans[task.subject]
        mine = [(t, self.results[j]) for j, t in enumerate(self.tasks) if t.group == task.group]
        key = plan.report.key_metric
        main = [np.nan if len(set(t.test)) == 0 else scores(plan.es.y[t.test], r.proba)[key]
                for t, r in mine if t.permutation == 0 and t.teach]
        n_perm = len({t.permutation for t, _ in mine}) - 1
        secs = sum(r.seconds for _, r in mine)
        plan.say(f"{task.method}: {len(main)} folds, {key} {np.nanmean(main):.3f} "
                 f"(chance {plan.report.chance.get('chance_' + key, float('nan')):.3f})"
                 + (f", {n_perm} shuffled-label refits" if n_perm else "")
                 + f"; {len(mine)} fits, {secs:.1f} s of fitting ({self.n_done}/{len(self.tasks)} fits done)")


def _run(executor: Executor, plans: dict, tasks: list, progress: Optional["_Progress"] = None,
         index: Optional[list] = None) -> list:
    """The fits of ``tasks`` where ``executor`` runs them, each subject's data shipped once: results in task order
    (``progress`` counts them as the tasks ``index`` of its own list, when some of that list were run before)."""
    shared = {s: executor.share(SubjectData(p.es, p.feats, p.protocol, p.split)) for s, p in plans.items()
              if any(t.subject == s for t in tasks)}
    prog = progress or _Progress(plans, tasks)
    where = index or list(range(len(tasks)))
    return executor.map(run_fit, [(t, shared[t.subject]) for t in tasks], lambda i, r: prog(where[i], r))


def _network_cap(plans: dict, light: list, light_results: list, wall: float, slots: int, ablation) -> Optional[float]:
    """Seconds each network fit may take: what the pipelines left of each subject's budget (never less than 40 %
    of it: rows cut to nothing teach nothing), shared out among the network fits (permutation refits aside, as
    ever), ``slots`` at a time."""
    fits, left = 0, 0.0
    spent = sum(r.seconds for r in light_results) or 1.0
    for s, p in plans.items():
        nets = [m for m in p.methods if is_network(m)]
        if not nets or not p.budget:
            continue
        fits += sum(2 if ablation and distils(m) else 1 for m in nets) * len(p.folds)
        mine = sum(r.seconds for t, r in zip(light, light_results) if t.subject == s)
        left += max(p.budget - wall * mine / spent, 0.4 * p.budget)
    if not fits:
        return None
    cap = max(1.0, 0.85 * left / -(-fits // slots))
    for p in plans.values():
        if p.budget:
            p.report.fit_cap_s.update({m: round(cap, 1) for m in p.methods if is_network(m)})
    return cap


def _fill(plan: _Plan, pairs: list, ablation) -> None:
    """``plan``'s report from its fits (in task order): scores, confusion, auto's choices, ablation, nulls."""
    report, es = plan.report, plan.es
    key = report.key_metric
    for m in plan.methods:
        mine = [(t, r) for t, r in pairs if t.method == m]
        rows = {}
        for t, r in mine:
            rows.setdefault((t.permutation, t.teach), []).append((t, r))
        per = {}
        for (i, teach), fits in rows.items():
            yy = labelled(es, fits[0][0].labels).y
            per[(i, teach)] = [scores(yy[t.test], r.proba) for t, r in fits]
        main = rows[(0, True)]
        report.methods[m] = per[(0, True)]
        report.histories[m] = [r.history for _, r in main]
        conf = np.zeros((len(es.classes),) * 2, int)
        for t, r in main:
            np.add.at(conf, (es.y[t.test], r.proba.argmax(1)), 1)
        report.confusion[m] = conf.tolist()
        stopped = sum(r.stopped == "time_budget" for _, r in main)
        if stopped:
            report.budget_stopped[m] = stopped
        alphas = [r.alpha for _, r in main]
        if distils(m) or any(a is not None for a in alphas):
            report.alphas[m] = alphas
        if m == "auto":
            report.selected = [r.method for _, r in main]
            report.select_skipped = dict(Counter(c for _, r in main for c in r.budget_skipped))
        report.seconds[m] = sum(r.seconds for t, r in mine if t.permutation == 0)
        if (0, False) in rows:
            off = rows[(0, False)]
            report.ablation[m] = Ablation(m, key, [f[key] for f in per[(0, True)]], [f[key] for f in per[(0, False)]],
                                          alphas, [r.alpha for _, r in off], stopped,
                                          sum(r.stopped == "time_budget" for _, r in off))
            plan.say(report.ablation[m].describe())
        nulls = sorted(i for i, teach in rows if i > 0)
        if nulls:
            report.null[m] = [float(np.nanmean([f[key] for f in per[(i, True)]])) for i in nulls]


def _checked_methods(methods, protocol: Protocol, ablation: str | None) -> tuple:
    """The methods asked for (the protocol's decoder by default), each once; one line for a bad request."""
    methods = tuple(dict.fromkeys(methods or (main_method(protocol),)))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise EegloopError(f"--methods: unknown method {short_repr(unknown[0])}; choose from {', '.join(METHODS)}")
    if ablation not in (None, "teacher"):
        raise EegloopError(f"--ablation: only 'teacher', got {short_repr(ablation)}")
    if ablation and not any(distils(m) for m in methods):
        raise EegloopError(f"--ablation teacher: none of the methods distils ({', '.join(methods)}); "
                           "add auto or a kd_* method")
    return methods


def _prepared_epochs(es: EpochSet, protocol: Protocol, reject: bool, shuffle_labels: bool, seed: int,
                     say) -> tuple[EpochSet, Optional[dict]]:
    """The epochs the folds are made of: artifacts dropped (with their counts), labels shuffled for the control."""
    rej = None
    if reject:
        rejection = reject_artifacts(es, protocol)
        rej = rejection.to_json()
        if rejection.n_rejected:
            say(rejection.describe())
            es = es.subset(rejection.kept)
    if shuffle_labels:
        rng = np.random.default_rng(seed + 99)
        es = es.subset(np.arange(len(es)))
        es.labels = es.labels[rng.permutation(len(es))]
    return es, rej


def _fittable(methods: tuple, es: EpochSet, say, notes: list) -> tuple:
    """The methods worth fitting on this shape of data; the others are said and noted (all of them: one line)."""
    from .pipelines import skip_reason

    skipped = {m: skip_reason(m, es.data.shape[1], len(es.classes)) for m in methods}
    skipped = {m: why for m, why in skipped.items() if why}
    if skipped:
        if len(skipped) == len(methods):
            m, why = next(iter(skipped.items()))
            raise EegloopError(f"--methods: {m} cannot be fitted here: {why}")
        methods = tuple(m for m in methods if m not in skipped)
        for m, why in skipped.items():
            say(f"{m}: skipped ({why})")
            notes.append(f"{m} skipped: {why}")
    return methods



def _final_notes(report: "EvalReport", methods: tuple, protocol: Protocol, budget: float) -> None:
    report.methods = {m: report.methods[m] for m in methods}  # the order asked for
    for m, alphas in report.alphas.items():
        if distils(m):
            report.notes.append(f"{m}: {describe_alphas(alphas, protocol.training.alpha)}")
    if report.budget_stopped:
        report.notes.append(
            f"time budget {budget:g} s (decoder.evaluate_budget_s, --budget): training stopped early in "
            + ", ".join(f"{m} {n}/{report.n_folds} folds (cap {report.fit_cap_s[m]:g} s a fit)"
                        for m, n in report.budget_stopped.items())
            + "; those rows are what the networks reach in that time: --budget 0 trains them fully")
    if report.select_skipped:  # wall-clock: another run, or the same fits on a cluster, may compare more
        report.notes.append(
            f"auto: its selection's time budget ({protocol.decoder.select_budget_s:g} s, decoder.select_budget_s) "
            "left out " + ", ".join(f"{c} in {n}/{report.n_folds} folds" for c, n in report.select_skipped.items())
            + "; a run on another machine or load may compare more of them: --budget 0 compares every candidate")


def _executor(cluster, workers, plans: dict, permutations: int,
              probe: Optional[Callable[[], tuple[float, int]]] = None) -> Executor:
    """Where the fits run: ``cluster``/``workers`` as given; by default a Dask LocalCluster of one worker per core
    (``EEGLOOP_JOBS``) for several subjects, a network or a permutation test, and this process, one fit after
    another, for one subject's pipelines (a pipeline fold fits in well under a second, a LocalCluster takes about
    two to start and its workers a few more to import eegloop) or on one core. Where a cluster would be opened
    for one subject's pipelines and ``auto`` (or CEBRA), ``probe`` first runs one fit of the costliest of them
    here and returns its seconds and how many fits of that cost are left: if those would take under
    :data:`CLUSTER_WORTH_S` one after another (a visit's report on a short recording), everything stays here —
    a measurement, not a guess from the data's size."""
    preload = preload_for([m for p in plans.values() for m in p.methods])
    if cluster is not None or workers is not None:
        return open_executor(cluster, workers, preload=preload)
    n = default_workers(sum(len(p.folds) * len(p.methods) for p in plans.values()) * (1 + permutations))
    heavy = any(get_method(m).parallel_folds for p in plans.values() for m in p.methods)
    if n >= 2 and (len(plans) > 1 or heavy or permutations):
        networks = any(is_network(m) for p in plans.values() for m in p.methods)
        if probe is not None and not networks and len(plans) == 1:
            seconds, left = probe()
            if seconds * left < CLUSTER_WORTH_S:
                logger.info("evaluation: one fit took %.1f s; the other %d like it run here (a LocalCluster would "
                            "take longer to start than they take)", seconds, left)
                return open_executor()
        return open_executor(workers=n, preload=preload)
    return open_executor()


@verbose
def evaluate_subjects(subjects: dict, split: str | None = None, n_folds: int | None = None,
                      shuffle_labels: bool = False, progress: Callable[[str], None] | None = None, seed: int = 0,
                      permutations: int = 0, reject: bool = True, budget_s: float | None = None,
                      ablation: str | None = None, cluster=None, workers: int | None = None,
                      verbose: bool | str | int | None = None) -> dict:
    """:func:`evaluate` for several subjects at once: every fit of every subject (subjects x methods x folds x
    permutations) is one independent task, run serially, on a Dask ``LocalCluster`` or on a lab's Dask scheduler,
    with the numbers of a serial run.

    Parameters
    ----------
    subjects : dict
        Subject code -> :class:`EvalInput`.
    cluster : str | distributed.Client | eegloop.cluster.Executor | None
        A Dask scheduler's address ``tcp://HOST:PORT`` (its workers need eegloop installed; they get the epochs
        from here, never from the database), a client or executor of the caller's, or None.
    workers : int | None
        A Dask ``LocalCluster`` of that many worker processes on 127.0.0.1 (with ``cluster`` None); 0: this
        process, one fit after another. Neither given: see :func:`_executor`.

    The other parameters are :func:`evaluate`'s, for every subject. Returns subject code -> :class:`EvalReport`.
    The pipelines' fits run first; the networks' fits then share what they left of each subject's time budget.
    """
    say = Reporter(progress, bus=False)  # to progress= when given, else the eegloop.progress logger
    plans = {s: _plan(s, inp, split, n_folds, shuffle_labels, seed, reject, ablation, budget_s, say)
             for s, inp in subjects.items()}
    light = [t for p in plans.values()
             for t in p.tasks([m for m in p.methods if not is_network(m)], ablation, permutations, seed)]
    progress_light = _Progress(plans, light)
    first: dict = {}  # the probe's fit (see _executor), by task index: counted and kept like any other

    def probe() -> tuple[float, int]:
        costly = [i for i, t in enumerate(light) if get_method(t.method).parallel_folds]
        costly = costly or list(range(len(light)))  # pipelines only (a permutation test): each fit alike
        i = costly[0]
        t, p = light[i], plans[light[i].subject]
        t1 = time.perf_counter()
        first[i] = run_fit(t, SubjectData(p.es, p.feats, p.protocol, p.split))
        progress_light(i, first[i])
        return time.perf_counter() - t1, len(costly) - 1

    with _executor(cluster, workers, plans, permutations, probe if light else None) as ex:
        if len(plans) > 1 or cluster is not None or workers is not None:
            say(f"fits run {ex.describe()}")
        fix = ex.kind == "local"
        t0 = time.perf_counter()
        rest = [i for i in range(len(light)) if i not in first]
        done = dict(first)
        if rest:
            done.update(zip(rest, _run(ex, plans, [light[i] for i in rest], progress_light, index=rest)))
        light_results = [done[i] for i in range(len(light))]
        cap = _network_cap(plans, light, light_results, time.perf_counter() - t0, ex.slots, ablation)
        heavy = [t for p in plans.values()
                 for t in p.tasks([m for m in p.methods if is_network(m)], ablation, permutations, seed,
                                  cap if p.budget else None, fix)]
        heavy_results = _run(ex, plans, heavy) if heavy else []
    pairs = list(zip(light + heavy, light_results + heavy_results))
    for s, p in plans.items():
        _fill(p, [(t, r) for t, r in pairs if t.subject == s], ablation)
        _final_notes(p.report, p.methods, p.protocol, p.budget)
        logger.info("evaluation of %s done: %s", s or "the epochs", p.report.to_json())
    return {s: p.report for s, p in plans.items()}


@verbose
def evaluate(es: EpochSet, protocol: Protocol, methods=None, split: str | None = None,
             n_folds: int | None = None, shuffle_labels: bool = False, teacher=None,
             progress: Callable[[str], None] | None = None, seed: int = 0, permutations: int = 0,
             reject: bool = True, budget_s: float | None = None, ablation: str | None = None,
             cluster=None, workers: int | None = None,
             verbose: bool | str | int | None = None) -> EvalReport:
    """Cross-validate ``methods`` on ``es`` with folds by block, run or (inflated) random split.

    Parameters
    ----------
    methods : sequence of str
        Names from :data:`METHODS`; ``auto`` runs the whole model selection inside each outer fold
        (nested), so its score is what the default decoder earns on blocks it never saw.
    teacher : ClipTeacher | None
        Soft targets for the ``kd_*`` methods (and ``auto``'s), made as quick-train makes them: the linear
        head refitted on each fold's training images only, its logits for those images the training epochs'
        targets (a test image's are never needed). The alpha each fold trained with is in
        ``report.alphas``; without a teacher it is 1 (plain cross-entropy), said in the notes.
    ablation : "teacher" | None
        Also fit every distilling method (``kd_*``, ``auto``) on the same folds with the same seeds without
        the teacher (alpha = 1): ``report.ablation`` holds both rows, the paired per-fold difference of the
        key metric and its exact sign-flip p-value.
    permutations : int
        Label-shuffled refits per method for a permutation p-value (0: none).
    reject : bool
        Drop artifact epochs first (``epochs.reject_uv`` / ``epochs.flat_uv``); the counts go in the report.
    budget_s : float | None
        Wall-clock target for the whole evaluation (None: ``decoder.evaluate_budget_s``; 0: no limit).
        The scikit-learn pipelines and ``auto`` run first; the networks then share what is left (at
        least 40 % of the budget), each fit capped at its share (checked between batches, best state
        kept). Fits the cap stopped are counted per method in ``report.budget_stopped`` and named in the
        notes, never hidden. ``auto``'s inner selection keeps ``decoder.select_budget_s`` (as a visit's
        quick-train does) unless the budget is 0; the candidates it left out, per fold, are in
        ``report.select_skipped`` and the notes.
    cluster, workers
        Where the fits run (:func:`evaluate_subjects`): a Dask scheduler's address ``tcp://HOST:PORT``, or a
        ``LocalCluster`` of ``workers`` processes; every fit's seed is its own, so the scores are a serial run's.
    """
    return evaluate_subjects({"": EvalInput(es, protocol, methods, teacher)}, split=split, n_folds=n_folds,
                             shuffle_labels=shuffle_labels, progress=progress, seed=seed,
                             permutations=permutations, reject=reject, budget_s=budget_s, ablation=ablation,
                             cluster=cluster, workers=workers)[""]


def across_subjects(reports: dict) -> tuple[str, dict]:
    """The paper's table over subjects: per method, each subject's key metric (p-value) and mean (std).

    ``reports`` maps subject code -> :class:`EvalReport`. Returns (printable table, JSON-ready summary).
    """
    subjects = list(reports)
    methods = []
    for r in reports.values():
        methods += [m for m in r.methods if m not in methods]
    keys = {r.key_metric for r in reports.values()}
    key = keys.pop() if len(keys) == 1 else "balanced_accuracy"
    label = {"balanced_accuracy": "bal. acc.", "auc": "AUC"}.get(key, key)
    inflated = {s: r.inflated_why for s, r in reports.items() if r.inflated}
    shuffled = [s for s, r in reports.items() if r.shuffled]
    summary = {"metric": key, "subjects": subjects, "methods": {}, "chance": {},
               "split": {s: r.split for s, r in reports.items()},
               "n_folds": {s: r.n_folds for s, r in reports.items()},
               "inflated": bool(inflated), "inflated_subjects": inflated,
               "shuffled_labels": bool(shuffled), "shuffled_subjects": shuffled}
    width = max(12, *(len(s) + 2 for s in subjects))
    head = f"{'method':<44}" + "".join(f"{s:>{width}}" for s in subjects) + f"{'mean (std)':>18}"
    lines = []
    if inflated:
        lines.append(f"!! INFLATED scores for {', '.join(inflated)}: "
                     + "; ".join(f"{s}: {why}" for s, why in inflated.items())
                     + (" — the mean mixes them in" if len(inflated) < len(reports) else "") + " !!")
    if shuffled:
        lines.append(f"(control: labels shuffled for {', '.join(shuffled)} — scores should sit at chance)")
    lines += [f"{label} per subject ({', '.join(f'{s}: {r.split}-wise, {r.n_folds} folds' for s, r in reports.items())})",
              head, "-" * len(head)]
    for m in [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]:
        vals, cells, per = [], [], {}
        for s, r in reports.items():
            sm = r.summary().get(m)
            if sm is None or key not in sm:
                cells.append(f"{'-':>{width}}")
                continue
            p = r.pvalues().get(m)
            vals.append(sm[key])
            per[s] = {key: round(sm[key], 4), "p": round(p, 4) if p is not None else None}
            cells.append(f"{sm[key]:>{width - 9}.3f}" + (f" (p {p:.2f})" if p is not None else " " * 9))
        mean, std = (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))
        summary["methods"][m] = {"per_subject": per, "mean": round(mean, 4), "std": round(std, 4)}
        lines.append(f"{PAPER_NAMES.get(m, m):<44}" + "".join(cells) + f"{mean:>11.3f} ({std:.3f})")
    ck = {"auc": "chance_auc", "balanced_accuracy": "chance_balanced_accuracy"}.get(key, "chance_top1")
    ch = [r.chance.get(ck, float("nan")) for r in reports.values()]
    summary["chance"] = {s: r.chance.get(ck) for s, r in reports.items()}
    lines.append(f"{'chance':<44}" + "".join(f"{c:>{width - 9}.3f}{'':9}" for c in ch) + f"{np.mean(ch):>11.3f}")
    if any(r.null for r in reports.values()):
        n = max(max((len(v) for v in r.null.values()), default=0) for r in reports.values())
        lines.append(f"p: permutation p-value per subject and method ({n} label-shuffled refits each)")
    return "\n".join(lines), summary
