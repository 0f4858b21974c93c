"""Adapting a group model to one subject: zero calibration, then a few minutes of their labelled epochs.

:func:`adapt` returns an :class:`Adapted` candidate that predicts the subject's epochs:

- the group model's probabilities, the subject aligned on their own (unlabelled) epochs as
  :class:`~.group.GroupDecoder` does it: the epochs being decoded are the reference of the alignment;
- blended with the subject's own model, fitted on the labelled epochs (the protocol's default: ``decoder.model``,
  ``auto`` choosing among ``decoder.candidates`` on inner folds, :func:`~.selection.select_model`)::

      p = w * p_group + (1 - w) * p_own

  with the group's weight ``w`` chosen on inner block/run-wise folds of the labelled epochs: the largest weight of
  :data:`WEIGHTS` whose blend scores within one standard error (of the paired fold-by-fold differences) of the best
  blend on the folds' held-out groups — the group model is the steadier one when the own model saw little data, so
  the own model must win by more than the folds resolve to outweigh it.

Why a blend, not refitting the group's classifier with the subject's epochs up-weighted: a stored group model
keeps its fitted pipeline or network, not the group's training features; refitting would mean reloading every
member's epochs (and their consent still holding) each time a subject is calibrated. A blend works for the
Riemannian and the network group models alike, costs one inner cross-validation of the subject's own model, and
falls back to either end: ``w = 1`` is zero calibration, ``w = 0`` the per-subject default.

With labelled epochs, a group model that keeps a prior (:class:`~.stlda.TemporalPrior`: every group model
pretrained since priors exist) can also be *tuned* to the subject (:meth:`~.groupdecoder.GroupDecoder.tuned`): the
group's time courses of the class differences and of the background (and, on few channels, its background's whole
spatio-temporal covariance, carried to the subject by their own spatial mixing), the subject's own spatial patterns
and noise fitted on the labelled epochs. The inner folds then weigh both group sides — the aligned model, then the
tuned one (refitted on each fold's training groups), each at every weight — and keep the first blend within one
standard error of the best in that order (:func:`choose_weight`): on the simulated population the tuned model is far ahead
after two minutes, on the real P300 subjects the aligned one is where either helps (BENCHMARKS.md).

With no labelled epoch (or too few to fit or validate the own model: fewer than two classes, no honest inner
fold) the candidate is the aligned group model alone (``w = 1``). Without a group model it is the per-subject default alone.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..protocol import Protocol
from ..types import EpochSet

__all__ = ["Adapted", "adapt", "tune", "tuned_side", "WEIGHTS", "key_score", "choose_weight", "save_adapted",
           "ADAPTED_FORMAT", "in_class_order"]

#: the JSON ``format`` of a subject's model that blends a group model (:func:`save_adapted`)
ADAPTED_FORMAT = "eegloop-adapted-1"

#: the group model's weights the inner folds choose from
WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)


@dataclass
class Adapted:
    """A candidate decoder for one subject (what :func:`adapt` returns).

    Attributes
    ----------
    classes : list of str
        The class ids, in the order of :meth:`predict_proba`'s columns (the subject's).
    weight : float
        The group model's weight in the blend (1: the group model alone; 0: the subject's own model alone).
    method : str | None
        The subject's own model's method (None: none fitted).
    n_labelled : int
        The labelled epochs it was adapted on.
    how : str
        In words, how the weight was chosen.
    """

    classes: list
    weight: float
    method: Optional[str]
    n_labelled: int
    how: str
    group: object = None  # GroupDecoder | None
    own: object = None  # fitting.Fitted | None
    protocol: Optional[Protocol] = None
    budget_skipped: tuple = ()  # the candidates auto's time budget left out of the own model's selection

    def group_proba(self, es: EpochSet) -> np.ndarray:
        """The group model's probabilities for ``es`` (aligned on ``es``), columns in :attr:`classes`' order."""
        raw = self.group.predict_proba(es)
        return in_class_order(raw, list(self.group.classes), self.classes)

    def own_proba(self, es: EpochSet) -> np.ndarray:
        """The subject's own model's probabilities for ``es``."""
        from .fitting import features_for
        from .methods import feature_key

        X = features_for(es, self.protocol, [self.method])[feature_key(self.method)]
        return self.own.predict(X, len(self.classes))

    def predict_proba(self, es: EpochSet) -> np.ndarray:
        """Class probabilities (n, classes) for the subject's epochs ``es`` (their labels unused)."""
        if self.own is None:
            return self.group_proba(es)
        if self.group is None or self.weight == 0.0:
            return self.own_proba(es)
        return self.weight * self.group_proba(es) + (1 - self.weight) * self.own_proba(es)


def in_class_order(raw: np.ndarray, order: list, classes: list) -> np.ndarray:
    """A group model's probabilities (columns in ``order``) as columns of ``classes``: a class the group model
    lacks gets 0, rows renormalised (uniform where none of ``classes`` is the group's)."""
    p = np.zeros((len(raw), len(classes)))
    for j, c in enumerate(classes):
        if c in order:
            p[:, j] = raw[:, order.index(c)]
    s = p.sum(1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1), 1.0 / len(classes))


def adapt(group, labelled: EpochSet, protocol: Protocol, seed: int = 0, base: Optional[Adapted] = None,
          budget_s: Optional[float] = None) -> Adapted:
    """A candidate for one subject: ``group`` (a :class:`~.group.GroupDecoder`, or None) adapted with the
    subject's ``labelled`` epochs (possibly none).

    A weight the protocol fixes (``decoder.group_weight``) is kept, as quick-train keeps it: 1 is zero
    calibration (the subject's labels unused), another number blends the tuned group model at that weight.

    Parameters
    ----------
    group : GroupDecoder | None
        The group model (:func:`~.group.load_group_model`, :func:`~.group.fit_group_in_memory`); None: the
        per-subject default alone.
    labelled : EpochSet
        The subject's labelled calibration epochs (zero of them: zero calibration). Its classes (all of the
        subject's, in order) are the columns of the candidate's probabilities.
    protocol : Protocol
        The subject's protocol (its preprocessing, ``decoder.model`` and inner folds).
    base : Adapted | None
        ``adapt(None, labelled, protocol)`` already made: its own model is reused, not refitted.
    budget_s : float | None
        The wall-clock budget of ``auto``'s comparison of candidates (None: ``decoder.select_budget_s``); ``inf``:
        none, and a network refitted on the blend's inner folds is trained fully (numbers that do not depend on
        the machine's speed). The candidates the budget left out are in :attr:`Adapted.budget_skipped`.
    """
    classes = list(labelled.class_ids)
    fixed = protocol.decoder.group_weight if group is not None else None
    if fixed == 1.0:  # the protocol's zero calibration: the group model alone, as quick-train makes it
        return Adapted(classes, 1.0, None, len(labelled), "zero calibration (decoder.group_weight 1): the group "
                       "model alone, the subject's labels unused", group, None, protocol)
    skipped: tuple = ()
    if base is not None and base.n_labelled == len(labelled):
        own, method, how = base.own, base.method, base.how if base.own is None else None
        skipped = base.budget_skipped
    else:
        own, method, how, skipped = _fit_own(labelled, protocol, seed, budget_s)
    if group is None and own is None:
        raise EegloopError(f"no group model, and {how}")
    if own is None:  # nothing to weigh the tuned model against: the aligned one, first in the order of preference
        return Adapted(classes, 1.0, None, len(labelled), f"zero calibration: the group model alone ({how})", group,
                       None, protocol, skipped)
    if group is None:
        return Adapted(classes, 0.0, method, len(labelled), "the per-subject default alone", None, own, protocol,
                       skipped)
    if fixed is not None:  # quick-train's rule (groupstart.blend_with_group): the tuned model where it can be had
        weight, how, use_tuned = float(fixed), "fixed (decoder.group_weight), not chosen", fixed > 0
    else:
        weight, how, use_tuned = choose_weight(group, labelled, protocol, method, classes, seed,
                                               full=budget_s == float("inf"))
    tuned, note = tuned_side(group, labelled, use_tuned)
    how += note
    side = tuned if tuned is not None else group
    return Adapted(classes, weight, method, len(labelled), how, side, own, protocol, skipped)


def tuned_side(group, es: EpochSet, wanted: bool):
    """The blend's group side when the folds chose the tuned model (``wanted``): ``group`` tuned to all of ``es``,
    and what to add to the blend's description — where it cannot be fitted on all the epochs, (None, the words
    saying that the aligned model is used instead). One rule for :func:`adapt` and quick-train."""
    if not wanted:
        return None, ""
    tuned = tune(group, es)
    if tuned is None and getattr(group, "prior", None) is not None:
        return None, "; the tuned model could not be fitted on all the epochs: the aligned one instead"
    return tuned, ""


def tune(group, es: EpochSet):
    """``group`` tuned to the subject's labelled epochs ``es`` (:meth:`~.groupdecoder.GroupDecoder.tuned`), or None
    where it cannot be (no prior stored with it, too few epochs per class, a fit that fails)."""
    f = getattr(group, "tuned", None)
    if f is None:
        return None
    try:
        return f(es)
    except (ValueError, np.linalg.LinAlgError) as exc:
        logger.info("adapt: the group model could not be tuned on %d epochs: %s", len(es), exc)
        return None


def _fit_own(es: EpochSet, protocol: Protocol, seed: int, budget_s: Optional[float] = None):
    """The per-subject default fitted on ``es``: (Fitted, method, None, the candidates the selection's time budget
    left out), or (None, None, why, ()) when it cannot be."""
    from .fitting import features_for
    from .folds import inner_validation
    from .selection import select_model

    if len(es) < 4 or len(np.unique(es.labels)) < 2:
        return None, None, f"{len(es)} labelled epochs of {len(np.unique(es.labels))} class(es): no own model", ()
    method = protocol.decoder.model
    feats = features_for(es, protocol, [method])
    try:
        if method == "auto":
            sel = select_model(es, protocol, feats, seed=seed, budget_s=budget_s)
            fitted = sel.fit_winner(es, feats, np.arange(len(es)), protocol, seed=seed)
            return fitted, sel.winner, None, sel.budget_skipped()
        from .fitting import fit_method

        tr, va = inner_validation(es, np.arange(len(es)), protocol.training.split, seed)
        return fit_method(method, es, feats, tr, va, protocol, seed=seed), method, None, ()
    except (ValueError, np.linalg.LinAlgError, EegloopError) as exc:
        logger.info("adapt: the subject's own model could not be fitted on %d epochs: %s", len(es), exc)
        return None, None, f"no own model could be fitted on {len(es)} epochs ({str(exc)[:80]})", ()


def key_score(y: np.ndarray, proba: np.ndarray) -> float:
    """The key metric alone (:func:`~.scoring.key_metric`): AUC for two classes (NaN with one class present),
    else balanced accuracy. :func:`~.scoring.scores` computes six metrics through scikit-learn's validation
    (about 20 ms a call); the curve's permutations score thousands of blends."""
    from scipy.stats import rankdata

    if proba.shape[1] == 2:
        pos = y == 1
        n1, n0 = int(pos.sum()), int((~pos).sum())
        if not n1 or not n0:
            return float("nan")
        r = rankdata(proba[:, 1])  # Mann-Whitney U: AUC = (sum of the positives' ranks - n1(n1+1)/2) / (n1 n0)
        return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    pred = proba.argmax(1)
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def choose_weight(group, es: EpochSet, protocol: Protocol, method: str, classes: list, seed: int,
                  full: bool = False):
    """The group's weight whose blend scores best on inner block/run-wise folds of ``es`` (the own model refitted
    on each fold's training groups; the winning method kept, not re-selected per fold), and which group model:
    as it is (aligned on the subject's epochs) or, where it keeps a prior, tuned to the fold's training epochs.

    Returns ``(weight, how, tuned)``, ``tuned``: the blend's group side is the tuned model (``full``: no time limit
    on networks). The blends are compared in this order of preference — the aligned group model at each weight from 1
    down, then the tuned one likewise, last the subject's own model alone — and the first within one standard error
    of the best (or within one step of one fold's score: one pair of epochs) is kept (:func:`_steadiest`). The tuned
    model, fitted on the subject's few labelled epochs, must win by more than the inner folds resolve: on the real
    P300 subjects, where it barely helps, the aligned-first order scored +.007 at 2 minutes on average where
    alternating the two at each weight scored -.003 (BENCHMARKS.md). A group of one (``group.n_subjects == 1``) earns
    no lean, the best blend is kept: one other person's model is no steadier than the subject's own minutes (real
    N170, each held out against the other: .683 / .641 with the lean, .691 / .655 without, own .691 / .661)."""
    from .fitting import features_for, fit_method
    from .folds import inner_validation, make_folds
    from .methods import feature_key, is_network
    from .scoring import key_metric

    split = protocol.training.split
    try:
        folds = make_folds(es, split, protocol.decoder.inner_folds, seed)
    except EegloopError as exc:  # NoHonestFoldError too
        return 1.0, f"no honest inner fold to weigh the blend ({str(exc)[:60]}...): the group model alone", False
    metric = key_metric(len(classes))
    X = features_for(es, protocol, [method])[feature_key(method)]
    columns = [(src, w) for src in ("aligned", "tuned") for w in WEIGHTS[:-1]] + [("own", 0.0)]
    table = np.full((len(folds), len(columns)), np.nan)
    grain = np.full(len(folds), np.nan)  # per fold: the smallest step its score can take (:func:`_grain`)
    budget = protocol.training.budget_s  # a network refitted per fold shares the training's (wall-clock) budget
    per_fold = budget / len(folds) if budget > 0 and is_network(method) and not full else None  # full: no limit
    view = Adapted(classes, 1.0, None, 0, "", group)
    n_tuned = 0
    for k, (tr_all, te) in enumerate(folds):
        sub = es.subset(tr_all)
        if len(np.unique(sub.labels)) < 2:
            continue
        tr, va = inner_validation(es, tr_all, split, seed + k)
        try:
            own = fit_method(method, es, {feature_key(method): X}, tr, va, protocol, seed=seed + k,
                             max_seconds=per_fold)
        except (ValueError, np.linalg.LinAlgError):
            continue
        test = es.subset(te)
        grain[k] = _grain(es.y[te], len(classes))
        tuned = tune(group, sub)  # the group model tuned on this fold's training groups only
        n_tuned += tuned is not None
        po = own.predict(X[te], len(classes))
        sides = {"aligned": view.group_proba(test),
                 "tuned": None if tuned is None else Adapted(classes, 1.0, None, 0, "", tuned).group_proba(test)}
        for j, (src, w) in enumerate(columns):
            pg = sides.get(src)
            if src == "own":
                table[k, j] = key_score(es.y[te], po)
            elif pg is not None:
                table[k, j] = key_score(es.y[te], w * pg + (1 - w) * po)
    if np.isnan(table).all():
        return 1.0, "the inner folds could not score the blend: the group model alone", False
    # the tuned model is compared only on every fold the aligned one was (fewer folds: a luckier mean, a smaller SE)
    scored = np.isfinite(table[:, 0])
    keep = [j for j in range(len(columns)) if np.isfinite(table[:, j]).any()
            and (columns[j][0] != "tuned" or np.isfinite(table[scored, j]).all())]
    table, columns = table[:, keep], [columns[j] for j in keep]
    mean = np.nanmean(table, axis=0)
    best = int(np.nanargmax(mean))
    g = grain[scored & np.isfinite(grain)]
    # one step of one fold, as a change of the folds' mean: a gap below it is no fold's verdict
    one = getattr(group, "n_subjects", None) == 1
    j = best if one else _steadiest(table, mean, best, float(g.max() / scored.sum()) if len(g) else 0.0)
    name = lambda c: "own model alone" if c[0] == "own" else f"{c[0]} {c[1]:g}"  # noqa: E731
    near = (f", within one SE (or one pair of epochs) of the best, {name(columns[best])}: {mean[best]:.3f}"
            if j != best else "; a group of one: the best blend, no lean toward it" if one else "")
    src, w = columns[j]
    tuned = (f"; the group model also tuned on each fold's training epochs ({n_tuned} of {len(folds)} folds)"
             if n_tuned else "")
    which = {"aligned": "the group model aligned", "tuned": "the group model tuned to the subject",
             "own": "the subject's own model"}[src]
    return w, (f"chosen ({which}) among {', '.join(f'{x:g}' for x in WEIGHTS)} on {len(folds)} inner "
               f"{split}-wise folds ({metric} {mean[j]:.3f}{near}{tuned})"), src == "tuned"


def _grain(y: np.ndarray, n_classes: int) -> float:
    """The step the key metric (:func:`key_score`) takes on test labels ``y`` when one pair of a target and a
    non-target is ordered the other way (AUC: ``1 / (n1 n0)``; a tie between them moves it half that), or one epoch
    of the largest class is classified the other way (balanced accuracy over the classes present: ``1 / (classes
    x its count)``). NaN where the metric is undefined (AUC with one class present)."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes)
    if n_classes == 2:
        return 1.0 / (int(counts[0]) * int(counts[1])) if counts[0] and counts[1] else float("nan")
    return 1.0 / (int(np.count_nonzero(counts)) * max(1, int(counts.max())))


def _steadiest(table: np.ndarray, mean: np.ndarray, best: int, grain: float = 0.0) -> int:
    """The first blend (``table``'s columns in order of preference: the group's largest weight first) that scores
    within one standard error of the best blend's (the SE of their paired fold-by-fold differences): the subject's
    own model must win by more than the inner folds resolve before it outweighs the group model. On a few minutes
    of calibration (3 inner folds of a handful of blocks) the best weight is mostly noise: a blend chosen on it
    scored below the group model alone (bench_group.py).

    Within means strictly less than one SE below, or level with the best: a blend that ties the best on all folds
    but one and loses that one is exactly one SE below it (differences ``[x, 0, 0]``: mean and SE both ``x / 3``),
    the clearest verdict three folds can give, and is not kept. That happens where the folds' scores reach the
    ceiling: a simulated subject's 2-minute fold kept the aligned model at 0.5 (inner folds 0.82, 1, 1) over the
    tuned model (1, 1, 1) and scored 0.92 instead of 0.998.

    A gap no larger than ``grain`` is level too: one step of one fold's score (one pair of epochs ordered the other
    way, for AUC: :func:`_grain`) as a change of the folds' mean, what a single flipped pair in the fold of fewest
    pairs moves it by; a loss of a pair in every fold, or of several in one, is a verdict. Near the ceiling, a
    blend that loses one pair of one fold's 156 or 625 is otherwise one SE below the best: 2 of a simulated
    subject's five 2-minute folds kept the tuned group model at 0.75 (a quarter of its own 0.65-AUC model) for it,
    and scored 0.9944 where the tuned model alone in every fold scores 0.9975 (bench_group.py, BENCHMARKS.md)."""
    for j in range(best + 1):  # the group model alone first
        d = table[:, best] - table[:, j]
        d = d[np.isfinite(d)]
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        gap = mean[best] - mean[j]
        if np.isfinite(mean[j]) and (gap <= grain * (1 + 1e-9) or gap < se * (1 - 1e-9)):
            return j
    return best


# -- a blend as a subject's stored model (quick-train with decoder.group_model) -------------------------------------
def save_adapted(out: Path, group_path: Path, group, weight: float, how: str, reference, es: EpochSet,
                 own_path: Optional[Path], metrics: dict, trained_images=None, tuned=None) -> Path:
    """A subject's model that blends ``group`` (stored at ``group_path``) with their own model (saved at
    ``own_path`` by :func:`~.modelio.save_model`; None: the group model alone), at ``weight``.

    ``out`` (``.safetensors``) holds the subject's frozen alignment (:class:`~.harmonise.Reference`: whitening
    filters, plain arrays), ``out``'s ``-tuned.skops`` the group model ``tuned`` to the subject (when it was: a
    skops file loaded with eegloop's trusted types only), and ``out.json`` everything else: the group model's file and the own model's file as
    paths relative to ``out`` (a data folder can move), the weight and how it was chosen, and the epochs' layout
    (channels, rate, first sample) that online epochs must share. Nothing in either file is executed on loading.
    """
    from safetensors.numpy import save_file

    from .._files import private_dir, private_file, write_private_text

    private_dir(out.parent)
    arrays = {k: np.ascontiguousarray(v) for k, v in reference.to_arrays().items()}
    arrays["n_epochs"] = np.array([reference.n_epochs], dtype=np.int64)
    private_file(out, create=True)
    save_file(arrays, str(out))
    private_file(out)
    rel = lambda q: os.path.relpath(Path(q).resolve(), out.parent.resolve())  # noqa: E731
    tuned_json = None
    if tuned is not None:  # the group's prior fitted to the subject: a pipeline of eegloop's own (skops, trusted)
        from .pipelines import save_pipeline

        tuned_path = out.with_name(out.stem + "-tuned.skops")
        save_pipeline(tuned.pipeline, tuned_path)
        tuned_json = {"path": rel(tuned_path), "n_epochs": int(tuned.n_epochs), "classes": list(tuned.classes)}
    meta = {"format": ADAPTED_FORMAT, "model": {"kind": "adapted"},
            "method": metrics.get("method"), "classes": dict(es.classes), "channel_names": list(es.channel_names),
            "n_times": int(es.data.shape[-1]), "epoch": {"sfreq": float(es.sfreq), "tmin": float(es.tmin)},
            "group": {"name": group.name, "path": rel(group_path), "method": group.method,
                      "alignment": group.alignment, "weight": float(weight), "how": how,
                      "n_reference_epochs": int(reference.n_epochs), "tuned": tuned_json},
            "own": rel(own_path) if own_path is not None else None, "metrics": metrics,
            "calibration_bias": None,
            "trained_images": sorted({s for s in trained_images if s}) if trained_images is not None else None}
    write_private_text(out.with_suffix(".json"), json.dumps(meta, indent=2))
    return out
