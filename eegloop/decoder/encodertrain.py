"""Training the subject's EEG -> CLIP-embedding encoder (:mod:`.encoder`) on all its epochs, saving and
registering it; loading the latest one for online use.

The training epochs are the student's (:func:`~.trainingset.load_training_epochs`), those of a known stimulus
image only: the targets are the images' CLIP embeddings (:func:`stimulus_embeddings_for`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..protocol import Protocol
from ..types import EpochSet
from .modelio import TrainedModel, db_config, model_path, write_weights
from .preprocessing import Preprocessor
from .rejection import reject_artifacts
from .trainingset import load_training_epochs

__all__ = ["train_encoder", "load_encoder", "stimulus_embeddings_for"]


def stimulus_embeddings_for(db, protocol: Protocol, shas) -> tuple[dict, str, Optional[str]]:
    """CLIP embeddings {sha256: vector} of these stimulus images, with the teacher's model; returns them with the
    model name and tag. Raises :class:`EegloopError` naming what is missing."""
    from ..embeddings import image_embeddings

    by_sha = {r.sha256: r for r in db.get_stimuli()}
    want = sorted(set(s for s in shas if s))
    missing = [s for s in want if s not in by_sha or not Path(by_sha[s].path).is_file()]
    if not want:
        raise EegloopError("no epoch has a known stimulus image: the encoder's targets are the images' CLIP "
                           "embeddings (imported data: import with --images DIR)")
    if missing:
        r = by_sha.get(missing[0])
        raise EegloopError(f"{len(missing)} of {len(want)} stimulus images are missing (first: "
                           f"{r.path if r else missing[0][:16]}); the encoder needs every image's CLIP embedding")
    model, pre = protocol.teacher.model, protocol.teacher.pretrained
    z = image_embeddings([(by_sha[s].path, s) for s in want], model, pre, cache_dir=db.data_dir / "cache" / "clip")
    return z, model, pre


def train_encoder(db, subject: str, session_ids: Sequence[int] | None = None, protocol: Protocol | None = None,
                  progress: Optional[Callable[[dict], None]] = None,
                  exclude_images: Iterable[str] = ()) -> TrainedModel:
    """Train the subject's EEG -> CLIP-embedding encoder (:mod:`.encoder`) on all its epochs and register it.

    Whole blocks (about 15 %) are held out for early stopping where there are three or more; their k-way
    identification among their own images is stored as the model's ``val_top1`` beside chance (optimistic
    for zero-shot: those images' classes were trained on; ``eegloop evaluate --zero-shot`` is the honest
    number). ``exclude_images`` (the feedback cues, passed by the visit) are kept out as in
    :func:`~.quicktrain.quick_train`. Time: ``encoder.budget_s``.
    """
    from .encoder import EEGEncoder, ENCODER_REPRESENTATION, center_targets, fit_encoder, image_mean

    t0 = time.perf_counter()
    data = load_training_epochs(db, subject, session_ids, protocol, exclude_images, need_images=True)
    es, protocol = data.es, data.protocol
    if len(es) < 8:
        raise EegloopError(f"subject {subject!r}: {len(es)} epochs with known stimulus images; the encoder needs more")
    rejection = reject_artifacts(es, protocol)
    es = es.subset(rejection.kept)
    if len(es) < 8:
        raise EegloopError(f"subject {subject!r}: {len(es)} epochs left after artifact rejection "
                           f"({rejection.describe()}); the encoder needs more")
    Z, clip_model, clip_pre = stimulus_embeddings_for(db, protocol, es.images)
    center = image_mean(Z, es.images)
    T = center_targets(np.stack([Z[s] for s in es.images]), center)
    pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
    pre = pre.with_representation(ENCODER_REPRESENTATION)
    X = pre(es.data)
    va = _validation_blocks(es, protocol)
    budget = protocol.encoder.budget_s
    left = max(budget - (time.perf_counter() - t0), 0.1 * budget) if budget else 0
    fit = fit_encoder(X[~va], T[~va], protocol.encoder, es.sfreq / pre.series_factor, X[va] if va.any() else None,
                      T[va] if va.any() else None, seed=protocol.training.seed, max_seconds=left, progress=progress,
                      after_passes=2)  # the held-out identification below and saving
    val = _heldout_identification(fit.model, X, es, va, Z, center, protocol.training.seed) if va.any() else {}
    metrics = {"method": EEGEncoder.kind, **val, "epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch,
               "stopped": fit.stopped, "budget_s": budget or None, "lr_decay_from_epoch": fit.decay_from_epoch,
               "n_train": int((~va).sum()),
               "n_heldout": int(va.sum()), "feedback_cues_held_out": data.n_excluded,
               "temperature": round(1 / fit.logit_scale, 4), "clip_model": clip_model,
               "seconds": round(time.perf_counter() - t0, 2), "threads": fit.threads, "history": fit.history}
    path, mid = _save_and_register(db, subject, data.session_ids, es, fit.model, pre, clip_model, clip_pre, center,
                                   metrics)
    logger.info("encoder %d saved to %s (%s)", mid, path,
                f"held-out blocks {val['val_k']}-way top-1 {val['val_top1']:.3f}, chance {val['chance_top1']:.3f}"
                if val else "no held-out blocks")
    return TrainedModel(mid, path, metrics, time.perf_counter() - t0, fit.history)


def _validation_blocks(es: EpochSet, protocol: Protocol) -> np.ndarray:
    """Epochs held out for early stopping: whole groups (about 15 %) where there are three or more, else none."""
    groups = es.groups(protocol.training.split)
    ug = np.unique(groups)
    va = np.zeros(len(es), bool)
    if len(ug) >= 3:
        rng = np.random.default_rng(protocol.training.seed + 3)
        va = np.isin(groups, rng.permutation(ug)[:max(1, int(round(0.15 * len(ug))))])
    return va


def _heldout_identification(model, X: np.ndarray, es: EpochSet, va: np.ndarray, Z: dict, center, seed: int) -> dict:
    """k-way identification of the held-out blocks' images among themselves (optimistic for zero-shot)."""
    from .encoder import encode, similarity
    from .zeroshot import identification

    imgs = es.images[va]
    uniq = sorted(set(imgs.tolist()))
    if len(uniq) > 1000:  # identification among a fixed random 1000 of them (n^2 similarities)
        uniq = sorted(np.random.default_rng(seed).choice(uniq, 1000, replace=False).tolist())
    P = np.stack([encode(model, X[va][imgs == s].mean(0, keepdims=True))[0] for s in uniq])
    S = similarity(P, np.stack([Z[s] for s in uniq]), center)
    k = min(50, len(uniq))
    top1, top5 = identification(S, k)
    return {"val_k": k, "val_top1": round(top1, 4), "val_top5": round(top5, 4), "chance_top1": round(1 / k, 4),
            "chance_top5": round(min(5, k) / k, 4), "val_images": len(uniq),
            "note": "held-out whole blocks, images of trained classes: optimistic for zero-shot "
                    "(evaluate --zero-shot is the honest number)"}


def _save_and_register(db, subject: str, session_ids: list, es: EpochSet, model, pre: Preprocessor,
                       clip_model: str, clip_pre, center, metrics: dict):
    """The encoder's weights and JSON beside them, and its database row; returns (path, model id)."""
    from .._files import private_dir, write_private_text
    from .encoder import EEGEncoder

    path = model_path(db, subject, "encoder")
    private_dir(path.parent)
    write_weights(model, path)
    meta = {"model": model.get_config(), "preprocessing": pre.to_dict(), "channel_names": list(es.channel_names),
            "classes": dict(es.classes), "clip_model": clip_model, "clip_pretrained": clip_pre,
            "center": [float(v) for v in center], "metrics": metrics, "format": "eegloop-encoder-1",
            "n_times": int(es.data.shape[-1]), "trained_images": sorted(set(es.images.tolist()))}
    write_private_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    mid = db.add_model(subject, session_ids, path, config=db_config(meta),
                       metrics={k: v for k, v in metrics.items() if k != "history"}, kind=EEGEncoder.kind)
    return path, mid


def load_encoder(db, subject: str, device: str = "cpu"):
    """The subject's latest EEG -> embedding encoder, ready for online use; returns (encoder, model id)."""
    from .encoder import OnlineEncoder

    rec = db.latest_model(subject, encoder=True)
    return OnlineEncoder(db.abspath(rec.checkpoint_path), device), rec.id
