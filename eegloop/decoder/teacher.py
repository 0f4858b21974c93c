"""The CLIP image teacher (open_clip) and its linear classifier.

The teacher sees only the stimulus images: CLIP image features (computed once
per image and cached by the image's content hash) feed a linear classifier
whose probabilities are the students' soft targets. Its cross-validated
accuracy over images is reported (the paper's is 99%).

Weights are never downloaded at run time: ``teacher.model`` is an open_clip
model name whose ``teacher.pretrained`` tag is already in the local cache, a
local checkpoint path (``.safetensors``/``.bin``/``.pt``), or
``local-dir:PATH`` holding ``open_clip_config.json`` +
``open_clip_model.safetensors``. Missing weights raise
:class:`~eegloop.errors.ModelNotAvailableError` with one line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .._logging import logger
from ..embeddings import load_clip
from ..protocol import Protocol, TeacherConfig
from ..types import EpochSet

__all__ = ["ClipTeacher", "load_clip", "fit_teacher"]


@dataclass
class ClipTeacher:
    """Linear classifier on CLIP image features, giving soft targets per image."""

    classes: list  # class ids, the order of the logits
    logits_by_sha: dict  # image sha256 -> logits (n_classes,)
    accuracy: float  # cross-validated over images
    n_images: int
    model_name: str
    features: dict = field(default_factory=dict, repr=False)  # sha256 -> CLIP image feature
    labels: dict = field(default_factory=dict, repr=False)  # sha256 -> class id

    def for_training(self, shas: Sequence[str], labels: Optional[Sequence[str]] = None) -> "ClipTeacher":
        """The same teacher with its linear head refitted on these images only (one fold's training images).

        Fitting the head on every image, a fold's test images included, would let the test images shape
        the soft targets the student learns from. The refitted teacher knows the logits of ``shas`` only,
        exactly what quick-train's teacher knows of its training images; a test image is never needed.

        Parameters
        ----------
        shas : sequence of str
            The training epochs' image sha256 (repeats allowed).
        labels : sequence of str | None
            The class id of each of those epochs (default: each image's own class). A label-shuffled
            control passes its shuffled labels, so that the teacher cannot hand the student the true
            classes back: the head is then fitted on every (image, label) pair the epochs hold.
        """
        if labels is None:
            pairs = sorted(set(shas))
            if not pairs or any(s not in self.features for s in pairs):
                return self.known_only(())
            pairs = [(s, self.labels[s]) for s in pairs]
        else:
            pairs = sorted(set(zip(shas, labels)))
            if not pairs or any(s not in self.features for s, _ in pairs):
                return self.known_only(())
        idx = {c: i for i, c in enumerate(self.classes)}
        X = np.stack([self.features[s] for s, _ in pairs])
        y = np.array([idx[c] for _, c in pairs])
        keep = sorted({s for s, _ in pairs})
        if len(np.unique(y)) < 2:
            return self.known_only(())
        head = _head_logits(X, y, len(self.classes))
        by_sha = {}
        for (s, _), v in zip(pairs, head):  # an image with several labels (a shuffled control): one logit row
            by_sha.setdefault(s, v)
        return ClipTeacher(self.classes, {s: by_sha[s] for s in keep}, self.accuracy, len(keep),
                           self.model_name, self.features, self.labels)

    def known_only(self, shas: Sequence[str]) -> "ClipTeacher":
        """The same teacher knowing the logits of ``shas`` only (none: it distils nothing)."""
        keep = {s for s in shas if s in self.logits_by_sha}
        return ClipTeacher(self.classes, {s: v for s, v in self.logits_by_sha.items() if s in keep}, self.accuracy,
                           len(keep), self.model_name, self.features, self.labels)

    @classmethod
    def fit(cls, cfg: TeacherConfig, images: Sequence[tuple[str, str, str]], classes: list,
            cache_dir: str | Path | None = None, device: str = "cpu", batch: int = 32) -> "ClipTeacher":
        """Fit on ``images`` = [(path, sha256, class_id)].

        CLIP features are cached as ``cache_dir/<model>/<sha256>.npy``.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        from ..embeddings import image_embeddings

        feats = image_embeddings([(path, sha) for path, sha, _c in images], cfg.model, cfg.pretrained,
                                 cache_dir=cache_dir, device=device, batch=batch)
        shas = [sha for _, sha, _ in images]
        X = np.stack([feats[s] for s in shas])
        idx = {c: i for i, c in enumerate(classes)}
        y = np.array([idx[c] for _, _, c in images])
        clf = LogisticRegression(C=10.0, max_iter=2000)
        n_min = np.bincount(y).min()
        acc = float("nan")
        if n_min >= 2:
            k = int(min(5, n_min))
            acc = float(cross_val_score(clf, X, y, cv=StratifiedKFold(k, shuffle=True, random_state=0)).mean())
        logits = _head_logits(X, y, len(classes))
        logger.info("teacher: %s on %d images, cross-validated accuracy %.3f", cfg.model, len(shas), acc)
        return cls(classes=list(classes), logits_by_sha={s: l for s, l in zip(shas, logits)}, accuracy=acc,
                   n_images=len(set(shas)), model_name=cfg.model, features={s: feats[s] for s in shas},
                   labels={sha: c for _, sha, c in images})

    def logits_for(self, shas: Sequence[str]) -> Optional[np.ndarray]:
        """Teacher logits per epoch (by its image's sha256); None if any image is unknown."""
        try:
            return np.stack([self.logits_by_sha[s] for s in shas]).astype(np.float32)
        except KeyError:
            return None


def _head_logits(X: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Fit the linear head on (X, y) and return its logits for X, one column per class."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=10.0, max_iter=2000).fit(X, y)
    d = clf.decision_function(X)
    if d.ndim == 1:  # two classes: sklearn gives one column
        d = np.stack([-d / 2, d / 2], 1)
    out = np.full((len(X), n_classes), -1e4, np.float32)  # a class absent from the images gets no mass
    out[:, clf.classes_] = d
    return out


def fit_teacher(db, protocol: Protocol, es: EpochSet):
    """Fit the CLIP teacher on the session's stimulus images, or return None (with the reason logged)."""
    if not protocol.teacher.enabled:
        return None
    if not all(es.images):
        logger.warning("teacher skipped: some epochs have no known stimulus image")
        return None
    by_sha = {r.sha256: r for r in db.get_stimuli()}
    images = []
    for sha in sorted(set(es.images)):
        r = by_sha.get(sha)
        if r is None or not Path(r.path).is_file():
            logger.warning("teacher skipped: stimulus image %s is missing", r.path if r else sha)
            return None
        images.append((r.path, sha, r.class_id))
    return ClipTeacher.fit(protocol.teacher, images, list(es.classes), cache_dir=db.data_dir / "cache" / "clip")
