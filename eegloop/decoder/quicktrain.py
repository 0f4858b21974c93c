"""Quick-train: the subject's student, trained on all its epochs in the visit's rest, saved and registered.

Steps (each its own function below): the training epochs (:mod:`.trainingset`), artifact rejection, the
teacher's soft targets, the choice of the method (``decoder.model: auto`` compares the candidates on honest
inner folds, :mod:`.selection`), the fit (networks early-stop on whole blocks where the design allows), the
metrics, saving (:mod:`.modelio`) and registering in the database.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from .._logging import logger
from ..errors import EegloopError, ModelNotAvailableError
from ..protocol import Protocol
from ..types import EpochSet
from .fitting import Fitted, apply_bias, features_for, fit_method
from .folds import InnerSplit, inner_validation
from .groupstart import blend_with_group, check_group_classes, check_not_trained_on, group_for, zero_calibration
from .methods import feature_key, is_sklearn, stored_kind, student
from .modelio import TrainedModel, db_config, model_path, read_model_meta, save_model
from .preprocessing import Preprocessor
from .rejection import Rejection, reject_artifacts
from .scoring import chance_levels, scores
from .selection import Selection, select_model
from .teacher import fit_teacher
from .trainingset import load_training_epochs

__all__ = ["quick_train", "heldout_line", "heldout_tuning", "honest_estimate"]


def quick_train(db, subject: str, session_ids: Sequence[int] | None = None, protocol: Protocol | None = None,
                progress: bool | Callable = True, use_teacher: bool = True,
                exclude_images: Iterable[str] = ()) -> TrainedModel:
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
        sha256 of stimulus images kept out of training: the feedback cues (``feedback.cue_share``), which the
        visit passes, so that online accuracy is an honest estimate. None are kept out by default.
    """
    t0 = time.perf_counter()
    data = load_training_epochs(db, subject, session_ids, protocol, exclude_images)
    es, protocol = data.es, data.protocol
    check_not_trained_on(db, protocol, subject, data.session_ids)
    check_group_classes(db, protocol.decoder.group_model, es.labels.tolist(), "decoder.group_model",
                        f"{subject}'s epochs")
    group = group_for(db, protocol)  # decoder.group_model: start from it (:mod:`.groupstart`)
    zero = group is not None and protocol.decoder.group_weight == 1.0
    if not zero and (len(es.classes) < 2 or len(set(es.labels.tolist())) < 2):
        raise EegloopError(f"subject {subject!r}: epochs of only one class ({sorted(set(es.labels.tolist()))}); "
                           "nothing to train")
    rejection = reject_artifacts(es, protocol)
    if rejection.n_rejected:
        logger.info("%s", rejection.describe())
        es = es.subset(rejection.kept)
    if zero:
        return zero_calibration(db, subject, data.session_ids, es, protocol, group, rejection, data.n_excluded, t0)
    teacher, tl = _soft_targets(db, protocol, es, use_teacher)
    sel, feats = _choose_method(es, protocol, tl)
    fitted, held, split = _fit_on_every_epoch(es, protocol, feats, sel.winner, tl, progress, t0)
    metrics = _metrics(es, protocol, sel, fitted, held, split, rejection, data.n_excluded, teacher, t0)
    path, mid = _save_and_register(db, subject, data.session_ids, es, protocol, fitted, metrics,
                                   distilled=tl is not None, register=group is None)
    if group is not None:
        def register_own(m: dict) -> TrainedModel:  # the group weighed 0: the own model is the decoder
            own = _register(db, subject, data.session_ids, path, m, stored_kind(fitted.method, tl is not None))
            return TrainedModel(own, path, m, time.perf_counter() - t0, fitted.history)

        return blend_with_group(db, subject, data.session_ids, es, protocol, group, path, sel.winner, metrics, t0,
                                register_own)
    return TrainedModel(mid, path, metrics, time.perf_counter() - t0, fitted.history)


def _soft_targets(db, protocol: Protocol, es: EpochSet, use_teacher: bool):
    """The CLIP teacher and its logits per epoch (columns in ``es``'s class order), or None where there are none."""
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
    return teacher, tl


def _choose_method(es: EpochSet, protocol: Protocol, tl) -> tuple[Selection, dict]:
    """The method to train (``auto``: the model selection's winner, else the pinned one) and the features."""
    pinned = protocol.decoder.model
    cands = list(protocol.decoder.candidates) if pinned == "auto" else [pinned]
    feats = features_for(es, protocol, cands + [student(protocol.preprocessing.representation)])
    if pinned == "auto":
        sel = select_model(es, protocol, feats, teacher_logits=tl, seed=protocol.training.seed)
    else:
        sel = Selection(pinned, "", protocol.training.split, 0, {}, note="pinned by decoder.model")
    return sel, feats


def _fit_on_every_epoch(es: EpochSet, protocol: Protocol, feats: dict, method: str, tl, progress,
                        t0: float) -> tuple[Fitted, dict, InnerSplit]:
    """Fit ``method`` on every epoch; returns the fit, its score on the held-out (early-stopping) part, the split."""
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
    return fitted, held, split


def _metrics(es: EpochSet, protocol: Protocol, sel: Selection, fitted: Fitted, held: dict, split: InnerSplit,
             rejection: Rejection, n_cues: int, teacher, t0: float) -> dict:
    """What the model's JSON and its database row say about its training."""
    method, pinned = sel.winner, protocol.decoder.model
    tr, va = split
    ch = chance_levels(es, va)
    info = fitted.info
    because = (([f"it shares its {protocol.training.split}s with training"] if split.optimistic else [])
               + heldout_tuning(method, pinned, is_sklearn(method)))
    optimistic = bool(because)
    why = "; ".join(because)
    return {"method": method, "heldout": held, **ch, "split": protocol.training.split,
            "heldout_optimistic": optimistic,
            "early_stopping": {"how": split.how, "optimistic": optimistic, "optimistic_because": because,
                               "note": (f"optimistic, not an honest estimate ({why}): the honest one is "
                                        "evaluate's (whole blocks out)") if optimistic
                               else "held-out whole groups, used for nothing else"},
            "selection": sel.to_json(), "rejection": rejection.to_json(), "feedback_cues_held_out": n_cues,
            "n_train": int(len(tr)), "n_heldout": int(len(va)),
            "epochs_run": info.get("epochs_run"), "best_epoch": info.get("best_epoch"),
            "stopped": info.get("stopped"), "budget_s": protocol.training.budget_s or None,
            "lr_schedule": info.get("lr_schedule"), "alpha": info.get("alpha"),
            "teacher_top1": teacher.accuracy if teacher else None,
            "seconds": round(time.perf_counter() - t0, 2), "device": info.get("device", "cpu"),
            "threads": info.get("threads"), "precision": info.get("precision", "fp64"),
            "history": fitted.history}


def _save_and_register(db, subject: str, session_ids: list, es: EpochSet, protocol: Protocol, fitted: Fitted,
                       metrics: dict, distilled: bool, register: bool = True):
    """Save the model beside its JSON and register it in the database (unless ``register`` is false: the blend
    with a group model is what is registered); returns (path, model id or None)."""
    method = fitted.method
    pre = Preprocessor.from_protocol(protocol.preprocessing, protocol.epochs, es.sfreq, es.tmin)
    pre = pre.with_representation(feature_key(method))  # what the chosen method was fitted on
    metrics["n_trained_images"] = len({s for s in es.images if s})
    path = save_model(fitted.model, pre, dict(es.classes), es.channel_names, model_path(db, subject, "model"),
                      metrics, fitted.bias, method, n_times=int(es.data.shape[-1]),
                      trained_images=list(es.images))  # every epoch's image, the early-stopping set's included
    if not register:
        return path, None
    return path, _register(db, subject, session_ids, path, metrics, stored_kind(method, distilled))


def _register(db, subject: str, session_ids: list, path, metrics: dict, kind: str) -> int:
    mid = db.add_model(subject, session_ids, path, config=db_config(read_model_meta(path)),
                       metrics={k: v for k, v in metrics.items() if k != "history"}, kind=kind)
    logger.info("model %d (%s) saved to %s", mid, metrics.get("method"), path)
    return mid


def heldout_line(m: dict) -> str:
    """A quick-trained model's held-out score in one line: its set, chance beside, and whether it is optimistic
    (the set it was tuned on: best epoch, calibration, auto's choice) with why."""
    held = m["heldout"]
    es = m.get("early_stopping") or {}
    extra = f", auc {held['auc']:.3f} (chance 0.500)" if "auc" in held else ""
    what = "early-stopping set" if m.get("epochs_run") is not None else "held-out set (then refitted on all)"
    optimistic = m.get("heldout_optimistic", True)  # a model saved before the flag: tuned on it, as networks are
    tuned = es.get("optimistic_because") or []
    g = m.get("group") or {}
    honest = " — held-out whole groups, used for nothing else"
    if m.get("zero_calibration"):  # the group model alone on a subject it never saw (or saw other sessions of)
        honest = f" — {es.get('note') or 'an honest estimate'}"
    elif g:  # a blend: this score is its own side's, before the group was weighed
        w = g.get("weight", 0)
        saved = ("the saved model is the own model itself (group weight 0)" if w == 0 else
                 f"the saved model is group model {g.get('name')} at weight {w:g}"
                 + (": the own model unused" if w == 1 else ""))
        scored = ("the blend itself not scored: its weight was fixed" if str(g.get("how", "")).startswith("fixed")
                  else "the blend's score is its inner folds'")
        what = f"the subject's own model alone ({saved}; {scored}), its {what}"
    return (f"{what}, {es.get('how', '?')} ({m.get('n_heldout')} epochs): top1 {held['top1']:.3f} "
            f"(chance {m['chance_top1']:.3f}){extra}"
            + ((" — OPTIMISTIC, not an honest estimate" + (f": {', '.join(tuned)}" if tuned else ""))
               if optimistic else honest))


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
