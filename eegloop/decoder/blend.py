"""The online side of a subject's model that blends a group model with their own (:func:`~.adapt.save_adapted`):
what :class:`~.modelio.OnlineDecoder` uses for such a model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EegloopError
from .adapt import in_class_order
from .groupdecoder import GroupDecoder
from .harmonise import Reference

__all__ = ["BlendedOnline"]


class BlendedOnline:
    """The online side of :func:`save_adapted`: one epoch (channels x times, the training epochs' layout) ->
    class probabilities in the model's class order, ``w * p_group + (1 - w) * p_own``."""

    def __init__(self, path: Path, meta: dict, own=None, device: str = "cpu"):
        from safetensors.numpy import load_file

        g = meta["group"]
        group_path = (path.parent / g["path"]).resolve()
        if not group_path.is_file():
            raise EegloopError(f"this model blends group model {g['name']!r}, whose file {group_path} is gone (deleted "
                               "when a member withdrew consent?): train the subject's model again")
        self.group = GroupDecoder(group_path, device)
        self.tuned = None  # the group model tuned to the subject (save_adapted's tuned), which then decodes for it
        if g.get("tuned"):
            from .groupdecoder import TunedGroup
            from .pipelines import load_pipeline

            t = g["tuned"]
            if not isinstance(t, dict) or not isinstance(t.get("path"), str):
                raise EegloopError(f"{path.with_suffix('.json')}: its group.tuned entry is damaged: train the "
                                   "subject's model again")
            tuned_path = (path.parent / t["path"]).resolve()
            if not tuned_path.is_file():
                raise EegloopError(f"this model's tuned group model {tuned_path} is missing: train the subject's "
                                   "model again")
            pipe = load_pipeline(tuned_path)
            if not hasattr(pipe, "classes_") or not hasattr(pipe, "predict_proba"):
                raise EegloopError(f"{tuned_path}: not a fitted classifier: train the subject's model again")
            n = t.get("n_epochs")
            self.tuned = TunedGroup(self.group, pipe, n if isinstance(n, int) and not isinstance(n, bool) else 0)
        arrays = load_file(str(path))
        self.reference = Reference.from_arrays(arrays, int(arrays["n_epochs"][0]))
        self.weight = float(g["weight"])
        self.own = own  # the subject's own model (an OnlineDecoder, loaded by the caller) or None
        self.classes = list(meta["classes"])
        self.channel_names = list(meta["channel_names"])
        self.sfreq, self.tmin = float(meta["epoch"]["sfreq"]), float(meta["epoch"]["tmin"])

    def group_proba(self, data: np.ndarray) -> np.ndarray:
        """The group model's probabilities for epochs (n, channels, times), columns in this model's class order."""
        src = self.tuned or self.group
        raw = src.predict_array(data, self.channel_names, self.sfreq, self.tmin, self.reference)
        return in_class_order(raw, list(src.classes), self.classes)

    def predict(self, data: np.ndarray) -> np.ndarray:
        """Probabilities (classes,) for one epoch."""
        p = self.group_proba(np.asarray(data)[None])[0] if self.weight > 0 else 0.0
        if self.own is not None and self.weight < 1:
            po = self.own.predict(data)
            p = self.weight * p + (1 - self.weight) * np.array([po[c] for c in self.classes])
        return np.asarray(p, dtype=np.float64)
