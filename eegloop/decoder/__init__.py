"""The decoder: preprocessing, CLIP teacher, distilled residual CNN, honest evaluation.

Public API
----------
- :func:`quick_train` — train the subject's student on all its epochs (whole
  blocks held out for early stopping), save it, register it in the database.
- :func:`load_decoder` — an :class:`OnlineDecoder` that turns one epoch into
  class probabilities with exactly the training preprocessing.
- :func:`evaluate` (from :mod:`.evaluation`) — cross-validation by block/run.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .._logging import logger
from ..errors import EegloopError, ModelNotAvailableError
from ..protocol import Protocol, protocol_from_dict
from ..types import Epoch, EpochSet
from .evaluation import EvalReport, NoHonestFoldError, evaluate, inner_validation, scores
from .preprocessing import Preprocessor

__all__ = ["quick_train", "load_decoder", "OnlineDecoder", "TrainedModel", "evaluate", "EvalReport",
           "NoHonestFoldError", "Preprocessor", "fit_teacher", "subject_protocol", "save_model"]


@dataclass
class TrainedModel:
    model_id: Optional[int]
    path: Path
    metrics: dict
    seconds: float
    history: list


def subject_protocol(db, subject: str, session_ids: Sequence[int] | None = None) -> tuple[Protocol, list[int]]:
    """The protocol stored with the subject's latest (selected) session, and the session ids used."""
    import yaml

    sessions = db.list_sessions(subject)
    if session_ids:
        sessions = [s for s in sessions if s.id in set(session_ids)]
    if not sessions:
        raise EegloopError(f"subject {subject!r} has no sessions" + (f" among {list(session_ids)}" if session_ids else ""))
    return protocol_from_dict(yaml.safe_load(sessions[-1].protocol_yaml)), [s.id for s in sessions]


def fit_teacher(db, protocol: Protocol, es: EpochSet):
    """Fit the CLIP teacher on the session's stimulus images, or return None (with the reason logged)."""
    from .teacher import ClipTeacher

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


def save_model(model, pre: Preprocessor, classes: dict, channel_names: list, out: Path, metrics: dict) -> Path:
    """Weights as safetensors + a JSON with the architecture, preprocessing, classes and metrics."""
    from safetensors.torch import save_file

    from .._files import private_dir, private_file, write_private_text

    private_dir(out.parent)  # models/ and models/sub-X/: 0700 when eegloop creates them
    private_file(out, create=True)  # 0600 before the first byte is written
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out))
    private_file(out)
    meta = {"model": model.get_config(), "preprocessing": pre.to_dict(), "classes": classes,
            "channel_names": list(channel_names), "metrics": metrics, "format": "eegloop-model-1"}
    write_private_text(out.with_suffix(".json"), json.dumps(meta, indent=2))
    return out


def quick_train(db, subject: str, session_ids: Sequence[int] | None = None, protocol: Protocol | None = None,
                progress: bool | Callable = True, use_teacher: bool = True) -> TrainedModel:
    """Train the subject's decoder on all its epochs and register it.

    Whole blocks (``training.split``) are held out for early stopping; the
    held-out metrics are stored with the model, beside chance level.
    """
    from .evaluation import chance_levels
    from .models import ResidualCNN
    from .training import fit, predict_proba

    t0 = time.perf_counter()
    proto_db, sids = subject_protocol(db, subject, session_ids)
    protocol = protocol or proto_db
    es = db.load_epochs(subject, sids)
    if len(es.classes) < 2:
        raise EegloopError(f"subject {subject!r}: epochs of only one class ({list(es.classes)}); nothing to train")
    pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
    X = pre(es.data)
    y = es.y
    teacher = None
    if use_teacher:
        try:
            teacher = fit_teacher(db, protocol, es)
        except ModelNotAvailableError as exc:
            logger.warning("%s — training without distillation", exc)
    tl = None
    if teacher is not None:
        tl = teacher.logits_for(list(es.images))
        if tl is not None:
            tl = tl[:, [teacher.classes.index(c) for c in es.class_ids]]
    tr, va = inner_validation(es, np.arange(len(es)), protocol.training.split, protocol.training.seed)
    model = ResidualCNN(X.shape[1], len(es.classes), X.shape[2], X.shape[3])
    res = fit(model, X[tr], y[tr], protocol.training, X[va], y[va], teacher_logits=tl[tr] if tl is not None else None,
              progress=progress)
    p = predict_proba(res.model, X[va], res.device)
    held = scores(y[va], p)
    ch = chance_levels(es.subset(va))
    metrics = {"heldout": held, **ch, "split": protocol.training.split, "n_train": int(len(tr)),
               "n_heldout": int(len(va)), "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
               "alpha": res.alpha, "teacher_top1": teacher.accuracy if teacher else None,
               "seconds": round(time.perf_counter() - t0, 2), "device": res.device, "threads": res.threads,
               "precision": res.precision,
               "history": res.history}
    # unique even for two trainings in the same second (or on two machines sharing a data folder)
    stamp = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    path = db.data_dir / "models" / f"sub-{subject}" / f"model-{stamp}.safetensors"
    save_model(res.model, pre, dict(es.classes), es.channel_names, path, metrics)
    mid = db.add_model(subject, sids, path, config=json.loads(path.with_suffix(".json").read_text()),
                       metrics={k: v for k, v in metrics.items() if k != "history"}, kind="kd_stft" if tl is not None else "cnn_stft")
    logger.info("model %d saved to %s", mid, path)
    return TrainedModel(mid, path, metrics, time.perf_counter() - t0, res.history)


class OnlineDecoder:
    """One epoch -> class probabilities, with the preprocessing the model was trained with."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        import torch
        from safetensors.torch import load_file

        from .models import build_model

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise EegloopError(f"model file {path} (or its .json) not found")
        self.meta = json.loads(meta_path.read_text())
        self.pre = Preprocessor.from_dict(self.meta["preprocessing"])
        self.classes = list(self.meta["classes"])
        self.class_names = dict(self.meta["classes"])
        self.channel_names = list(self.meta["channel_names"])
        self.model = build_model(self.meta["model"])
        self.model.load_state_dict(load_file(str(path)))
        self.model.eval().to(device)
        self.device = device
        torch.set_num_threads(1)  # one epoch at a time: threads cost more than they give

    def predict(self, epoch: Epoch | np.ndarray) -> dict:
        """Class id -> probability for one epoch (channels x times, same layout as training)."""
        import torch

        data = epoch.data if isinstance(epoch, Epoch) else epoch
        x = self.pre(data)[None]
        with torch.no_grad():
            p = torch.softmax(self.model(torch.as_tensor(x, device=self.device)), 1)[0].cpu().numpy()
        return {c: float(v) for c, v in zip(self.classes, p)}


def load_decoder(db, subject: str, device: str = "cpu") -> tuple[OnlineDecoder, int]:
    """The subject's latest model, ready for online decoding; returns (decoder, model id)."""
    rec = db.latest_model(subject)
    return OnlineDecoder(db.abspath(rec.checkpoint_path), device), rec.id
