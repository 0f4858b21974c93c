"""Scores with chance beside them, and the tests that say whether a score is more than chance."""
from __future__ import annotations

import numpy as np

from ..types import EpochSet

__all__ = ["scores", "chance_levels", "key_metric", "permutation_pvalue", "paired_sign_flip"]


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



def permutation_pvalue(observed: float, null: list) -> float:
    """(1 + #null >= observed) / (1 + #null): never 0, exact under exchangeability."""
    null = [v for v in null if v == v]
    return float((1 + sum(v >= observed for v in null)) / (1 + len(null)))


def key_metric(n_classes: int) -> str:
    return "auc" if n_classes == 2 else "balanced_accuracy"



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

