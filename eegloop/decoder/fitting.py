"""Fitting one method on one training set: the features, the soft targets, the fit and its bias calibration.

What evaluation's folds, the model selection's inner folds and quick-train all call; the method's kind,
representation and network come from the registry (:mod:`.methods`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..protocol import Protocol
from ..types import EpochSet
from .methods import build_network, distils, feature_key, is_sklearn, student
from .preprocessing import Preprocessor

__all__ = ["Fitted", "fit_method", "features_for", "teacher_logits_for", "calibrate_bias", "apply_bias"]


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
    tl = teacher_logits[fit_idx] if (teacher_logits is not None and distils(method)) else None
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
    if "auto" in methods:  # the candidates, and the student auto keeps when nothing can be compared honestly
        need |= {feature_key(m) for m in protocol.decoder.candidates}
        need.add(feature_key(student(protocol.preprocessing.representation)))
    wanted = {key: ("time", False) if key == "time_raw" else (key, pre.standardize) for key in need}
    feats.update(pre.many(es.data, wanted))  # one filtering pass for every representation
    return feats


def teacher_logits_for(teacher, es: EpochSet, train_idx=None):
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

