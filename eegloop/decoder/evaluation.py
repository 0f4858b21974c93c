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
from ..errors import EegloopError
from ..protocol import Protocol
from ..types import EpochSet
from .preprocessing import Preprocessor

__all__ = ["NoHonestFoldError", "make_folds", "scores", "evaluate", "EvalReport", "METHODS", "PAPER_NAMES"]

METHODS = ("kd_stft", "kd_erp", "cnn_stft", "kd_wavelet", "logreg_power", "logreg_windowed", "lstm", "conv1d")
BASELINES = ("logreg_power", "logreg_windowed", "lstm", "conv1d", "cnn_stft", "kd_wavelet")
PAPER_NAMES = {
    "logreg_power": "Logistic regression, averaged squared signal",
    "logreg_windowed": "Logistic regression, windowed signal",
    "lstm": "LSTM (time series)",
    "conv1d": "1-D CNN (time series)",
    "cnn_stft": "CNN on STFT (no distillation)",
    "kd_wavelet": "Knowledge distillation on db4 wavelets",
    "kd_stft": "Knowledge distillation on STFT",
    "kd_erp": "Residual CNN on binned ERP (KD when a teacher exists)",
}


def main_method(protocol: Protocol) -> str:
    """The student the protocol trains: kd_<representation>."""
    return f"kd_{protocol.preprocessing.representation}"


def _rep_of(method: str) -> str | None:
    if method.startswith(("kd_", "cnn_")):
        return method.split("_", 1)[1]
    return None


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


def inner_validation(es: EpochSet, train_idx: np.ndarray, split: str, seed: int = 0, frac: float = 0.15):
    """Split training indices into fit/validation by whole groups (for early stopping)."""
    rng = np.random.default_rng(seed + 1)
    if split == "random":
        idx = rng.permutation(train_idx)
        n_val = max(1, int(round(frac * len(idx))))
        return np.sort(idx[n_val:]), np.sort(idx[:n_val])
    groups = es.groups(split)[train_idx]
    uniq = rng.permutation(np.unique(groups))
    n_val = max(1, int(round(frac * len(uniq))))
    if len(uniq) - n_val < 1:
        idx = rng.permutation(train_idx)
        n = max(1, int(round(frac * len(idx))))
        return np.sort(idx[n:]), np.sort(idx[:n])
    val_g = set(uniq[:n_val].tolist())
    is_val = np.array([g in val_g for g in groups])
    return train_idx[~is_val], train_idx[is_val]


def scores(y_true: np.ndarray, proba: np.ndarray) -> dict:
    """top-1/3/5 (k < n_classes), macro F1, Cohen's kappa; AUC for two classes."""
    from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

    n_classes = proba.shape[1]
    pred = proba.argmax(1)
    out = {"top1": float(np.mean(pred == y_true))}
    order = np.argsort(-proba, axis=1)
    for k in (3, 5):
        if k < n_classes:
            out[f"top{k}"] = float(np.mean([y in row[:k] for y, row in zip(y_true, order)]))
    out["f1"] = float(f1_score(y_true, pred, average="macro", labels=list(range(n_classes)), zero_division=0))
    out["kappa"] = float(cohen_kappa_score(y_true, pred)) if len(np.unique(np.concatenate([y_true, pred]))) > 1 else 0.0
    if n_classes == 2:
        out["auc"] = float(roc_auc_score(y_true, proba[:, 1])) if len(np.unique(y_true)) == 2 else float("nan")
    return out


def chance_levels(es: EpochSet) -> dict:
    counts = np.bincount(es.y, minlength=len(es.classes))
    n = len(es.classes)
    out = {"chance_top1": float(counts.max() / counts.sum())}
    for k in (3, 5):
        if k < n:
            out[f"chance_top{k}"] = float(np.sort(counts)[::-1][:k].sum() / counts.sum())
    if n == 2:
        out["chance_auc"] = 0.5
    return out


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
    methods: dict = field(default_factory=dict)  # method -> list of per-fold score dicts
    confusion: dict = field(default_factory=dict)  # method -> matrix (true x predicted)
    histories: dict = field(default_factory=dict)  # method -> per-fold training histories
    teacher_accuracy: Optional[float] = None
    notes: list = field(default_factory=list)

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
             "shuffled_labels": self.shuffled,
             "methods": {m: {k: round(v, 4) for k, v in s[m].items() if not k.endswith("_std")} for m in s}}
        if self.teacher_accuracy is not None:
            d["teacher_top1"] = round(self.teacher_accuracy, 4)
        return d

    def table(self) -> str:
        """The paper's Table 1 layout: mean (std) over folds, chance beside."""
        s = self.summary()
        metrics = [k for k in ("top1", "top3", "top5", "f1", "kappa", "auc") if any(k in v for v in s.values())]
        head = f"{'method':<48}" + "".join(f"{k:>16}" for k in metrics)
        lines = []
        if self.inflated:
            lines.append("!! RANDOM SPLIT: trials of the same block are in train and test — these scores are INFLATED !!")
        if self.shuffled:
            lines.append("(control: labels shuffled — scores should sit at chance)")
        lines.append(f"{self.split}-wise folds: {self.n_folds}, epochs: {self.n_epochs}, classes: {self.n_classes}")
        lines.append(head)
        lines.append("-" * len(head))
        for m in [m for m in METHODS if m in s] + [m for m in s if m not in METHODS]:
            row = f"{PAPER_NAMES.get(m, m):<48}"
            for k in metrics:
                row += f"{s[m][k]:>9.3f} ({s[m][k + '_std']:.3f})" if k in s[m] else f"{'':>16}"
            lines.append(row)
        ch = self.chance
        row = f"{'chance':<48}"
        for k in metrics:
            key = {"top1": "chance_top1", "top3": "chance_top3", "top5": "chance_top5", "auc": "chance_auc",
                   "kappa": None, "f1": None}[k]
            row += f"{ch[key]:>16.3f}" if key and key in ch else (f"{0.0:>16.3f}" if k == "kappa" else f"{'':>16}")
        lines.append(row)
        if self.teacher_accuracy is not None:
            lines.append(f"teacher (CLIP linear head) accuracy over images: {self.teacher_accuracy:.3f}")
        lines += self.notes
        return "\n".join(lines)


def _fit_predict(method: str, es: EpochSet, feats: dict, tr, va, te, protocol: Protocol, teacher_logits,
                 progress, seed: int):
    """Train ``method`` on tr (early stopping on va) and return (probabilities on te, history)."""
    y = es.y
    n_classes = len(es.classes)
    if method.startswith("logreg"):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X = feats[method]
        fit_idx = np.concatenate([tr, va])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        clf.fit(X[fit_idx], y[fit_idx])
        p = np.zeros((len(te), n_classes))
        p[:, clf.classes_] = clf.predict_proba(X[te])
        return p, []
    from .models import Conv1DNet, LSTMNet, ResidualCNN
    from .training import fit, predict_proba

    if _rep_of(method):
        X = feats[_rep_of(method)]
        model = ResidualCNN(X.shape[1], n_classes, X.shape[2], X.shape[3])
    elif method == "lstm":
        X = feats["time"]
        model = LSTMNet(X.shape[1], n_classes, X.shape[2])
    elif method == "conv1d":
        X = feats["time"]
        model = Conv1DNet(X.shape[1], n_classes, X.shape[2])
    else:
        raise ValueError(f"unknown method {method!r}")
    tl = teacher_logits[tr] if (teacher_logits is not None and method.startswith("kd")) else None
    res = fit(model, X[tr], y[tr], protocol.training, X[va], y[va], teacher_logits=tl, progress=progress, seed=seed)
    return predict_proba(res.model, X[te], res.device), res.history


def features_for(es: EpochSet, protocol: Protocol, methods) -> dict:
    """Compute each representation the methods need, once."""
    pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
    feats = {}
    need = set()
    for m in methods:
        need.add(_rep_of(m) or "time")
    for rep in need:
        feats[rep] = pre.with_representation(rep)(es.data)
    if "logreg_power" in methods:
        feats["logreg_power"] = np.log(np.mean(feats["time"] ** 2, -1) + 1e-12)
    if "logreg_windowed" in methods:
        x = feats["time"]
        w = max(1, int(round(0.05 * es.sfreq)))
        n = x.shape[-1] // w
        feats["logreg_windowed"] = x[..., :n * w].reshape(x.shape[0], x.shape[1], n, w).mean(-1).reshape(len(x), -1)
    return feats


def evaluate(es: EpochSet, protocol: Protocol, methods=None, split: str | None = None,
             n_folds: int | None = None, shuffle_labels: bool = False, teacher=None,
             progress: Callable[[str], None] | None = None, seed: int = 0) -> EvalReport:
    """Cross-validate ``methods`` on ``es`` with folds by block, run or (inflated) random split.

    Parameters
    ----------
    teacher : ClipTeacher | None
        Gives soft targets for the ``kd_*`` methods; without one they train with alpha = 1
        (noted in the report).
    """
    split = split or protocol.training.split
    n_folds = n_folds or protocol.training.n_folds
    methods = tuple(methods or (main_method(protocol),))
    if shuffle_labels:
        rng = np.random.default_rng(seed + 99)
        es = es.subset(np.arange(len(es)))
        es.labels = es.labels[rng.permutation(len(es))]
    folds = make_folds(es, split, n_folds, seed)
    say = progress or (lambda _m: None)
    teacher_logits = None
    notes = []
    if teacher is not None and len(es.images) == len(es) and all(es.images):
        teacher_logits = teacher.logits_for(list(es.images))
        if teacher_logits is not None:
            order = [teacher.classes.index(c) for c in es.class_ids]
            teacher_logits = teacher_logits[:, order]
    if teacher_logits is None and any(m.startswith("kd") for m in methods):
        notes.append("no teacher soft targets (teacher disabled, unavailable, or epochs without images): "
                     "kd_* methods trained with alpha = 1 (plain cross-entropy)")
    feats = features_for(es, protocol, methods)
    report = EvalReport(split=split, n_folds=len(folds), n_epochs=len(es), n_classes=len(es.classes),
                        classes=dict(es.classes), chance=chance_levels(es), inflated=(split == "random"),
                        shuffled=shuffle_labels, teacher_accuracy=getattr(teacher, "accuracy", None), notes=notes)
    y = es.y
    for m in methods:
        report.methods[m] = []
        report.histories[m] = []
        conf = np.zeros((len(es.classes),) * 2, int)
        for k, (tr_all, te) in enumerate(folds):
            tr, va = inner_validation(es, tr_all, split, seed + k)
            p, hist = _fit_predict(m, es, feats, tr, va, te, protocol, teacher_logits, False, seed + k)
            sc = scores(y[te], p)
            report.methods[m].append(sc)
            report.histories[m].append(hist)
            np.add.at(conf, (y[te], p.argmax(1)), 1)
            say(f"{m}: fold {k + 1}/{len(folds)} top1 {sc['top1']:.3f}"
                + (f" auc {sc['auc']:.3f}" if "auc" in sc else "") + f" (chance {report.chance['chance_top1']:.3f})")
        report.confusion[m] = conf.tolist()
    logger.info("evaluation done: %s", report.to_json())
    return report
