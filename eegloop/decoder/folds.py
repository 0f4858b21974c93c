"""Honest splits: folds that leave whole blocks (or runs) out, and the inner fit/early-stopping split.

Folds leave whole blocks (default) or whole runs out — never a random split of
trials, which a block design makes meaningless (Li et al. 2021): trials of one
block share slow drift, so a classifier can recognise the block instead of the
image. Where a class sits in a single block (the paper's design), no honest
fold can test it, and :func:`make_folds` raises :class:`NoHonestFoldError`
naming the classes instead of printing a score. ``split="random"`` exists only
to show the difference; its results carry ``inflated: true``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EegloopError
from ..types import EpochSet

__all__ = ["NoHonestFoldError", "make_folds", "InnerSplit", "inner_validation", "inflation"]


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

