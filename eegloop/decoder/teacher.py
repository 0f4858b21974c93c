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

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .._logging import logger
from ..errors import ModelNotAvailableError
from ..protocol import TeacherConfig

__all__ = ["ClipTeacher", "load_clip"]


def load_clip(model: str, pretrained: Optional[str], device: str = "cpu"):
    """Load an open_clip model and its image transform from local files only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    pre = pretrained
    if pre and (pre.startswith(("/", ".", "~")) or Path(pre).suffix in (".safetensors", ".bin", ".pt", ".pth")):
        p = Path(pre).expanduser()
        if not p.is_file():
            raise ModelNotAvailableError(f"CLIP teacher weights '{p}' not found (teacher.pretrained): put the "
                                         "checkpoint there or point teacher.pretrained at it")
        pre = str(p)
    if model.startswith("local-dir:") and not Path(model[len("local-dir:"):]).expanduser().is_dir():
        raise ModelNotAvailableError(f"CLIP teacher folder '{model[len('local-dir:'):]}' not found (teacher.model)")
    try:
        clip, _, transform = open_clip.create_model_and_transforms(model, pretrained=pre, device=device)
    except (RuntimeError, OSError, ValueError, FileNotFoundError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotAvailableError(
            f"CLIP teacher '{model}' (pretrained '{pretrained}') is not available offline ({first[:160]}); "
            "download it once on a connected machine and set teacher.pretrained to the checkpoint file, or "
            "teacher.model to 'local-dir:FOLDER'; or set teacher.enabled: false to train without distillation"
        ) from None
    clip.eval()
    return clip, transform


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

    def for_training(self, shas: Sequence[str]) -> "ClipTeacher":
        """The same teacher with its linear head refitted on these images only (one fold's training images).

        Fitting the head on every image, a fold's test images included, would let the test images shape
        the soft targets the student learns from.
        """
        keep = sorted(set(shas))
        if not keep or any(s not in self.features for s in keep):
            return self
        X = np.stack([self.features[s] for s in keep])
        idx = {c: i for i, c in enumerate(self.classes)}
        y = np.array([idx[self.labels[s]] for s in keep])
        if len(np.unique(y)) < 2:
            return self
        logits = _head_logits(X, y, len(self.classes))
        return ClipTeacher(self.classes, {s: v for s, v in zip(keep, logits)}, self.accuracy, len(keep),
                           self.model_name, self.features, self.labels)

    @classmethod
    def fit(cls, cfg: TeacherConfig, images: Sequence[tuple[str, str, str]], classes: list,
            cache_dir: str | Path | None = None, device: str = "cpu", batch: int = 32) -> "ClipTeacher":
        """Fit on ``images`` = [(path, sha256, class_id)].

        CLIP features are cached as ``cache_dir/<model>/<sha256>.npy``.
        """
        import torch
        from PIL import Image
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score

        key = hashlib.sha256(f"{cfg.model}|{cfg.pretrained}".encode()).hexdigest()[:16]
        cdir = Path(cache_dir) / key if cache_dir else None
        feats: dict[str, np.ndarray] = {}
        todo = []
        for path, sha, _c in images:
            f = cdir / f"{sha}.npy" if cdir else None
            if f is not None and f.is_file():
                feats[sha] = np.load(f)
            elif sha not in feats:
                todo.append((path, sha))
        if todo:
            clip, transform = load_clip(cfg.model, cfg.pretrained, device)
            logger.info("teacher: CLIP features of %d images (%d cached)", len(todo), len(feats))
            with torch.no_grad():
                for i in range(0, len(todo), batch):
                    part = todo[i:i + batch]
                    x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in part]).to(device)
                    z = clip.encode_image(x).float()
                    z = (z / z.norm(dim=-1, keepdim=True)).cpu().numpy()
                    for (_, sha), v in zip(part, z):
                        feats[sha] = v
                        if cdir is not None:
                            cdir.mkdir(parents=True, exist_ok=True)
                            np.save(cdir / f"{sha}.npy", v)
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
