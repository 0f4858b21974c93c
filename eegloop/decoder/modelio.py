"""Trained models on disk: saving a decoder (weights + a JSON of everything else), reading it back for online use.

A network's weights are safetensors, a pipeline's a skops file (:mod:`.pipelines`); which one a method is comes
from the registry (:mod:`.methods`). Nothing in either file is executed when it is loaded.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import EegloopError
from ..types import Epoch
from .metafile import read_model_meta
from .methods import is_sklearn
from .preprocessing import Preprocessor

__all__ = ["TrainedModel", "save_model", "read_model_meta", "OnlineDecoder", "check_epoch_length", "load_decoder",
           "write_weights", "model_path", "db_config"]


@dataclass
class TrainedModel:
    model_id: Optional[int]
    path: Path
    metrics: dict
    seconds: float
    history: list


def save_model(model, pre: Preprocessor, classes: dict, channel_names: list, out: Path, metrics: dict,
               bias=None, method: str | None = None, n_times: int | None = None,
               trained_images: Optional[Sequence[str]] = None) -> Path:
    """Weights (safetensors for networks, skops for pipelines) + a JSON with everything else.

    The JSON holds the architecture or pipeline name, the preprocessing, the classes, the calibration
    offsets, the metrics and ``trained_images`` (the sha256 of every stimulus image the model was trained on:
    the feedback block shows it others, :mod:`eegloop.feedback.cues`); nothing in either file is executed when
    it is loaded.
    """
    from .._files import private_dir, write_private_text
    private_dir(out.parent)  # models/ and models/sub-X/: 0700 when eegloop creates them
    if method is not None and is_sklearn(method):
        from .pipelines import save_pipeline

        out = out.with_suffix(".skops")
        save_pipeline(model, out)
        config = {"kind": "pipeline", "name": method}
    else:
        write_weights(model, out)
        config = model.get_config()
    meta = {"model": config, "method": method, "preprocessing": pre.to_dict(), "classes": classes,
            "channel_names": list(channel_names), "metrics": metrics,
            "calibration_bias": [float(v) for v in bias] if bias is not None else None, "format": "eegloop-model-2",
            "n_times": n_times,
            "trained_images": sorted({s for s in trained_images if s}) if trained_images is not None else None}
    write_private_text(out.with_suffix(".json"), json.dumps(meta, indent=2))
    return out


def db_config(meta: dict) -> dict:
    """A model's JSON as the database keeps it: without the list of trained images (thousands of sha256 for
    THINGS-EEG2), which stays in the JSON beside the weights."""
    return {k: v for k, v in meta.items() if k != "trained_images"}


def write_weights(model, out: Path) -> None:
    """A network's weights as safetensors, the file 0600 before its first byte (a classifier's or the encoder's)."""
    from safetensors.torch import save_file

    from .._files import private_file

    private_file(out, create=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out))
    private_file(out)


def model_path(db, subject: str, prefix: str) -> Path:
    """``models/sub-<subject>/<prefix>-<time>-<random>.safetensors``: unique even for two trainings in the same
    second (or on two machines sharing a data folder)."""
    stamp = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    return db.data_dir / "models" / f"sub-{subject}" / f"{prefix}-{stamp}.safetensors"


class OnlineDecoder:
    """One epoch -> class probabilities, with the preprocessing the model was trained with.

    Works for every decoder eegloop trains: networks (safetensors weights) and scikit-learn/pyriemann
    pipelines (skops, loaded with only eegloop's own types trusted).
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        self.meta = read_model_meta(path)
        self.blend = None
        if self.meta.get("format") == "eegloop-adapted-1":  # a group model blended with the subject's own
            from .blend import BlendedOnline

            own = OnlineDecoder(path.parent / self.meta["own"], device) if self.meta.get("own") else None
            self.blend = BlendedOnline(path, self.meta, own, device)
            self.classes, self.class_names = list(self.meta["classes"]), dict(self.meta["classes"])
            self.channel_names, self.method = list(self.meta["channel_names"]), self.meta.get("method")
            self.pre = self.pipeline = self.model = self.bias = None
            self.device = device
            return
        self.pre = Preprocessor.from_dict(self.meta["preprocessing"])
        self.classes = list(self.meta["classes"])
        self.class_names = dict(self.meta["classes"])
        self.channel_names = list(self.meta["channel_names"])
        self.method = self.meta.get("method")
        bias = self.meta.get("calibration_bias")
        self.bias = np.asarray(bias, dtype=np.float64) if bias is not None else None
        self.device = device
        if self.meta["model"].get("kind") == "pipeline":
            from .pipelines import load_pipeline

            self.pipeline = load_pipeline(path)
            self.model = None
        else:
            import torch
            from safetensors.torch import load_file

            from .methods import build_model

            self.pipeline = None
            self.model = build_model(self.meta["model"])
            self.model.load_state_dict(load_file(str(path)))
            self.model.eval().to(device)
            torch.set_num_threads(1)  # one epoch at a time: threads cost more than they give

    def predict(self, epoch: Epoch | np.ndarray) -> dict:
        """Class id -> probability for one epoch (channels x times, same layout as training)."""
        data = epoch.data if isinstance(epoch, Epoch) else epoch
        check_epoch_length(self.meta, data)
        if self.blend is not None:
            return {c: float(v) for c, v in zip(self.classes, self.blend.predict(data))}
        x = self.pre(data)[None]
        if self.pipeline is not None:
            from .pipelines import predict_pipeline

            p = predict_pipeline(self.pipeline, x, len(self.classes))[0]
        else:
            import torch

            with torch.no_grad():
                p = torch.softmax(self.model(torch.as_tensor(x, device=self.device)), 1)[0].cpu().numpy()
            if self.bias is not None:
                from .fitting import apply_bias

                p = apply_bias(p[None], self.bias)[0]
        return {c: float(v) for c, v in zip(self.classes, p)}


def check_epoch_length(meta: dict, data) -> None:
    """An online epoch must be cut like the training epochs: a zero-phase filter given less signal after the window
    (``epochs.right_margin_s``), or a window shifted by another ``margin_s``, computes other numbers silently."""
    n = meta.get("n_times")
    got = np.shape(data)[-1]
    if n and got != n:
        raise EegloopError(f"an epoch of {got} samples; this model was trained on epochs of {n} (the protocol's "
                           "epochs section — tmin, tmax, margin_s, right_margin_s — differs from training): decode "
                           "with the training protocol's epochs, or train again")


def load_decoder(db, subject: str, device: str = "cpu") -> tuple[OnlineDecoder, int]:
    """The subject's latest model, ready for online decoding; returns (decoder, model id)."""
    rec = db.latest_model(subject)
    return OnlineDecoder(db.abspath(rec.checkpoint_path), device), rec.id
