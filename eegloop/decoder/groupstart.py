"""Quick-train from a group model (``decoder.group_model: G``): the subject's decoder starts from what the lab
learned from its previous subjects.

Two ways, by ``decoder.group_weight``:

- **a blend** (null: the weight chosen; a number in [0, 1): fixed). The subject's own model is trained as without
  a group model (``auto`` compares its candidates); then the group's weight ``w`` in ``p = w p_group + (1 - w)
  p_own`` is chosen among :data:`~.adapt.WEIGHTS` on inner block/run-wise folds of the subject's epochs
  (:func:`~.adapt.choose_weight`), ``p_group`` from the group model aligned on the subject or, where it keeps a
  prior, tuned to their labelled epochs (:meth:`~.groupdecoder.GroupDecoder.tuned`; saved beside the blend),
  whichever the folds prefer (a fixed weight: the tuned model where there is a prior): ``w = 0`` is the
  from-scratch model, so the better of the group-based and the from-scratch decoder is kept on the same folds.
- **zero calibration** (``1``): the group model alone, aligned on the subject's epochs; their labels are not used
  to train anything, so scoring it on them is an honest held-out estimate (a subject the model never saw).

Either way the subject's alignment (:meth:`~.groupdecoder.GroupDecoder.reference`, computed on all their training
epochs, labels unused) is frozen in the saved model, so that feedback decodes each new epoch on its own.
"""
from __future__ import annotations

import time

from .._logging import logger
from ..errors import EegloopError
from ..protocol import Protocol
from ..types import EpochSet
from .adapt import choose_weight, save_adapted, tuned_side
from .modelio import TrainedModel, db_config, model_path, read_model_meta
from .scoring import chance_levels, scores

__all__ = ["group_for", "check_group_start", "check_not_trained_on", "check_group_classes", "blend_with_group",
           "zero_calibration", "group_line", "group_estimate_note", "warn_withdrawn", "score_text"]


def group_for(db, protocol: Protocol, warn: bool = True):
    """``decoder.group_model``'s decoder and its file, or None when the protocol names none (one line for an
    unknown name); with ``warn``, one warning line if a member has withdrawn group consent since
    (:func:`warn_withdrawn`)."""
    name = protocol.decoder.group_model
    if not name:
        return None
    from .groupdecoder import GroupDecoder

    if not db.group_model_exists(name):
        raise EegloopError(f"decoder.group_model: no group model named {name!r} (list them: eegloop pretrain --list)")
    rec = db.get_group_model(name)
    if warn:
        warn_withdrawn(db, rec)
    path = db.abspath(rec.checkpoint_path)
    return GroupDecoder(path), path


_WARNED: set = set()


def warn_withdrawn(db, rec) -> list[str]:
    """The members of group model ``rec`` who have withdrawn their group consent since it was trained, said in one
    warning line (the model still holds their data until deleted); returns their codes."""
    gone = [m.code for m in rec.members if not db.subject_consent(m.code).group]
    key = (str(getattr(db, "data_dir", "")), rec.id, tuple(gone))
    if gone and key not in _WARNED:  # once per process and database: a visit checks, then trains
        _WARNED.add(key)
        logger.warning("group model %r holds the data of %s, who withdrew group consent: delete it "
                       "(eegloop subject group-models %s --delete) and pretrain one without them",
                       rec.name, ", ".join(gone), gone[0])
    return gone


def check_not_trained_on(db, protocol: Protocol, subject: str, session_ids,
                         option: str = "decoder.group_model") -> None:
    """Before any fit: ``decoder.group_model`` never saw the epochs the subject's decoder trains on (one line
    otherwise). The blend's weight is chosen and scored on those epochs, and zero calibration scores the group
    model on them: a group model trained on them would make both scores its own training fit's."""
    name = protocol.decoder.group_model
    if not name or not db.group_model_exists(name):
        return
    member = next((m for m in db.get_group_model(name).members if m.code == subject), None)
    shared = sorted(set(member.session_ids) & {int(i) for i in session_ids}) if member else []
    if shared:
        ids = ", ".join(str(i) for i in shared)
        raise EegloopError(f"{option}: {name!r} was trained on {subject}'s session{'s' * (len(shared) > 1)} {ids},"
                           f" which this decoder trains on: its weight and scores would not be honest (pretrain one "
                           f"without them: eegloop pretrain --all --exclude {subject} ...; or train on other "
                           "sessions: --sessions)")


def check_group_classes(db, name: str | None, have, option: str, whose: str) -> None:
    """One line (naming ``option``) unless every class in ``have`` is one group model ``name`` decodes: a group
    model of other classes (a face/house model for a target/non-target subject) would blend or score probabilities
    of classes the subject never saw. ``whose``: what ``have`` is, in words ("p300s3's epochs")."""
    if not name or not db.group_model_exists(name):
        return
    classes = list((db.get_group_model(name).config or {}).get("classes") or [])
    other = sorted(set(have) - set(classes))
    if classes and other:
        raise EegloopError(f"{option}: group model {name!r} decodes {', '.join(classes)}, not {', '.join(other)} "
                           f"({whose}: {', '.join(sorted(set(have)))}); pretrain one on subjects of those classes")


def _group_json(group, weight: float, how: str, reference, tuned=None) -> dict:
    return {"name": group.name, "method": group.method, "alignment": group.alignment, "weight": float(weight),
            "how": how, "n_reference_epochs": int(reference.n_epochs),
            "tuned_on": None if tuned is None else tuned.n_epochs}


def blend_with_group(db, subject: str, session_ids, es: EpochSet, protocol: Protocol, found, own_path,
                     own_method: str, metrics: dict, t0: float, register_own=None) -> TrainedModel:
    """The subject's own model (already saved at ``own_path``) blended with the group model ``found``
    (:func:`group_for`); registered as the subject's latest model. At weight 0 (chosen or fixed) the own model
    itself is registered through ``register_own(metrics)`` (the group's choice in its metrics): a model that
    does not use the group model must not depend on its file (a member's withdrawal would list it)."""
    group, gpath = found
    fixed = protocol.decoder.group_weight
    if fixed is None:
        weight, how, use_tuned = choose_weight(group, es, protocol, own_method, list(es.class_ids),
                                               protocol.training.seed)
    else:  # a fixed weight: the tuned group model where it can be had
        weight, how, use_tuned = float(fixed), "fixed (--group-weight or decoder.group_weight), not chosen", True
    if weight == 0 and register_own is not None:
        reference = group.reference(es)
        metrics = dict(metrics, group=_group_json(group, 0.0, how, reference),
                       seconds=round(time.perf_counter() - t0, 2),
                       heldout_of="the subject's own model alone, before the group model was weighed")
        logger.info("group model %s weighed 0: the subject's own model is saved (%s)", group.name, how)
        return register_own(metrics)
    # the group's prior fitted to all the subject's epochs, when the blend's group side is the tuned model
    tuned, note = tuned_side(group, es, weight > 0 and use_tuned)
    how += note
    reference = group.reference(es)
    metrics = dict(metrics, group=_group_json(group, weight, how, reference, tuned),
                   seconds=round(time.perf_counter() - t0, 2),
                   heldout_of="the subject's own model alone, before the group model was weighed")
    logger.info("blended with group model %s: %s", group.name, how)
    return _save(db, subject, session_ids, es, group, gpath, weight, how, reference, own_path, metrics, t0, tuned)


def zero_calibration(db, subject: str, session_ids, es: EpochSet, protocol: Protocol, found, rejection,
                     n_cues: int, t0: float) -> TrainedModel:
    """The group model alone, aligned on the subject's epochs (labels unused), scored on all of them: the
    honest estimate of a model that never saw the subject."""
    group, gpath = found
    reference = group.reference(es)
    how = "zero calibration (decoder.group_weight 1): the group model alone, the subject's labels unused"
    from .adapt import Adapted

    proba = Adapted(list(es.class_ids), 1.0, None, 0, how, group).group_proba(es)
    held = scores(es.y, proba) if len(set(es.y.tolist())) > 1 else {}
    whole = "the subject's whole recording (aligned on it; its labels used only to score)"
    seen = ([m.session_ids for m in db.get_group_model(group.name).members if m.code == subject]
            if db.group_model_exists(group.name) else [])
    never = ("a subject the group model never saw: an honest estimate" if not seen else
             f"the group model saw other sessions of this subject ({', '.join(map(str, seen[0]))}), not these "
             "epochs: a cross-session estimate, not a new subject's")
    metrics = {"method": f"group:{group.name}", "heldout": held, **chance_levels(es), "split": "subject",
               "heldout_optimistic": False,
               "early_stopping": {"how": whole, "optimistic": False, "optimistic_because": [],
                                  "note": never},
               "selection": {"winner": f"group:{group.name}", "metric": "", "split": "subject", "n_folds": 0,
                             "candidates": {}, "note": how, "seconds": 0.0},
               "rejection": rejection.to_json(), "feedback_cues_held_out": n_cues, "n_train": 0,
               "n_heldout": int(len(es)), "group": _group_json(group, 1.0, how, reference), "zero_calibration": True,
               "seconds": round(time.perf_counter() - t0, 2), "device": "cpu", "history": []}
    if held:
        logger.info("zero calibration from group model %s: %s", group.name,
                    ", ".join(f"{k} {v:.3f}" for k, v in held.items() if k in ("top1", "auc")))
    return _save(db, subject, session_ids, es, group, gpath, 1.0, how, reference, None, metrics, t0)


def _save(db, subject, session_ids, es, group, gpath, weight, how, reference, own_path, metrics, t0,
          tuned=None) -> TrainedModel:
    out = model_path(db, subject, "adapted")
    trained = own_path is not None or tuned is not None
    metrics["n_trained_images"] = len({s for s in es.images if s}) if trained else 0
    path = save_adapted(out, gpath, group, weight, how, reference, es, own_path, metrics,
                        trained_images=list(es.images) if trained else [], tuned=tuned)
    mid = db.add_model(subject, list(session_ids), path, config=db_config(read_model_meta(path)),
                       metrics={k: v for k, v in metrics.items() if k != "history"}, kind="group_adapted")
    logger.info("model %d (%s, group %s weight %g) saved to %s", mid, metrics.get("method"), group.name, weight, path)
    return TrainedModel(mid, path, metrics, time.perf_counter() - t0, metrics.get("history") or [])


def group_line(metrics: dict) -> str | None:
    """One line on the group model a subject's model starts from (its ``metrics["group"]``), or None."""
    g = metrics.get("group")
    if not g:
        return None
    tuned = f", tuned on {g['tuned_on']} labelled epochs" if g.get("tuned_on") else ""
    return (f"started from group model {g['name']} ({g['method']}, aligned on {g['n_reference_epochs']} of the "
            f"subject's epochs{tuned}): weight {g['weight']:g}, {g['how']}")


def group_estimate_note(metrics: dict, subject: str, blend: dict | None = None, pending: bool = False) -> str | None:
    """Where a decoder that uses a group model (weight > 0) gets its honest estimate, in one sentence, or None.

    ``blend``: the visit's cross-validation of that decoder (:func:`~.calibration.blend_cross_validation`), whose score it
    gives; ``pending``: that cross-validation is still to come (after the feedback block). Neither: the visit's
    cross-validation scored the subject's own decoder alone, and the calibration curve is named."""
    g = metrics.get("group") or {}
    if not g or not g.get("weight"):
        return None
    head = f"The decoder the feedback used is group model {g.get('name')} at weight {g['weight']:g}"
    if blend and "error" not in blend:
        b, unit = blend, blend["split"]
        return (f"{head}; its honest estimate, the same procedure refitted on each of {b['n_folds']} {unit}-wise "
                f"folds (whole {unit}s out; the subject's own default, the group's weight and side chosen again on "
                f"each fold's training {unit}s): {b['metric']} {score_text(b['with_group'], b['spread_with'])}, the "
                f"subject's own default alone on the same folds {score_text(b['without_group'], b['spread_without'])} "
                f"(chance {b['chance']:.3f}).")
    if pending:
        return (f"{head}; the cross-validation after the feedback block scores it, refitted on each fold's training "
                "blocks, beside the subject's own decoder alone.")
    return (f"{head}; the cross-validation after the feedback block scores the subject's own decoder without it. "
            f"The group-based decoder's honest estimate: eegloop evaluate --calibration-curve --subject {subject} "
            f"--group-model {g.get('name')} (whole blocks or runs out, with and without the group model).")


def score_text(v, spread) -> str:
    """A score with its fold-to-fold spread, as the visit's line and the report give it ("0.612 ± 0.040"; "-")."""
    if v is None or v != v:
        return "-"
    return f"{v:.3f}" + (f" ± {spread:.3f}" if spread is not None and spread == spread else "")


def check_group_start(db, protocol: Protocol, warn: bool = True) -> None:
    """Before a visit starts: ``decoder.group_model`` exists and reads channels the amplifier records (one line
    otherwise; with ``warn``, one warning line for a member who withdrew consent)."""
    found = group_for(db, protocol, warn=warn)
    if found is None:
        return
    group = found[0]
    check_group_classes(db, group.name, protocol.stimuli.classes, "decoder.group_model", "the protocol's "
                        "stimuli.classes")  # none named (a sub-folder each): the quick-train checks the epochs
    have = list(protocol.amplifier.channel_names)
    missing = [c for c in group.grid.channel_names if have and c not in have]
    if missing:
        raise EegloopError(f"decoder.group_model: group model {group.name!r} reads channel(s) "
                           f"{', '.join(missing)}, which amplifier.channel_names lacks")
