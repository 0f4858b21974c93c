"""Zero-shot decoding across subjects: the EEG encoder trained on several subjects, scored leave-one-subject-out.

As the field reports it on THINGS-EEG2 (one import per subject): for each subject, an encoder is trained on the
*other* subjects' epochs of the training classes, then identifies the held-out subject's images of classes no
subject was trained on (k-way identification among those test images, chance and a permutation p beside it, as
:func:`eegloop.decoder.zeroshot.zero_shot_evaluate` scores one subject). The held-out subject contributes nothing to
its encoder: neither epochs nor labels; with ``align`` its epochs are whitened by their own mean covariance
(Euclidean alignment, He & Wu 2019: no labels needed), as every training subject's are, so that each head's own
mixing of the sources is undone before the subjects are pooled.
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

__all__ = ["SubjectZeroShot", "LosoZeroShotReport", "zero_shot_loso", "euclidean_alignment"]


@dataclass
class SubjectZeroShot:
    """One held-out subject's zero-shot identification by an encoder trained on the others."""

    subject: str
    trained_on: list[str]
    n_train_epochs: int
    n_test_epochs: int
    n_test_images: int
    scores: dict
    main_k: int
    pvalue: float
    epochs_run: int = 0
    stopped: str = ""

    @property
    def top1(self) -> float:
        return float(next(v["top1"] for k, v in self.scores.items() if k.split("-")[0] == str(self.main_k)))

    @property
    def chance(self) -> float:
        return 1.0 / self.main_k


@dataclass
class LosoZeroShotReport:
    """Leave-one-subject-out zero-shot scores: one row per subject, their mean, the held-out classes."""

    test_classes: list[str]
    alignment: str
    subjects: list[SubjectZeroShot] = field(default_factory=list)
    seconds: float = 0.0
    shuffled: bool = False

    @property
    def mean_top1(self) -> float:
        return float(np.mean([s.top1 for s in self.subjects]))

    def table(self) -> str:
        rows = [f"zero-shot leave-one-subject-out ({len(self.test_classes)} held-out classes; alignment "
                f"{self.alignment}{'; SHUFFLED images: a control, should be chance' if self.shuffled else ''})",
                f"{'subject':<12} {'trained on':<24} {'test images':>11} {'k':>4} {'top1':>6} {'chance':>6} "
                f"{'p':>7}"]
        for s in self.subjects:
            rows.append(f"{s.subject:<12} {','.join(s.trained_on)[:24]:<24} {s.n_test_images:>11} {s.main_k:>4} "
                        f"{s.top1:>6.3f} {s.chance:>6.3f} {s.pvalue:>7.4f}")
        rows.append(f"{'mean':<12} {'':<24} {'':>11} {'':>4} {self.mean_top1:>6.3f}")
        return "\n".join(rows)

    def to_json(self) -> dict:
        return {"kind": "zero_shot_loso", "test_classes": list(self.test_classes), "alignment": self.alignment,
                "shuffled": self.shuffled, "mean_top1": round(self.mean_top1, 4), "seconds": round(self.seconds, 2),
                "subjects": [{"subject": s.subject, "trained_on": s.trained_on, "n_train_epochs": s.n_train_epochs,
                              "n_test_epochs": s.n_test_epochs, "n_test_images": s.n_test_images,
                              "main_k": s.main_k, "top1": round(s.top1, 4), "chance_top1": round(s.chance, 4),
                              "pvalue": s.pvalue, "scores": s.scores, "epochs_run": s.epochs_run,
                              "stopped": s.stopped} for s in self.subjects]}


def euclidean_alignment(X: np.ndarray) -> np.ndarray:
    """``X`` (epochs x channels x times) whitened by the inverse square root of its mean spatial covariance
    (Euclidean alignment, He & Wu 2019): the subject's own reference, computed without labels."""
    from scipy.linalg import fractional_matrix_power

    Xc = X - X.mean(axis=-1, keepdims=True)
    R = np.einsum("nct,ndt->cd", Xc, Xc) / (Xc.shape[0] * Xc.shape[2])
    R += np.eye(len(R)) * 1e-6 * np.trace(R) / len(R)  # a rank-deficient montage (average reference) stays invertible
    W = np.real(fractional_matrix_power(R, -0.5))
    return np.einsum("cd,ndt->nct", W, X).astype(np.float32)


@verbose
def zero_shot_loso(subjects: dict[str, tuple[EpochSet, dict]], protocol: Protocol,
                   test_classes: Optional[Sequence[str]] = None, align: bool = True, permutations: int = 200,
                   seed: int = 0, budget_s: Optional[float] = None, shuffle_images: bool = False,
                   progress: Optional[Callable[[str], None]] = None, train_on: Optional[dict] = None,
                   verbose: bool | str | int | None = None) -> LosoZeroShotReport:
    """Score each subject's zero-shot identification by an encoder trained on the other subjects only.

    Parameters
    ----------
    subjects : dict
        Subject code -> (epochs whose ``images`` are sha256, sha256 -> CLIP embedding); at least 3 subjects, the same
        channels (by name, any order) and sampling rate.
    protocol : Protocol
        Preprocessing, epochs and the encoder's settings (the first subject's protocol, typically).
    test_classes : sequence of str | None
        The classes no encoder trains on (default: a random ``encoder.test_share`` of the first subject's classes).
    align : bool
        Euclidean alignment of each subject on its own epochs (default); False pools them as they are (a control).
    permutations : int
        Random reassignments of predictions to images for each subject's p-value.
    budget_s : float | None
        Training seconds for all encoder fits together (default ``decoder.evaluate_budget_s``; 0: no limit).
    shuffle_images : bool
        The control: training epochs get randomly permuted images' embeddings (should score chance).
    train_on : dict | None
        Subject -> the subjects its encoder may train on (e.g. only those with group consent:
        :func:`eegloop.decoder.loso.plan_loso`); default: every other subject.
    """
    from .zeroshot import _held_out_classes, _with_known_images

    t0 = time.perf_counter()
    say = Reporter(progress, bus=False)
    if len(subjects) < 3:
        raise EegloopError(f"zero-shot leave-one-subject-out needs at least 3 subjects, got {len(subjects)}")
    data = {code: _with_known_images(es, Z)[0] for code, (es, Z) in subjects.items()}
    embeddings = {k: v for _es, Z in subjects.values() for k, v in Z.items()}
    first = next(iter(data.values()))
    test_classes = _held_out_classes(first, test_classes, protocol, seed)
    X, sfreq_in = _prepared(data, protocol, align)
    rng = np.random.default_rng(seed + 91)
    budget = protocol.decoder.evaluate_budget_s if budget_s is None else budget_s
    rep = LosoZeroShotReport(list(test_classes), "euclid" if align else "none", shuffled=shuffle_images)
    for i, code in enumerate(data):
        others = [c for c in (train_on or {}).get(code, data) if c != code]
        if len(others) < 2:
            raise EegloopError(f"zero-shot: holding {code} out leaves {len(others)} subject(s) to train on; at least 2")
        say(f"zero-shot loso {i + 1}/{len(data)}: {code} held out, the encoder trained on {', '.join(others)}")
        rep.subjects.append(_one_subject(code, others, data, X, sfreq_in, embeddings, test_classes, protocol, rng,
                                         seed + i, budget / len(data) if budget else 0, permutations, shuffle_images))
    rep.seconds = time.perf_counter() - t0
    logger.info("zero-shot leave-one-subject-out: mean top1 %.3f", rep.mean_top1)
    return rep


def _prepared(data: dict, protocol: Protocol, align: bool) -> tuple[dict, float]:
    """Each subject's encoder inputs on the first subject's channel order (aligned on its own epochs), and the
    rate the encoder reads them at."""
    from .encoder import ENCODER_REPRESENTATION
    from .preprocessing import Preprocessor

    names = list(next(iter(data.values())).channel_names)
    rate = next(iter(data.values())).sfreq
    out = {}
    for code, es in data.items():
        if sorted(es.channel_names) != sorted(names) or es.sfreq != rate:
            raise EegloopError(f"zero-shot across subjects: {code} has {len(es.channel_names)} channels at "
                               f"{es.sfreq:g} Hz where the first subject has {len(names)} at {rate:g} Hz; import "
                               "the subjects alike (same montage and rate)")
        order = [list(es.channel_names).index(c) for c in names]
        pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
        x = pre.with_representation(ENCODER_REPRESENTATION)(es.data[:, order])
        out[code] = euclidean_alignment(x) if align and x.ndim == 3 else x
    return out, rate / pre.series_factor


def _one_subject(code: str, others: list, data: dict, X: dict, sfreq_in: float, embeddings: dict, test_classes, protocol: Protocol,
                 rng: np.random.Generator, seed: int, cap: float, permutations: int,
                 shuffle_images: bool) -> SubjectZeroShot:
    from .encoder import center_targets, encode, fit_encoder, image_mean, similarity
    from .zeroshot import _identification_scores

    tr = {c: ~np.isin(data[c].labels, test_classes) for c in others}
    Xtr = np.concatenate([X[c][tr[c]] for c in others])
    imgs = np.concatenate([data[c].images[tr[c]] for c in others])
    center = image_mean(embeddings, imgs)
    Ztr = center_targets(np.stack([embeddings[s] for s in imgs]), center)
    if shuffle_images:
        Ztr = Ztr[rng.permutation(len(Ztr))]
    # early stopping on a random 15 % of the training subjects' blocks (never the held-out subject's)
    groups = np.concatenate([[f"{c}:{b}" for b in data[c].groups("block")[tr[c]]] for c in others])
    ug = np.unique(groups)
    va = np.isin(groups, rng.permutation(ug)[:max(1, int(round(0.15 * len(ug))))]) if len(ug) >= 3 else None
    fit = fit_encoder(Xtr[~va] if va is not None else Xtr, Ztr[~va] if va is not None else Ztr, protocol.encoder,
                      sfreq_in, Xtr[va] if va is not None else None, Ztr[va] if va is not None else None, seed=seed,
                      max_seconds=cap or 0)
    te = np.isin(data[code].labels, test_classes)
    test_images = sorted(set(data[code].images[te].tolist()))
    if len(test_images) < 2:
        raise EegloopError(f"zero-shot: {code} has {len(test_images)} image(s) of the held-out classes; "
                           "identification needs at least 2")
    timgs = data[code].images[te]
    P = np.stack([encode(fit.model, X[code][te][timgs == s].mean(0, keepdims=True))[0] for s in test_images])
    S = similarity(P, np.stack([embeddings[s] for s in test_images]), center)
    scores, main_k, p, _band, _null = _identification_scores(S, rng, permutations)
    return SubjectZeroShot(code, others, int(len(Xtr)), int(te.sum()), len(test_images), scores, main_k, float(p),
                           fit.epochs_run, fit.stopped or "")
