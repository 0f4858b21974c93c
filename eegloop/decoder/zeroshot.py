"""Zero-shot evaluation of the EEG encoder: identify images of concepts it never saw, honestly.

The encoder (:mod:`.encoder`) is trained on some classes and tested on others (``test_classes``, or a
random ``encoder.test_share`` of them): it never sees a test concept. It never sees a test epoch's block
(or run) either: where training and test classes share blocks (an interleaved design) the blocks holding
test epochs are split into folds, and each fold's encoder is trained only on training-class epochs from
the other blocks. A design where that is impossible (a single block, or ``split: random``) is refused.

Identification is k-way among the held-out images (THINGS-EEG's protocol): for each test image, its
predicted embedding (the encoder's output on the mean of its epochs' inputs) is compared by cosine
similarity with its own CLIP embedding and those of k - 1 other test images; top-1 / top-5 are the exact
expectations over every choice of the k - 1 (hypergeometric), so no sampling noise is added. Chance is
1/k and 5/k; the permutation p-value reassigns predictions to images at random (the trained encoders are
fixed, and never saw any test image, so the null is exact).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..progress import Reporter, verbose
from ..protocol import Protocol
from ..types import EpochSet
from .folds import NoHonestFoldError

__all__ = ["ZeroShotReport", "zero_shot_evaluate", "zero_shot_splits", "identification", "choose_test_classes"]

K_WAYS = (2, 50, 200)


def identification(S: np.ndarray, k: int) -> tuple[float, float]:
    """Expected k-way top-1 and top-5 from a similarity matrix ``S`` (predictions x candidates, the true
    candidate of row i in column i), over every choice of the k - 1 distractors among the other columns."""
    from scipy.stats import hypergeom

    n = S.shape[0]
    if n < 2:
        return float("nan"), float("nan")
    k = int(min(k, n))
    true = np.diag(S)
    beaters = (S > true[:, None]).sum(1)  # candidates that outrank the true image
    dist = hypergeom(n - 1, beaters, k - 1)
    top1 = float(np.mean(dist.pmf(0)))
    top5 = float(np.mean(dist.cdf(min(5, k) - 1)))
    return top1, top5


def _ranks(S: np.ndarray) -> np.ndarray:
    return (S > np.diag(S)[:, None]).sum(1)


def choose_test_classes(classes: Sequence[str], share: float, seed: int = 0) -> list[str]:
    """A random ``share`` of the classes (at least one, leaving at least two for training)."""
    classes = list(classes)
    n = int(round(share * len(classes)))
    n = max(1, min(n, len(classes) - 2))
    if n < 1 or len(classes) < 3:
        raise EegloopError(f"zero-shot needs at least 3 classes (2 to train on, 1 held out); the data have "
                           f"{len(classes)}")
    rng = np.random.default_rng(seed + 31)
    return sorted(rng.choice(classes, n, replace=False).tolist())


@dataclass
class ZeroShotReport:
    """What :func:`zero_shot_evaluate` measured; ``to_json`` for files, ``table`` for people."""

    split: str
    test_classes: list
    n_train_epochs: int
    n_test_epochs: int
    n_test_images: int
    n_folds: int
    scores: dict  # "k-way" -> {"top1", "top5", "chance_top1", "chance_top5"}
    main_k: int
    pvalue: float
    null_band: tuple  # (2.5 %, 97.5 %) of the permutation null of the main k's top-1
    permutations: int
    curve_k: list  # [(k, top1, chance)]
    curve_topn: list  # [(n, accuracy among all test images, chance)]
    examples: list  # [{"image": sha, "class": id, "retrieved": [sha x5], "similarity": [...]}]
    seconds: float
    shuffled: bool = False
    notes: list = field(default_factory=list)
    fits: list = field(default_factory=list)  # per fold: epochs_run, best_epoch, stopped, seconds
    clip_model: str = ""

    def to_json(self) -> dict:
        return {"zero_shot": True, "split": self.split, "test_classes": list(self.test_classes),
                "n_train_epochs": self.n_train_epochs, "n_test_epochs": self.n_test_epochs,
                "n_test_images": self.n_test_images, "n_folds": self.n_folds, "scores": self.scores,
                "main_k": self.main_k, "pvalue": round(self.pvalue, 5), "null_band": [round(v, 4) for v in self.null_band],
                "permutations": self.permutations, "curve_k": self.curve_k, "curve_topn": self.curve_topn,
                "examples": self.examples, "seconds": round(self.seconds, 2), "shuffled_images": self.shuffled,
                "inflated": False, "shuffled_labels": self.shuffled,  # classes and their blocks never trained on
                "notes": list(self.notes), "fits": self.fits, "clip_model": self.clip_model}

    def table(self) -> str:
        lines = []
        if self.shuffled:
            lines.append("(control: training images shuffled among epochs — scores should sit at chance)")
        lines.append(f"zero-shot identification: {self.n_test_images} images of {len(self.test_classes)} held-out "
                     f"classes never trained on ({self.n_test_epochs} epochs), {self.split}-wise folds: "
                     f"{self.n_folds}, trained on {self.n_train_epochs} epochs")
        head = f"{'k-way':<10}{'top-1':>9}{'chance':>9}{'top-5':>9}{'chance':>9}"
        lines += [head, "-" * len(head)]
        for name, s in self.scores.items():
            lines.append(f"{name:<10}{s['top1']:>9.3f}{s['chance_top1']:>9.3f}{s['top5']:>9.3f}{s['chance_top5']:>9.3f}")
        lines.append(f"{self.main_k}-way top-1: permutation p = {self.pvalue:.4f} ({self.permutations} reassignments "
                     f"of predictions to images; null 95 % band {self.null_band[0]:.3f}-{self.null_band[1]:.3f})")
        lines.append("held-out classes: " + ", ".join(self.test_classes[:12])
                     + (f", ... ({len(self.test_classes)})" if len(self.test_classes) > 12 else ""))
        lines += self.notes
        return "\n".join(lines)


def _folds(groups: np.ndarray, is_test: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Groups (blocks/runs) of test epochs, split into folds; one fold when training never shares a group."""
    test_groups = np.unique(groups[is_test])
    train_groups = np.unique(groups[~is_test])
    if not len(set(test_groups) & set(train_groups)):
        return [test_groups]
    if len(test_groups) < 2:
        raise NoHonestFoldError(
            "no honest zero-shot split: every held-out epoch sits in one block that also holds training "
            "classes, so the encoder would have to train on the test block. Record several blocks (or runs)")
    rng = np.random.default_rng(seed + 5)
    order = rng.permutation(test_groups)
    k = int(min(n_folds, len(order)))
    return [np.sort(part) for part in np.array_split(order, k)]


def zero_shot_splits(es: EpochSet, test_classes: Sequence[str], split: str = "block", n_folds: int = 5,
                     seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) epoch indices per fold: test epochs are the ``test_classes``' in the fold's groups, training
    epochs the other classes' outside those groups. Refuses (``NoHonestFoldError``/``EegloopError``) a random
    split and designs where that leaves a fold without training data."""
    if split == "random":
        raise EegloopError("--split random: zero-shot evaluation holds out whole blocks or runs (a random split "
                           "would test on trials sharing their blocks' slow drift with training); use block or run")
    is_test = np.isin(es.labels, list(test_classes))
    groups = es.groups(split)
    out = []
    for f, fold_groups in enumerate(_folds(groups, is_test, n_folds, seed)):
        in_fold = np.isin(groups, fold_groups)
        tr = np.flatnonzero(~is_test & ~in_fold)
        te = np.flatnonzero(is_test & in_fold)
        if len(tr) < 4 or len(set(es.labels[tr].tolist())) < 2 or len(te) == 0:
            raise NoHonestFoldError(f"no honest zero-shot split: fold {f + 1} leaves {len(tr)} training epochs "
                                    f"outside the held-out {split}s (the held-out classes share every {split} "
                                    "with the training classes); record more blocks or runs")
        if set(groups[tr].tolist()) & set(groups[te].tolist()):  # cannot happen by construction: checked anyway
            raise NoHonestFoldError("a held-out block would be trained on")
        out.append((tr, te))
    return out


@verbose
def zero_shot_evaluate(es: EpochSet, embeddings: dict, protocol: Protocol, test_classes: Optional[Sequence[str]] = None,
                       split: Optional[str] = None, n_folds: Optional[int] = None, permutations: int = 1000,
                       seed: int = 0, budget_s: Optional[float] = None, shuffle_images: bool = False,
                       progress: Optional[Callable[[str], None]] = None, clip_model: str = "",
                       verbose: bool | str | int | None = None) -> ZeroShotReport:
    """Train the encoder on some classes, identify images of the others (see the module's notes).

    Parameters
    ----------
    es : EpochSet
        Epochs whose ``images`` are the stimuli's sha256 (epochs of unknown images are dropped).
    embeddings : dict
        sha256 -> CLIP image embedding of every image in ``es``.
    test_classes : sequence of str | None
        Classes to hold out; None: a random ``encoder.test_share`` of them (``seed``).
    split : "block" | "run" | None
        The groups held out with the test classes (default ``training.split``); ``random`` is refused.
    n_folds : int | None
        Folds over the test epochs' groups when they also hold training classes (default ``training.n_folds``).
    permutations : int
        Random reassignments of predictions to images for the p-value (0: none).
    budget_s : float | None
        Training seconds for all folds together (default ``decoder.evaluate_budget_s``; 0: no limit).
    shuffle_images : bool
        The control: training epochs get the embeddings of randomly permuted images (should score chance).
    """
    from .encoder import ENCODER_REPRESENTATION, center_targets, image_mean, similarity
    from .preprocessing import Preprocessor

    t_start = time.perf_counter()
    say = Reporter(progress, bus=False)  # to progress= when given, else the eegloop.progress logger
    split = split or protocol.training.split
    if split == "random":
        zero_shot_splits(es, [], split)  # refuses, with the reason
    es, notes = _with_known_images(es, embeddings)
    test_classes = _held_out_classes(es, test_classes, protocol, seed)
    is_test = np.isin(es.labels, test_classes)
    folds = zero_shot_splits(es, test_classes, split, n_folds or protocol.training.n_folds, seed)
    pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
    pre = pre.with_representation(ENCODER_REPRESENTATION)
    say(f"zero-shot: preprocessing {len(es)} epochs")
    X = pre(es.data)
    center = image_mean(embeddings, es.images[~is_test])
    Z_all = center_targets(np.stack([embeddings[s] for s in es.images]), center)
    budget = protocol.decoder.evaluate_budget_s if budget_s is None else budget_s
    rng = np.random.default_rng(seed + 77)
    test_images = sorted(set(es.images[is_test].tolist()))
    if len(test_images) < 2:
        raise EegloopError(f"zero-shot: the held-out classes have {len(test_images)} image(s); identification needs "
                           "at least 2")
    P, fits, trained_on = _predict_folds(es, folds, X, Z_all, protocol, split, es.sfreq / pre.series_factor,
                                         test_images, budget, rng, seed, shuffle_images, say)
    S = similarity(P, np.stack([embeddings[s] for s in test_images]), center)
    N = len(test_images)
    scores, main_k, p, band, null = _identification_scores(S, rng, permutations)
    curve_k, curve_topn = _curves(S)
    examples = _examples(S, test_images, es, seed)
    if len(folds) == 1:
        notes.append(f"the held-out classes never share a {split} with training classes: one fold")
    stopped = sum(f["stopped"] == "time_budget" for f in fits)
    if stopped:
        notes.append(f"time budget {budget:g} s: {stopped} of {len(fits)} encoder fits stopped by it (--budget 0: "
                     "no limit)")
    rep = ZeroShotReport(split=split, test_classes=list(test_classes), n_train_epochs=len(trained_on),
                         n_test_epochs=int(is_test.sum()), n_test_images=N, n_folds=len(folds), scores=scores,
                         main_k=main_k, pvalue=p, null_band=band, permutations=len(null), curve_k=curve_k,
                         curve_topn=curve_topn, examples=examples, seconds=time.perf_counter() - t_start,
                         shuffled=shuffle_images, notes=notes, fits=fits, clip_model=clip_model)
    logger.info("zero-shot evaluation: %s", {k: v for k, v in rep.to_json().items() if k in ("scores", "pvalue")})
    return rep


def _with_known_images(es: EpochSet, embeddings: dict) -> tuple[EpochSet, list]:
    """The epochs of a known image with a CLIP embedding (one line when there are none), and the note."""
    known = np.array([bool(s) and s in embeddings for s in es.images])
    if not known.any():
        raise EegloopError("zero-shot: no epoch has a known stimulus image with a CLIP embedding (imported data "
                           "need their images: --images DIR)")
    notes = []
    if not known.all():
        notes.append(f"{int((~known).sum())} epochs without a known image left out")
        es = es.subset(np.flatnonzero(known))
    return es, notes


def _held_out_classes(es: EpochSet, test_classes, protocol: Protocol, seed: int) -> list:
    """The classes never trained on (given, else a random ``encoder.test_share``), checked against the epochs."""
    classes = sorted(set(es.labels.tolist()))  # the classes with epochs (the set may name others)
    if test_classes is None:
        test_classes = choose_test_classes(classes, protocol.encoder.test_share, seed)
    test_classes = [c for c in dict.fromkeys(test_classes)]
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise EegloopError(f"--test-classes: {unknown[0]!r} is not a class of these epochs")
    if len(set(classes) - set(test_classes)) < 2:
        raise EegloopError("zero-shot: at least two classes must remain for training")
    return test_classes


def _predict_folds(es: EpochSet, folds: list, X: np.ndarray, Z_all: np.ndarray, protocol: Protocol, split: str,
                   sfreq_in: float, test_images: list, budget: float, rng: np.random.Generator, seed: int,
                   shuffle_images: bool, say) -> tuple[np.ndarray, list, set]:
    """One encoder per fold, trained on the other classes outside the fold's groups; returns the test images'
    predicted embeddings (unit length, summed over folds), each fit's record and the epochs trained on."""
    from .encoder import encode, fit_encoder

    groups = es.groups(split)
    pos = {s: i for i, s in enumerate(test_images)}
    pred_sum = np.zeros((len(test_images), Z_all.shape[1]))
    fits = []
    cfg = protocol.encoder
    trained_on: set = set()
    for f, (tr, te) in enumerate(folds):
        trained_on.update(tr.tolist())
        Z_tr = Z_all[tr]
        if shuffle_images:
            Z_tr = Z_tr[rng.permutation(len(tr))]
        # early stopping on whole training groups held out (about 15 %), when there are enough
        tg = np.unique(groups[tr])
        va = np.zeros(len(tr), bool)
        if len(tg) >= 3:
            vg = rng.permutation(tg)[:max(1, int(round(0.15 * len(tg))))]
            va = np.isin(groups[tr], vg)
        cap = budget / len(folds) if budget else 0
        say(f"zero-shot fold {f + 1}/{len(folds)}: training the encoder on {len(tr)} epochs of "
            f"{len(set(es.labels[tr]))} classes (test: {len(te)} epochs of {len(set(es.labels[te]))} held-out classes)")
        fit = fit_encoder(X[tr][~va], Z_tr[~va], cfg, sfreq_in, X[tr][va] if va.any() else None,
                          Z_tr[va] if va.any() else None, seed=seed + f, max_seconds=cap or 0)
        fits.append({"epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch, "stopped": fit.stopped,
                     "seconds": round(fit.seconds, 2), "n_train": int(len(tr))})
        # one prediction per test image in this fold: the encoder on the mean of its epochs' inputs
        imgs = es.images[te]
        for s in sorted(set(imgs.tolist())):
            x = X[te[imgs == s]].mean(0, keepdims=True)
            pred_sum[pos[s]] += encode(fit.model, x)[0]
    P = pred_sum / np.maximum(np.linalg.norm(pred_sum, axis=1, keepdims=True), 1e-12)
    return P, fits, trained_on


def _identification_scores(S: np.ndarray, rng: np.random.Generator, permutations: int):
    """k-way scores per k, the main k, its permutation p-value and null band, and the null itself."""
    from .scoring import permutation_pvalue

    N = S.shape[0]
    scores = {}
    for k in [k for k in K_WAYS if k < N] + [N]:
        t1, t5 = identification(S, k)
        scores[f"{k}-way" if k < N else f"{N}-way (all)"] = {"top1": round(t1, 4), "top5": round(t5, 4),
                                                        "chance_top1": round(1 / k, 4),
                                                        "chance_top5": round(min(5, k) / k, 4)}
    main_k = 50 if N > 50 else N
    observed = identification(S, main_k)[0]
    null = []
    for _ in range(permutations):
        perm = rng.permutation(N)
        null.append(_perm_top1(S, perm, main_k))
    p = permutation_pvalue(observed, null) if null else float("nan")
    band = (float(np.percentile(null, 2.5)), float(np.percentile(null, 97.5))) if null else (float("nan"),) * 2
    return scores, main_k, p, band, null


def _curves(S: np.ndarray) -> tuple[list, list]:
    """Top-1 against k (k-way), and accuracy among all test images against n (top-n), with chance."""
    N = S.shape[0]
    ks = sorted(set([2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]) & set(range(2, N)) | {N})
    curve_k = [(int(k), round(identification(S, k)[0], 4), round(1 / k, 4)) for k in ks]
    ranks = _ranks(S)
    ns = sorted(set([1, 2, 3, 5, 10, 20, 50, 100, 200, 500]) & set(range(1, N)) | {N})
    curve_topn = [(int(n), round(float(np.mean(ranks < n)), 4), round(n / N, 4)) for n in ns]
    return curve_k, curve_topn


def _examples(S: np.ndarray, test_images: list, es: EpochSet, seed: int) -> list:
    """Six test images (a fixed random choice) with the five images retrieved for each."""
    N = S.shape[0]
    ranks = _ranks(S)
    examples = []
    cls_of = {s: c for s, c in zip(es.images, es.labels)}
    for i in np.random.default_rng(seed).permutation(N)[:6]:
        order = np.argsort(-S[i])[:5]
        examples.append({"image": test_images[i], "class": str(cls_of[test_images[i]]),
                         "retrieved": [test_images[j] for j in order],
                         "similarity": [round(float(S[i, j]), 4) for j in order], "rank": int(ranks[i])})
    return examples


def _perm_top1(S: np.ndarray, perm: np.ndarray, k: int) -> float:
    """k-way top-1 with prediction i scored against image perm[i] (the null: predictions unrelated to images)."""
    return identification(S[:, perm], k)[0]
