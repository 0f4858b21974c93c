"""Evaluation that cannot fool its user.

Folds leave whole blocks (default) or whole runs out — never a random split of
trials, which a block design makes meaningless (Li et al. 2021): trials of one
block share slow drift, so a classifier can recognise the block instead of the
image. Where a class sits in a single block (the paper's design), no honest
fold can test it, and :func:`make_folds` raises :class:`NoHonestFoldError`
naming the classes instead of printing a score. ``split="random"`` exists only
to show the difference; its results carry ``inflated: true``.

Scores always come with chance level; ``shuffle_labels`` is the permutation
control.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .._logging import logger
from ..errors import EegloopError, short_repr
from ..protocol import Protocol
from ..types import EpochSet
from .preprocessing import Preprocessor

__all__ = ["NoHonestFoldError", "make_folds", "scores", "evaluate", "EvalReport", "METHODS", "PAPER_NAMES",
           "inner_validation", "InnerSplit", "reject_artifacts", "Rejection", "permutation_pvalue"]

METHODS = ("auto", "kd_stft", "kd_erp", "kd_wavelet", "riemann", "lda_windowed", "logreg_windowed",
           "logreg_power", "logreg_pca", "cebra_knn", "cnn_stft", "cnn_image", "lstm", "conv1d")
# Table 1's rows (Ferrante et al. 2023) and the classical pipelines that auto selection compares
BASELINES = ("logreg_power", "logreg_windowed", "logreg_pca", "lda_windowed", "riemann", "cebra_knn", "lstm",
             "conv1d", "cnn_image", "cnn_stft", "kd_wavelet")
PAPER_NAMES = {
    "auto": "Default: the best candidate on inner folds",
    "logreg_power": "Logistic regression, averaged squared signal",
    "logreg_windowed": "Logistic regression, windowed signal",
    "logreg_pca": "Logistic regression on PCA",
    "lda_windowed": "Shrinkage LDA, 50 ms window means",
    "riemann": "xDAWN covariances + tangent space + LR",
    "cebra_knn": "CEBRA embedding + kNN",
    "lstm": "LSTM (time series)",
    "conv1d": "1-D CNN (time series)",
    "cnn_image": "CNN on raw EEG as a 2-D image",
    "cnn_stft": "CNN on STFT (no distillation)",
    "kd_wavelet": "Knowledge distillation on db4 wavelets",
    "kd_stft": "Knowledge distillation on STFT",
    "kd_erp": "Residual CNN on binned ERP (KD when a teacher exists)",
}


def main_method(protocol: Protocol) -> str:
    """The decoder the protocol's online loop uses: ``decoder.model`` (``auto`` unless pinned)."""
    return protocol.decoder.model


def _rep_of(method: str) -> str | None:
    if method.startswith(("kd_", "cnn_")):
        return method.split("_", 1)[1]
    return None


def is_sklearn(method: str) -> bool:
    from .pipelines import SKLEARN_METHODS

    return method in SKLEARN_METHODS


class NoHonestFoldError(EegloopError):
    """Some class occurs in only one block/run, so leaving groups out cannot test it."""


def make_folds(es: EpochSet, split: str, n_folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs leaving whole groups out (``block``/``run``), or ``random`` (inflated)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    y = es.y
    if split == "random":
        k = int(min(n_folds, np.bincount(y).min()))
        if k < 2:
            raise EegloopError("too few epochs per class for a random split")
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    groups = es.groups(split)
    lonely = [c for c in es.class_ids if len(np.unique(groups[es.labels == c])) < 2]
    if lonely:
        shown = ", ".join(lonely[:6]) + (f", ... ({len(lonely)} of {len(es.classes)} classes)" if len(lonely) > 6 else "")
        raise NoHonestFoldError(
            f"no honest {split}-wise fold exists: class {shown} occurs in a single {split}, so a classifier "
            f"tested on that {split} never saw the class in training, and one trained on it would be tested "
            f"on trials sharing its slow drift (the block-design confound). Record with classes interleaved "
            f"(protocols/interleaved.yaml) or repeat every class in several runs (paradigm.repeats). "
            f"`--split random` shows the inflated number, labelled as such.")
    n_groups = len(np.unique(groups))
    k = int(min(n_folds, n_groups))
    if k < 2:
        raise EegloopError(f"only {n_groups} {split}(s): at least 2 are needed for {split}-wise folds")
    # shuffle group ids so folds do not follow recording order only
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    perm = dict(zip(uniq, rng.permutation(len(uniq))))
    g = np.array([perm[v] for v in groups])
    return list(GroupKFold(k).split(np.zeros(len(y)), y, g))


@dataclass
class InnerSplit:
    """Fit and early-stopping indices; ``optimistic`` when the two share blocks (a blocked design)."""

    fit: np.ndarray
    val: np.ndarray
    how: str
    optimistic: bool

    def __iter__(self):  # tr, va = inner_validation(...)
        return iter((self.fit, self.val))


def inner_validation(es: EpochSet, train_idx: np.ndarray, split: str, seed: int = 0,
                     frac: float = 0.15) -> InnerSplit:
    """Split training indices into fit/validation for early stopping, with every class in the fit set.

    Whole blocks (or runs) are held out when that leaves every class on both sides — an interleaved
    design, where each block holds every class. Otherwise (a blocked design: one class per block) the
    last trials of each class in each block are held out instead; that estimate shares the blocks' slow
    drift with training and is labelled optimistic. Either way no class is missing from the fit set.
    """
    train_idx = np.asarray(train_idx)
    rng = np.random.default_rng(seed + 1)
    y = es.y[train_idx]
    every = set(y.tolist())
    if split != "random":
        groups = es.groups(split)[train_idx]
        target = max(1, int(round(frac * len(train_idx))))
        is_val = np.zeros(len(train_idx), bool)
        for g in rng.permutation(np.unique(groups)):
            if is_val.sum() >= target:
                break
            trial = is_val | (groups == g)
            if set(y[~trial].tolist()) == every:
                is_val = trial
        if is_val.any() and set(y[is_val].tolist()) == every and set(y[~is_val].tolist()) == every:
            return InnerSplit(train_idx[~is_val], train_idx[is_val], f"held-out whole {split}s", False)
        # blocked design: the last trials of each class in each group (stratified inside the group)
        is_val = np.zeros(len(train_idx), bool)
        for g in np.unique(groups):
            for c in every:
                cell = np.flatnonzero((groups == g) & (y == c))
                if len(cell) >= 2:
                    is_val[cell[-max(1, int(round(frac * len(cell)))):]] = True
        how = f"last trials of each {split} (optimistic: shares the {split}s' slow drift with training)"
    else:  # stratified random (inflated by design, only used with --split random)
        is_val = np.zeros(len(train_idx), bool)
        for c in every:
            cell = rng.permutation(np.flatnonzero(y == c))
            if len(cell) >= 2:
                is_val[cell[:max(1, int(round(frac * len(cell))))]] = True
        how = "random trials (optimistic)"
    if not is_val.any():  # too few trials to hold any out: validate on the fit set (said so)
        return InnerSplit(train_idx, train_idx, "none (too few trials): the fit set itself", True)
    return InnerSplit(train_idx[~is_val], train_idx[is_val], how, True)


def scores(y_true: np.ndarray, proba: np.ndarray) -> dict:
    """top-1/3/5 (k < n_classes), balanced accuracy, macro F1, Cohen's kappa; AUC for two classes."""
    from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

    n_classes = proba.shape[1]
    pred = proba.argmax(1)
    out = {"top1": float(np.mean(pred == y_true))}
    present = np.unique(y_true)  # mean recall over the classes in the test set
    out["balanced_accuracy"] = float(np.mean([np.mean(pred[y_true == c] == c) for c in present]))
    order = np.argsort(-proba, axis=1)
    for k in (3, 5):
        if k < n_classes:
            out[f"top{k}"] = float(np.mean([y in row[:k] for y, row in zip(y_true, order)]))
    out["f1"] = float(f1_score(y_true, pred, average="macro", labels=list(range(n_classes)), zero_division=0))
    out["kappa"] = float(cohen_kappa_score(y_true, pred)) if len(np.unique(np.concatenate([y_true, pred]))) > 1 else 0.0
    if n_classes == 2:
        out["auc"] = float(roc_auc_score(y_true, proba[:, 1])) if len(np.unique(y_true)) == 2 else float("nan")
    return out


def chance_levels(es: EpochSet, idx=None) -> dict:
    """Chance levels of ``es`` (or of its epochs ``idx``, without copying their data): the majority class's share
    for top-1 (top-3, top-5), 1/n for balanced accuracy, 0.5 for AUC with two classes."""
    counts = np.bincount(es.y if idx is None else es.y[idx], minlength=len(es.classes))
    n = len(es.classes)
    out = {"chance_top1": float(counts.max() / counts.sum())}
    for k in (3, 5):
        if k < n:
            out[f"chance_top{k}"] = float(np.sort(counts)[::-1][:k].sum() / counts.sum())
    out["chance_balanced_accuracy"] = 1.0 / n
    if n == 2:
        out["chance_auc"] = 0.5
    return out


@dataclass
class Rejection:
    """Epochs dropped as artifacts (``epochs.reject_uv`` / ``epochs.flat_uv``), counted per class."""

    kept: np.ndarray  # indices kept
    by_class: dict  # class id -> {"kept": n, "peak_to_peak": n, "flat": n}
    reject_uv: Optional[float]
    flat_uv: Optional[float]

    @property
    def n_rejected(self) -> int:
        return int(sum(v["peak_to_peak"] + v["flat"] for v in self.by_class.values()))

    def to_json(self) -> dict:
        return {"reject_uv": self.reject_uv, "flat_uv": self.flat_uv, "rejected": self.n_rejected,
                "kept": int(len(self.kept)), "by_class": self.by_class}

    def describe(self) -> str:
        if self.reject_uv is None and self.flat_uv is None:
            return "artifact rejection off (epochs.reject_uv and epochs.flat_uv are null)"
        total = len(self.kept) + self.n_rejected
        worst = sorted(self.by_class.items(), key=lambda kv: -(kv[1]["peak_to_peak"] + kv[1]["flat"]))[:3]
        per = ", ".join(f"{c} {v['peak_to_peak'] + v['flat']}" for c, v in worst if v["peak_to_peak"] + v["flat"])
        return (f"artifact rejection: {self.n_rejected} of {total} epochs dropped (peak-to-peak > "
                f"{self.reject_uv} µV or flat < {self.flat_uv} µV)" + (f"; most in {per}" if per else ""))


def reject_artifacts(es: EpochSet, protocol: Protocol) -> Rejection:
    """Peak-to-peak and flat-channel rejection on the band-passed analysis window, in microvolts.

    Like MNE's ``reject``/``flat``: an epoch goes when any channel's peak-to-peak amplitude exceeds
    ``epochs.reject_uv`` or falls below ``epochs.flat_uv``.
    """
    e = protocol.epochs
    n = len(es)
    ptp_bad = np.zeros(n, bool)
    flat_bad = np.zeros(n, bool)
    if (e.reject_uv is not None or e.flat_uv is not None) and n:
        pre = Preprocessor.from_protocol(protocol.preprocessing, e, es.sfreq, es.tmin)
        ptp = pre.peak_to_peak(es.data)
        if e.reject_uv is not None:
            ptp_bad = (ptp > e.reject_uv).any(1)
        if e.flat_uv is not None:
            flat_bad = (ptp < e.flat_uv).any(1) & ~ptp_bad
    by_class = {}
    for c in es.class_ids:
        m = es.labels == c
        by_class[c] = {"kept": int((m & ~ptp_bad & ~flat_bad).sum()), "peak_to_peak": int((m & ptp_bad).sum()),
                       "flat": int((m & flat_bad).sum())}
    return Rejection(np.flatnonzero(~ptp_bad & ~flat_bad), by_class, e.reject_uv, e.flat_uv)


def inflation(es: EpochSet, folds: list, split: str) -> str:
    """Why scores on these folds are inflated, in words, or "" when they are not.

    A random split puts trials of one block in training and test (they share its slow drift). Folds that
    leave whole blocks out are still inflated when a test epoch shows an image its fold trained on (another
    repetition of it, as in THINGS-EEG2's runs): the decoder may recognise the image rather than its class.
    """
    if split == "random":
        return "random split: trials of the same block are in train and test"
    if es.images is None or not any(es.images):
        return ""
    shared = 0
    for tr, te in folds:
        seen = {im for im in es.images[tr] if im}
        shared += sum(1 for im in es.images[te] if im and im in seen)
    n_test = sum(len(te) for _, te in folds)
    if not shared:
        return ""
    return (f"images repeated across folds: {shared} of {n_test} test epochs ({100 * shared / n_test:.0f} %) show "
            f"an image their fold trained on (another repetition of it)")


def permutation_pvalue(observed: float, null: list) -> float:
    """(1 + #null >= observed) / (1 + #null): never 0, exact under exchangeability."""
    null = [v for v in null if v == v]
    return float((1 + sum(v >= observed for v in null)) / (1 + len(null)))


def _key_metric(n_classes: int) -> str:
    return "auc" if n_classes == 2 else "balanced_accuracy"


def distils(method: str) -> bool:
    """Whether ``method`` learns from the teacher's soft targets (``kd_*``, and ``auto``, which may pick one)."""
    return method.startswith("kd") or method == "auto"


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


def paired_sign_flip(diff, n_random: int = 20_000, seed: int = 0) -> float:
    """Two-sided p-value of a mean paired difference being 0: every sign flip of the differences (exact up to
    16 pairs, else ``n_random`` random ones with the observed counted); the smallest possible is 2 / 2^n."""
    d = np.asarray([v for v in diff if v == v], float)
    if len(d) == 0:
        return float("nan")
    obs = abs(d.mean())
    if len(d) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))[None]) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(n_random, len(d)))
        signs = np.vstack([np.ones(len(d)), signs])
    null = np.abs((signs * d).mean(1))
    return float(np.mean(null >= obs - 1e-12))


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
    fit_cap_s: dict = field(default_factory=dict)  # method -> seconds each of its fits was allowed
    alphas: dict = field(default_factory=dict)  # method -> distillation weight alpha per fold (1: no teacher)
    ablation: dict = field(default_factory=dict)  # method -> Ablation (evaluate(ablation="teacher"))

    @property
    def key_metric(self) -> str:
        return _key_metric(self.n_classes)

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


def calibrate_bias(proba: np.ndarray, y: np.ndarray, n_classes: int, iters: int = 100) -> np.ndarray:
    """Log-prior offsets that make the mean predicted probability of each class match its share in ``y``.

    A network early-stopped on a small, noisy set often puts a little more mass on one class for every
    epoch, so its top-1 always names that class although its ranking (AUC) is fine. Matching the
    predicted class shares on the early-stopping set (Saerens et al. 2002's prior adjustment) removes that
    lean without changing the ranking of epochs for any one class.
    """
    b = np.zeros(n_classes)
    counts = np.bincount(y, minlength=n_classes).astype(float)
    if len(proba) == 0 or (counts > 0).sum() < 2:
        return b
    target = counts / counts.sum()
    lp = np.log(np.clip(proba, 1e-12, 1.0))
    for _ in range(iters):
        q = lp + b
        q = np.exp(q - q.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        mean = q.mean(0)
        step = np.where(counts > 0, np.log(np.maximum(target, 1e-12) / np.maximum(mean, 1e-12)), 0.0)
        b += 0.5 * step
        if np.abs(step).max() < 1e-4:
            break
    return b - b.mean()


def apply_bias(proba: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is None:
        return proba
    q = np.log(np.clip(proba, 1e-12, 1.0)) + np.asarray(bias)[None]
    q = np.exp(q - q.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True)


@dataclass
class Fitted:
    """A method fitted on one training set: what predicts, and what is saved with a model."""

    method: str
    model: object  # torch module or scikit-learn pipeline
    bias: Optional[np.ndarray] = None
    history: list = field(default_factory=list)
    device: str = "cpu"
    info: dict = field(default_factory=dict)
    val_proba: Optional[np.ndarray] = None  # networks: the early-stopping set's probabilities before the bias

    def predict(self, X: np.ndarray, n_classes: int) -> np.ndarray:
        if is_sklearn(self.method):
            from .pipelines import predict_pipeline

            return predict_pipeline(self.model, X, n_classes)
        from .training import predict_proba

        return apply_bias(predict_proba(self.model, X, self.device), self.bias)


def build_network(method: str, X: np.ndarray, n_classes: int):
    from .models import Conv1DNet, LSTMNet, ResidualCNN

    if _rep_of(method):
        return ResidualCNN(X.shape[1], n_classes, X.shape[2], X.shape[3])
    if method == "lstm":
        return LSTMNet(X.shape[1], n_classes, X.shape[2])
    if method == "conv1d":
        return Conv1DNet(X.shape[1], n_classes, X.shape[2])
    raise ValueError(f"unknown method {method!r}")


def feature_key(method: str) -> str:
    """Which representation a method's input is (a key of :func:`features_for`)."""
    if method == "logreg_power":
        return "time_raw"  # Table 1: power of the signal, before per-epoch standardisation
    if is_sklearn(method):
        return "time"
    if method == "conv1d":
        return "series"  # the time series at >= 2.5 x the band edge: same information, a third of the work
    return _rep_of(method) or "time"


def fit_method(method: str, es: EpochSet, feats: dict, fit_idx, val_idx, protocol: Protocol, teacher_logits=None,
               progress=False, seed: int = 0, max_epochs: int | None = None,
               max_seconds: float | None = None, after_passes: int = 1) -> Fitted:
    """Fit ``method`` on ``fit_idx`` (networks early-stop on ``val_idx``; pipelines fit on both).

    ``max_seconds`` caps a network's training (checked between batches; ``info["stopped"]`` says why it ended)
    and the bias calibration after it; ``after_passes`` counts that calibration's pass over ``val_idx`` and any
    the caller makes within the same budget (quick-train's: 3, the calibration, saving, the database).
    """
    y = es.y
    n_classes = len(es.classes)
    X = feats[feature_key(method)]
    if is_sklearn(method):
        from .pipelines import fit_pipeline

        idx = np.concatenate([fit_idx, val_idx]) if val_idx is not fit_idx else np.asarray(fit_idx)
        idx = np.unique(idx)
        return Fitted(method, fit_pipeline(method, X[idx], y[idx], es.sfreq, n_classes))
    from .training import fit, predict_proba

    model = build_network(method, X, n_classes)
    tl = teacher_logits[fit_idx] if (teacher_logits is not None and method.startswith("kd")) else None
    if tl is not None and not np.isfinite(tl).all():
        raise RuntimeError("soft targets missing for some training epochs (the teacher was refitted on other images)")
    res = fit(model, X[fit_idx], y[fit_idx], protocol.training, X[val_idx], y[val_idx], teacher_logits=tl,
              progress=progress, seed=seed, max_epochs=max_epochs, max_seconds=max_seconds, after_passes=after_passes)
    val_proba = predict_proba(res.model, X[val_idx], res.device, batch=512)
    bias = calibrate_bias(val_proba, y[val_idx], n_classes)
    return Fitted(method, res.model, bias, res.history, res.device,
                  {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "alpha": res.alpha,
                   "device": res.device, "threads": res.threads, "precision": res.precision,
                   "stopped": res.stopped, "lr_schedule": res.schedule}, val_proba)


def features_for(es: EpochSet, protocol: Protocol, methods) -> dict:
    """Compute each representation the methods need, once (each epoch on its own: no leakage)."""
    pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
    feats = {}
    need = {feature_key(m) for m in methods if m != "auto"}
    if "auto" in methods:
        need |= {feature_key(m) for m in protocol.decoder.candidates}
    wanted = {key: ("time", False) if key == "time_raw" else (key, pre.standardize) for key in need}
    feats.update(pre.many(es.data, wanted))  # one filtering pass for every representation
    return feats


def _teacher_logits(teacher, es: EpochSet, train_idx=None):
    """Soft targets for the training epochs, as quick-train makes them; None where the teacher cannot give them.

    The teacher's linear head is refitted on the training epochs' images and labels only (their labels: a
    label-shuffled set gets a teacher that learnt the shuffled labels, not one handing the true classes back).
    Rows outside ``train_idx`` are NaN: no test image's logits exist or are needed, and
    :func:`fit_method` refuses a NaN soft target, so none can reach a fit unseen.
    """
    if teacher is None or len(es.images) != len(es) or not all(es.images):
        return None
    idx = np.arange(len(es)) if train_idx is None else np.asarray(train_idx)
    t = teacher.for_training(list(es.images[idx]), list(es.labels[idx]))
    tl = t.logits_for(list(es.images[idx]))
    if tl is None:
        return None
    out = np.full((len(es), len(es.classes)), np.nan, np.float32)
    out[idx] = tl[:, [t.classes.index(c) for c in es.class_ids]]
    return out


def _one_fold(m: str, es: EpochSet, feats: dict, tr_all, te, protocol: Protocol, tl, split: str, seed: int,
              max_s: float | None = None, threads: int | None = None):
    """Fit ``m`` on one outer fold's training part: (test probabilities, history, chosen method, how it stopped,
    the distillation weight alpha it trained with: 1 is plain cross-entropy, None for a pipeline)."""
    if threads is not None:  # a worker process: its share of the cores, for every fit it makes
        import os

        import torch

        os.environ["EEGLOOP_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    if m == "auto":
        from .selection import select_model

        sel = select_model(es, protocol, feats, tr_all, teacher_logits=tl, seed=seed)
        fitted = sel.fit_winner(es, feats, tr_all, protocol, tl, seed=seed)
    else:
        tr, va = inner_validation(es, tr_all, split, seed)
        fitted = fit_method(m, es, feats, tr, va, protocol, tl, False, seed, max_seconds=max_s)
    p = fitted.predict(feats[feature_key(fitted.method)][te], len(es.classes))
    return p, fitted.history, fitted.method, fitted.info.get("stopped"), fitted.info.get("alpha")


def _fold_workers(n_jobs: int) -> int:
    """How many folds run at once: one per core (or EEGLOOP_JOBS), never more than there are folds."""
    import os

    return max(1, min(n_jobs, int(os.environ.get("EEGLOOP_JOBS", 0) or (os.cpu_count() or 1))))


def _map_folds(jobs: list, parallel: bool):
    """Run the folds, two or more at once on a multi-core machine (yielded in fold order).

    Small networks gain little from a second intra-op thread (measured on 2 cores: a 4-channel CNN fit
    took as long with 1 thread as with 2), so the folds themselves run side by side, one thread each,
    in joblib's worker processes; one core (or EEGLOOP_JOBS=1) runs them here, in order.
    """
    import os

    n = _fold_workers(len(jobs))
    if not parallel or n < 2:
        for job in jobs:
            yield _one_fold(*job)
        return
    from joblib import Parallel, delayed

    threads = max(1, (os.cpu_count() or 1) // n)
    m, es, feats, tr_all, _te, protocol, *_ = jobs[0]
    if m != "auto" and not is_sklearn(m) and protocol.training.precision == "auto":
        # measured once here, where nothing competes for the cores, and handed to every worker
        import torch

        from ..protocol import protocol_from_dict
        from .training import choose_bf16

        X = feats[feature_key(m)][tr_all[:protocol.training.batch_size]]
        model = build_network(m, X, len(es.classes))
        fast = choose_bf16("auto", model, torch.as_tensor(X), torch.as_tensor(es.y[tr_all[:len(X)]]), "cpu")
        d = protocol.to_dict()
        d["training"]["precision"] = "bf16" if fast else "fp32"
        fixed = protocol_from_dict(d)
        jobs = [j[:5] + (fixed,) + j[6:] for j in jobs]
    yield from Parallel(n_jobs=n, backend="loky", return_as="generator")(
        delayed(_one_fold)(*job, threads=threads) for job in jobs)


def evaluate(es: EpochSet, protocol: Protocol, methods=None, split: str | None = None,
             n_folds: int | None = None, shuffle_labels: bool = False, teacher=None,
             progress: Callable[[str], None] | None = None, seed: int = 0, permutations: int = 0,
             reject: bool = True, budget_s: float | None = None, ablation: str | None = None) -> EvalReport:
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
        notes, never hidden.
    """
    import time

    split = split or protocol.training.split
    n_folds = n_folds or protocol.training.n_folds
    methods = tuple(dict.fromkeys(methods or (main_method(protocol),)))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise EegloopError(f"--methods: unknown method {short_repr(unknown[0])}; choose from {', '.join(METHODS)}")
    if ablation not in (None, "teacher"):
        raise EegloopError(f"--ablation: only 'teacher', got {short_repr(ablation)}")
    if ablation and not any(distils(m) for m in methods):
        raise EegloopError(f"--ablation teacher: none of the methods distils ({', '.join(methods)}); "
                           "add auto or a kd_* method")
    say = progress or (lambda _m: None)
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
    folds = make_folds(es, split, n_folds, seed)
    notes = []
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
    key = _key_metric(len(es.classes))

    def run_folds(m: str, labels_es: EpochSet, record: bool, fold_seed: int, max_s: float | None = None,
                  teach: bool = True):
        yy = labels_es.y
        conf = np.zeros((len(es.classes),) * 2, int)
        fold_scores, hists, chosen, alphas = [], [], [], []
        jobs = [(m, labels_es, feats, tr_all, te, protocol,
                 _teacher_logits(teacher, labels_es, tr_all) if teach and has_teacher and distils(m) else None,
                 split, fold_seed + k, max_s) for k, (tr_all, te) in enumerate(folds)]
        stopped = 0
        parallel = not is_sklearn(m) or m == "cebra_knn"  # CEBRA trains a small network too
        tag = "" if teach or not distils(m) else " without the teacher"
        for k, (p, history, winner, how, alpha) in enumerate(_map_folds(jobs, parallel=parallel)):
            stopped += how == "time_budget"
            te = folds[k][1]
            sc = scores(yy[te], p)
            fold_scores.append(sc)
            hists.append(history)
            alphas.append(alpha)
            if m == "auto":
                chosen.append(winner)
            np.add.at(conf, (yy[te], p.argmax(1)), 1)
            if record:
                say(f"{m}{tag}: fold {k + 1}/{len(folds)} top1 {sc['top1']:.3f}"
                    + (f" auc {sc['auc']:.3f}" if "auc" in sc else "")
                    + (f" [{winner}]" if m == "auto" else "")
                    + (f" alpha {alpha:g}" if alpha is not None else "")
                    + f" (chance {report.chance['chance_top1']:.3f})"
                    + (" (stopped by the time budget)" if how == "time_budget" else ""))
        return fold_scores, hists, conf, chosen, stopped, alphas

    budget = protocol.decoder.evaluate_budget_s if budget_s is None else budget_s
    nets = [m for m in methods if m != "auto" and not is_sklearn(m)]
    order = [m for m in methods if m not in nets] + nets  # the cheap rows first, the networks share the rest
    rounds = -(-len(folds) // _fold_workers(len(folds)))  # fold fits one after another per worker
    started = time.perf_counter()
    net_start = None
    passes = {m: 2 if ablation and distils(m) else 1 for m in methods}  # the ablation fits each fold twice
    for m in order:
        t0 = time.perf_counter()
        if m in nets and net_start is None:
            net_start = t0
        max_s = None
        if budget and m in nets:
            # what the other rows left, and never less than 40 % of the budget: rows cut to nothing teach nothing
            left = max(budget - (t0 - started), 0.4 * budget - (t0 - net_start))
            n_left = sum(passes[n] for n in nets[nets.index(m):])
            max_s = max(1.0, 0.85 * left / (n_left * rounds))
            report.fit_cap_s[m] = round(max_s, 1)
        fs, hs, conf, chosen, stopped, alphas = run_folds(m, es, True, seed, max_s)
        if stopped:
            report.budget_stopped[m] = stopped
        report.methods[m], report.histories[m], report.confusion[m] = fs, hs, conf.tolist()
        if distils(m) or any(a is not None for a in alphas):
            report.alphas[m] = alphas
        if chosen:
            report.selected = chosen
        if ablation and distils(m):
            fs_off, _h, _c, _ch, stopped_off, alphas_off = run_folds(m, es, True, seed, max_s, teach=False)
            report.ablation[m] = Ablation(m, key, [f[key] for f in fs], [f[key] for f in fs_off], alphas,
                                          alphas_off, stopped, stopped_off)
            say(report.ablation[m].describe())
        report.seconds[m] = time.perf_counter() - t0
        say(f"{m}: {len(folds)} folds in {report.seconds[m]:.1f} s")
        if permutations:
            null = []
            rng = np.random.default_rng(seed + 1000)
            for i in range(permutations):
                shuf = es.subset(np.arange(len(es)))
                shuf.labels = es.labels[rng.permutation(len(es))]
                fs_null, *_ = run_folds(m, shuf, False, seed + 7919 * (i + 1), max_s)
                null.append(float(np.nanmean([f[key] for f in fs_null])))
                say(f"{m}: shuffled-label refit {i + 1}/{permutations}: {key} {null[-1]:.3f}")
            report.null[m] = null
    report.methods = {m: report.methods[m] for m in methods}  # the order asked for
    for m, alphas in report.alphas.items():
        if distils(m):
            report.notes.append(f"{m}: {describe_alphas(alphas, protocol.training.alpha)}")
    if report.budget_stopped:
        report.notes.append(
            f"time budget {budget:g} s (decoder.evaluate_budget_s, --budget): training stopped early in "
            + ", ".join(f"{m} {n}/{len(folds)} folds (cap {report.fit_cap_s[m]:g} s a fit)"
                        for m, n in report.budget_stopped.items())
            + "; those rows are what the networks reach in that time: --budget 0 trains them fully")
    logger.info("evaluation done: %s", report.to_json())
    return report


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
