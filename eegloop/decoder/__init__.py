"""The decoder: preprocessing, CLIP teacher, distilled residual CNN, honest evaluation.

Public API
----------
- :func:`quick_train` — train the subject's student on all its epochs (whole
  blocks held out for early stopping), save it, register it in the database.
- :func:`load_decoder` — an :class:`OnlineDecoder` that turns one epoch into
  class probabilities with exactly the training preprocessing.
- :func:`evaluate` (from :mod:`.evaluation`) — cross-validation by block/run.
- :func:`train_encoder` / :func:`load_encoder` — the EEG -> CLIP-embedding encoder (:mod:`.encoder`) for
  zero-shot retrieval (:func:`.zeroshot.zero_shot_evaluate`) and the retrieve/embedding feedback modes.
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
from ..types import FEEDBACK_BLOCK_BASE, Epoch, EpochSet
from .evaluation import EvalReport, NoHonestFoldError, evaluate
from .preprocessing import Preprocessor

__all__ = ["quick_train", "train_encoder", "load_encoder", "load_decoder", "OnlineDecoder", "TrainedModel", "evaluate", "EvalReport", "honest_estimate",
           "NoHonestFoldError", "Preprocessor", "fit_teacher", "subject_protocol", "save_model", "heldout_line"]


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
    from .evaluation import is_sklearn

    private_dir(out.parent)  # models/ and models/sub-X/: 0700 when eegloop creates them
    if method is not None and is_sklearn(method):
        from .pipelines import save_pipeline

        out = out.with_suffix(".skops")
        save_pipeline(model, out)
        config = {"kind": "pipeline", "name": method}
    else:
        _write_weights(model, out)
        config = model.get_config()
    meta = {"model": config, "method": method, "preprocessing": pre.to_dict(), "classes": classes,
            "channel_names": list(channel_names), "metrics": metrics,
            "calibration_bias": [float(v) for v in bias] if bias is not None else None, "format": "eegloop-model-2",
            "n_times": n_times,
            "trained_images": sorted({s for s in trained_images if s}) if trained_images is not None else None}
    write_private_text(out.with_suffix(".json"), json.dumps(meta, indent=2))
    return out


def _db_config(meta: dict) -> dict:
    """A model's JSON as the database keeps it: without the list of trained images (thousands of sha256 for
    THINGS-EEG2), which stays in the JSON beside the weights."""
    return {k: v for k, v in meta.items() if k != "trained_images"}


def _write_weights(model, out: Path) -> None:
    """A network's weights as safetensors, the file 0600 before its first byte (a classifier's or the encoder's)."""
    from safetensors.torch import save_file

    from .._files import private_file

    private_file(out, create=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out))
    private_file(out)


def _model_path(db, subject: str, prefix: str) -> Path:
    """``models/sub-<subject>/<prefix>-<time>-<random>.safetensors``: unique even for two trainings in the same
    second (or on two machines sharing a data folder)."""
    stamp = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    return db.data_dir / "models" / f"sub-{subject}" / f"{prefix}-{stamp}.safetensors"


def read_model_meta(path: Path, what: str = "model") -> dict:
    """The JSON beside a saved model's weights (``<path>.json``); one line when either file is missing."""
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise EegloopError(f"{what} file {path} (or its .json) not found")
    return json.loads(meta_path.read_text())


def quick_train(db, subject: str, session_ids: Sequence[int] | None = None, protocol: Protocol | None = None,
                progress: bool | Callable = True, use_teacher: bool = True, exclude_images=()) -> TrainedModel:
    """Train the subject's decoder on all its epochs and register it.

    Steps: artifact rejection (``epochs.reject_uv``/``flat_uv``, counts per class stored); with
    ``decoder.model: auto``, the candidates are compared on honest inner folds (:mod:`.selection`) and
    the winner is kept, else the pinned model is used; the model is fitted on every epoch, networks
    early-stopping on a split that keeps every class in the fit set (whole blocks where the design
    allows, else the last trials of each block, labelled optimistic). The honest estimate is
    ``evaluate``'s (whole blocks out); :func:`quick_train` stores the selection's inner-fold scores and
    the early-stopping score beside chance.

    Parameters
    ----------
    exclude_images : iterable of str
        sha256 of stimulus images kept out of training (the feedback cues, so that online accuracy is
        an honest estimate).
    """
    from .evaluation import (apply_bias, chance_levels, feature_key, features_for, fit_method, inner_validation,
                             is_sklearn, reject_artifacts, scores)
    from .selection import Selection, select_model

    t0 = time.perf_counter()
    proto_db, sids = subject_protocol(db, subject, session_ids)
    protocol = protocol or proto_db
    es = db.load_epochs(subject, sids)
    es = es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))  # recording blocks only, not feedback trials
    held_cues = set(exclude_images or ())
    if not held_cues and protocol.feedback.cue_share > 0 and any(es.images):
        held_cues = _feedback_cues(protocol)
    n_cues = 0
    if held_cues:
        keep = np.array([im not in held_cues for im in es.images])
        n_cues = int((~keep).sum())
        es = es.subset(np.flatnonzero(keep))
    if len(es.classes) < 2 or len(set(es.labels.tolist())) < 2:
        raise EegloopError(f"subject {subject!r}: epochs of only one class ({sorted(set(es.labels.tolist()))}); "
                           "nothing to train")
    rejection = reject_artifacts(es, protocol)
    if rejection.n_rejected:
        logger.info("%s", rejection.describe())
        es = es.subset(rejection.kept)
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
    pinned = protocol.decoder.model
    cands = list(protocol.decoder.candidates) if pinned == "auto" else [pinned]
    feats = features_for(es, protocol, cands + [f"kd_{protocol.preprocessing.representation}"])
    if pinned == "auto":
        sel = select_model(es, protocol, feats, teacher_logits=tl, seed=protocol.training.seed)
    else:
        sel = Selection(pinned, "", protocol.training.split, 0, {}, note="pinned by decoder.model")
    method = sel.winner
    split = inner_validation(es, np.arange(len(es)), protocol.training.split, protocol.training.seed)
    tr, va = split
    X = feats[feature_key(method)]
    if is_sklearn(method):  # no early stopping: score the held-out part with a fit without it, then refit on all
        probe = fit_method(method, es, feats, tr, tr, protocol)
        held = scores(es.y[va], probe.predict(X[va], len(es.classes)))
        every = np.arange(len(es))
        fitted = fit_method(method, es, feats, every, every, protocol)
    else:
        budget = protocol.training.budget_s
        left = None
        if budget > 0:  # what the selection, teacher and features left of the budget (never under a tenth of it)
            left = max(budget - (time.perf_counter() - t0), 0.1 * budget)
        fitted = fit_method(method, es, feats, tr, va, protocol, tl, progress=progress, seed=protocol.training.seed,
                            max_seconds=left, after_passes=3)  # the bias calibration, saving, the database
        # the held-out part's probabilities were computed for the bias calibration: not a second pass
        held = scores(es.y[va], apply_bias(fitted.val_proba, fitted.bias) if fitted.val_proba is not None
                      else fitted.predict(X[va], len(es.classes)))
    ch = chance_levels(es, va)
    info = fitted.info
    because = (([f"it shares its {protocol.training.split}s with training"] if split.optimistic else [])
               + heldout_tuning(method, pinned, is_sklearn(method)))
    optimistic = bool(because)
    why = "; ".join(because)
    metrics = {"method": method, "heldout": held, **ch, "split": protocol.training.split,
               "heldout_optimistic": optimistic,
               "early_stopping": {"how": split.how, "optimistic": optimistic, "optimistic_because": because,
                                  "note": (f"optimistic, not an honest estimate ({why}): the honest one is "
                                           "evaluate's (whole blocks out)") if optimistic
                                  else "held-out whole groups, used for nothing else"},
               "selection": sel.to_json(), "rejection": rejection.to_json(), "feedback_cues_held_out": n_cues,
               "n_train": int(len(tr)), "n_heldout": int(len(va)),
               "epochs_run": info.get("epochs_run"), "best_epoch": info.get("best_epoch"),
               "stopped": info.get("stopped"), "budget_s": protocol.training.budget_s or None,
               "lr_schedule": info.get("lr_schedule"), "alpha": info.get("alpha"), "teacher_top1": teacher.accuracy if teacher else None,
               "seconds": round(time.perf_counter() - t0, 2), "device": info.get("device", "cpu"),
               "threads": info.get("threads"), "precision": info.get("precision", "fp64"),
               "history": fitted.history}
    pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
    pre = pre.with_representation(feature_key(method))  # what the chosen method was fitted on
    metrics["n_trained_images"] = len({s for s in es.images if s})
    path = save_model(fitted.model, pre, dict(es.classes), es.channel_names, _model_path(db, subject, "model"),
                      metrics, fitted.bias, method, n_times=int(es.data.shape[-1]),
                      trained_images=list(es.images))  # every epoch's image, the early-stopping set's included
    kind = method if (tl is not None or not method.startswith("kd_")) else method.replace("kd_", "cnn_", 1)
    mid = db.add_model(subject, sids, path, config=_db_config(read_model_meta(path)),
                       metrics={k: v for k, v in metrics.items() if k != "history"}, kind=kind)
    logger.info("model %d (%s) saved to %s", mid, method, path)
    return TrainedModel(mid, path, metrics, time.perf_counter() - t0, fitted.history)


def heldout_line(m: dict) -> str:
    """A quick-trained model's held-out score in one line: its set, chance beside, and whether it is optimistic
    (the set it was tuned on: best epoch, calibration, auto's choice) with why."""
    held = m["heldout"]
    es = m.get("early_stopping") or {}
    extra = f", auc {held['auc']:.3f} (chance 0.500)" if "auc" in held else ""
    what = "early-stopping set" if m.get("epochs_run") is not None else "held-out set (then refitted on all)"
    optimistic = m.get("heldout_optimistic", True)  # a model saved before the flag: tuned on it, as networks are
    tuned = es.get("optimistic_because") or []
    return (f"{what}, {es.get('how', '?')} ({m.get('n_heldout')} epochs): top1 {held['top1']:.3f} "
            f"(chance {m['chance_top1']:.3f}){extra}"
            + ((" — OPTIMISTIC, not an honest estimate" + (f": {', '.join(tuned)}" if tuned else ""))
               if optimistic else " — held-out whole groups, used for nothing else"))


def heldout_tuning(method: str, pinned: str, pipeline: bool) -> list:
    """What quick-train tuned on its held-out (early-stopping) set, in words: a score there is optimistic when any.

    A network picks its best epoch and fits the bias calibration on that set; ``auto``'s inner folds compared the
    candidates on every epoch, that set's included. A pinned pipeline is scored by a fit that never saw it.
    """
    tuned = []
    if not pipeline:
        tuned += ["the best epoch was picked on it", "the bias calibration was fitted on it"]
    if pinned == "auto":
        tuned.append("auto's inner folds, which chose the decoder, included it")
    return tuned


class OnlineDecoder:
    """One epoch -> class probabilities, with the preprocessing the model was trained with.

    Works for every decoder eegloop trains: networks (safetensors weights) and scikit-learn/pyriemann
    pipelines (skops, loaded with only eegloop's own types trusted).
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        self.meta = read_model_meta(path)
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

            from .models import build_model

            self.pipeline = None
            self.model = build_model(self.meta["model"])
            self.model.load_state_dict(load_file(str(path)))
            self.model.eval().to(device)
            torch.set_num_threads(1)  # one epoch at a time: threads cost more than they give

    def predict(self, epoch: Epoch | np.ndarray) -> dict:
        """Class id -> probability for one epoch (channels x times, same layout as training)."""
        data = epoch.data if isinstance(epoch, Epoch) else epoch
        check_epoch_length(self.meta, data)
        x = self.pre(data)[None]
        if self.pipeline is not None:
            from .pipelines import predict_pipeline

            p = predict_pipeline(self.pipeline, x, len(self.classes))[0]
        else:
            import torch

            with torch.no_grad():
                p = torch.softmax(self.model(torch.as_tensor(x, device=self.device)), 1)[0].cpu().numpy()
            if self.bias is not None:
                from .evaluation import apply_bias

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
                  progress: Optional[Callable[[dict], None]] = None, exclude_images=()) -> TrainedModel:
    """Train the subject's EEG -> CLIP-embedding encoder (:mod:`.encoder`) on all its epochs and register it.

    Whole blocks (about 15 %) are held out for early stopping where there are three or more; their k-way
    identification among their own images is stored as the model's ``val_top1`` beside chance (optimistic
    for zero-shot: those images' classes were trained on; ``eegloop evaluate --zero-shot`` is the honest
    number). The feedback cues are kept out as in :func:`quick_train`. Time: ``encoder.budget_s``.
    """
    from .encoder import EEGEncoder, center_targets, encode, fit_encoder, image_mean, similarity, \
        ENCODER_REPRESENTATION
    from .evaluation import reject_artifacts
    from .zeroshot import identification

    t0 = time.perf_counter()
    proto_db, sids = subject_protocol(db, subject, session_ids)
    protocol = protocol or proto_db
    es = db.load_epochs(subject, sids)
    es = es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))
    held = set(exclude_images or ())
    if not held and protocol.feedback.cue_share > 0 and any(es.images):
        held = _feedback_cues(protocol)
    keep = np.array([bool(im) and im not in held for im in es.images])
    es = es.subset(np.flatnonzero(keep))
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
    groups = es.groups(protocol.training.split)
    ug = np.unique(groups)
    va = np.zeros(len(es), bool)
    if len(ug) >= 3:
        rng = np.random.default_rng(protocol.training.seed + 3)
        va = np.isin(groups, rng.permutation(ug)[:max(1, int(round(0.15 * len(ug))))])
    budget = protocol.encoder.budget_s
    left = max(budget - (time.perf_counter() - t0), 0.1 * budget) if budget else 0
    fit = fit_encoder(X[~va], T[~va], protocol.encoder, es.sfreq / pre.series_factor, X[va] if va.any() else None,
                      T[va] if va.any() else None, seed=protocol.training.seed, max_seconds=left, progress=progress,
                      after_passes=2)  # the held-out identification below and saving
    val = {}
    if va.any():
        imgs = es.images[va]
        uniq = sorted(set(imgs.tolist()))
        if len(uniq) > 1000:  # identification among a fixed random 1000 of them (n^2 similarities)
            uniq = sorted(np.random.default_rng(protocol.training.seed).choice(uniq, 1000, replace=False).tolist())
        P = np.stack([encode(fit.model, X[va][imgs == s].mean(0, keepdims=True))[0] for s in uniq])
        S = similarity(P, np.stack([Z[s] for s in uniq]), center)
        k = min(50, len(uniq))
        top1, top5 = identification(S, k)
        val = {"val_k": k, "val_top1": round(top1, 4), "val_top5": round(top5, 4), "chance_top1": round(1 / k, 4),
               "chance_top5": round(min(5, k) / k, 4), "val_images": len(uniq),
               "note": "held-out whole blocks, images of trained classes: optimistic for zero-shot "
                       "(evaluate --zero-shot is the honest number)"}
    metrics = {"method": EEGEncoder.kind, **val, "epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch,
               "stopped": fit.stopped, "budget_s": budget or None, "lr_decay_from_epoch": fit.decay_from_epoch,
               "n_train": int((~va).sum()),
               "n_heldout": int(va.sum()), "feedback_cues_held_out": int((~keep).sum()),
               "temperature": round(1 / fit.logit_scale, 4), "clip_model": clip_model,
               "seconds": round(time.perf_counter() - t0, 2), "threads": fit.threads, "history": fit.history}
    from .._files import private_dir, write_private_text

    path = _model_path(db, subject, "encoder")
    private_dir(path.parent)
    _write_weights(fit.model, path)
    meta = {"model": fit.model.get_config(), "preprocessing": pre.to_dict(), "channel_names": list(es.channel_names),
            "classes": dict(es.classes), "clip_model": clip_model, "clip_pretrained": clip_pre,
            "center": [float(v) for v in center], "metrics": metrics, "format": "eegloop-encoder-1",
            "n_times": int(es.data.shape[-1]), "trained_images": sorted(set(es.images.tolist()))}
    write_private_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    mid = db.add_model(subject, sids, path, config=_db_config(meta), metrics={k: v for k, v in metrics.items() if k != "history"},
                       kind=EEGEncoder.kind)
    logger.info("encoder %d saved to %s (%s)", mid, path,
                f"held-out blocks {val['val_k']}-way top-1 {val['val_top1']:.3f}, chance {val['chance_top1']:.3f}"
                if val else "no held-out blocks")
    return TrainedModel(mid, path, metrics, time.perf_counter() - t0, fit.history)


def load_encoder(db, subject: str, device: str = "cpu"):
    """The subject's latest EEG -> embedding encoder, ready for online use; returns (encoder, model id)."""
    from .encoder import OnlineEncoder

    rec = db.latest_model(subject, encoder=True)
    return OnlineEncoder(db.abspath(rec.checkpoint_path), device), rec.id


def honest_estimate(db, subject: str, method: str | None = None) -> str | None:
    """One line with the subject's latest cross-validated score (whole blocks out), or None if there is none.

    Looks at the evaluations ``eegloop evaluate`` wrote (``reports/evaluation-<subject>-*.json``) and the one a
    visit stored with its session; ``auto`` (what quick-train runs) is preferred, else ``method``.
    """
    found = []
    for f in (db.data_dir / "reports").glob(f"evaluation-{subject}-*.json"):
        try:
            found.append((f.stat().st_mtime, json.loads(f.read_text())))
        except (OSError, ValueError):
            continue
    for s in db.list_sessions(subject):
        ev = (s.info or {}).get("evaluation")
        if isinstance(ev, dict) and "summary" in ev:
            found.append((s.started_at.timestamp(), ev))
    for _, ev in sorted(found, key=lambda t: -t[0]):
        if ev.get("inflated") or ev.get("shuffled_labels"):
            continue
        summ = ev.get("summary") or {}
        for m in ("auto", method):
            if m and m in summ:
                s = summ[m]
                key = "auc" if "auc" in s else "balanced_accuracy" if "balanced_accuracy" in s else "top1"
                chance = {"auc": 0.5}.get(key, (ev.get("chance") or {}).get(f"chance_{key}", ev.get("chance_top1")))
                return (f"honest estimate ({m}, {ev.get('split')}-wise folds, evaluate): {key} {s[key]:.3f}"
                        + (f" (chance {chance:.3f})" if chance is not None else ""))
    return None


def _feedback_cues(protocol: Protocol) -> set:
    """sha256 of the images the feedback block will use as cues (``feedback.cue_share``): kept out of training."""
    from ..stimuli import cue_images, load_stimuli

    try:
        stimuli = load_stimuli(protocol, check_design=False)
    except (EegloopError, OSError) as exc:  # imported data without the image folder: nothing to hold out
        logger.info("feedback cues not held out: %s", exc)
        return set()
    return {s.sha256 for imgs in cue_images(stimuli, protocol.feedback.cue_share).values() for s in imgs}
