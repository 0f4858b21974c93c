"""Group models: one decoder trained on many subjects' epochs (one is enough), each subject aligned on its own data.

A subject's EEG enters a group model only when their record says they agreed (``eegloop subject consent S --group
yes``); :func:`plan_group` refuses the others by name before any work. :func:`pretrain` then

1. loads each subject's recording-block epochs (recorded or imported sessions, artifacts rejected with the
   subject's own protocol) and keeps the classes every subject has;
2. harmonises them (:func:`harmonise`): the channels matched by name against the reference protocol's montage
   (``amplifier.channel_names``; those every subject's sessions share), resampled to the lowest rate among the
   subjects (scipy's anti-aliased ``resample_poly``) and cut to the time window they all cover;
3. preprocesses them as the reference protocol says (the same :class:`~.preprocessing.Preprocessor` path as a
   subject's own decoder), then aligns each subject on its own data (:func:`align_subject`):

   - ``riemann`` (default; xDAWN covariances + tangent space + logistic regression, the strongest per-subject
     peer on the real recordings measured here): Riemannian re-centring (Zanini et al. 2018) with
     ``pyriemann.transfer.TLCenter``: each subject's signals whitened by the inverse square root of the
     Riemannian mean of its trial covariances, and its xDAWN covariances re-centred to the identity again after
     the group's xDAWN filters;
   - networks (``conv1d``, ``lstm`` from the registry): Euclidean alignment (He & Wu 2019), the same whitening
     with the arithmetic mean of the trial covariances (``TLCenter`` with the Euclidean metric).

   Alignment needs no labels, so a new subject is aligned on their own unlabelled epochs
   (:meth:`GroupDecoder.predict_proba`): the basis of zero calibration;
4. fits the model on the pooled epochs (a network through :func:`fit_group_network`, one function over arrays,
   seed and device, which a distributed wrapper can call per rank) and stores it like any model (a file in
   ``models/group-<name>/`` and a ``models`` row) with its provenance: subjects, sessions, epoch counts, the
   protocol's hash, the alignment and each subject's consent at training time.

Beside the model, a group model keeps a prior for *tuning* it to a new subject with a few minutes of their labelled
epochs (:class:`~.stlda.TemporalPrior`, :meth:`GroupDecoder.tuned`): the time courses of the members' class
differences and of their background, which do not depend on where a head's electrodes sit, and (up to 256
features: channels x 50 ms windows) the members' spatio-temporal covariance of the background pooled in one
reference head; the subject's own epochs then give the spatial part: where their response shows, and the mixing
through which their head sees the group's background (:mod:`.stlda`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..progress import Reporter, verbose
from ..protocol import Protocol, TrainingConfig
from ..protocol.schema import GROUP_NAME
from ..types import FEEDBACK_BLOCK_BASE, EpochSet
from .groupdecoder import GroupDecoder, load_group_model, predict_new_subject
from .harmonise import Grid, align_subject, common_grid, harmonise, preprocess_and_align, recentre

__all__ = ["GROUP_METHODS", "GroupPlan", "GroupModel", "GroupDecoder", "Grid", "plan_group", "pretrain",
           "harmonise", "common_grid", "align_subject", "recentre", "fit_group_network", "load_group_model",
           "predict_new_subject", "delete_group_models", "check_group_name", "fit_group_in_memory",
           "fit_group_from", "load_members"]

#: the methods a group model can be: the Riemannian pipeline (default) and the registry's networks that read the
#: time series (alignment whitens channels, which the time-frequency representations would not keep linear)
GROUP_METHODS = ("riemann", "conv1d", "lstm", "eegnet", "shallow_fbcsp")
ALIGNMENTS = {"riemann": "Riemannian re-centring per subject (pyriemann.transfer.TLCenter: signals whitened by the "
                         "inverse square root of the Riemannian mean of the subject's trial covariances, xDAWN "
                         "covariances re-centred to the identity)",
              "euclid": "Euclidean alignment per subject (He & Wu 2019: signals whitened by the inverse square "
                        "root of the arithmetic mean of the subject's trial covariances; pyriemann.transfer.TLCenter)",
              "none": "none (the subjects' epochs pooled as they are)"}


def check_group_name(name: str) -> str:
    """``name`` if it is a valid group model name (1-64 letters, digits, '-' and '_', starting with a letter or
    digit: it names a folder), else a one-line error naming ``--name``."""
    if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
        raise EegloopError(f"--name: a group model name is 1-64 letters, digits, '-' or '_' (starting with a letter "
                           f"or digit), got {name!r}")
    return name


# -- which subjects ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupPlan:
    """The subjects a group model will be trained on, and those left out (with ``--all``) and why.

    Attributes
    ----------
    subjects : list of str
        The consenting subjects whose epochs it uses.
    skipped : list of (str, str)
        (subject, why) for each subject ``--all`` left out: no group consent, no epochs.
    """

    subjects: list
    skipped: list = field(default_factory=list)

    def lines(self) -> list[str]:
        """What the CLI prints before training."""
        out = [f"using {len(self.subjects)} consenting subject(s): {', '.join(self.subjects)}"]
        no = [c for c, why in self.skipped if why == "no group consent"]
        if no:
            out.append(f"skipped for lack of group consent: {', '.join(no)}")
        excluded = [c for c, why in self.skipped if why == "--exclude"]
        if excluded:
            out.append(f"left out by --exclude: {', '.join(excluded)}")
        other = [f"{c} ({why})" for c, why in self.skipped if why not in ("no group consent", "--exclude")]
        if other:
            out.append(f"skipped: {', '.join(other)}")
        return out


def plan_group(db, subjects: Sequence[str] | None = None, all_subjects: bool = False, exclude: Sequence[str] = (),
               name: str | None = None, method: str = "riemann", protocol: Optional[Protocol] = None,
               same_classes: bool = True) -> GroupPlan:
    """Check a group model's request before any work; writes nothing.

    Parameters
    ----------
    subjects : list of str | None
        The subjects named (``--subjects``): every one of them must have group consent; those without are refused
        by name.
    all_subjects : bool
        Every subject with group consent (``--all``), less ``exclude``; the others are listed as skipped.
    name : str | None
        The group model's name: valid and not taken.
    protocol : Protocol | None
        The reference protocol (``--protocol``): the classes the subjects share must be among its
        ``stimuli.classes`` (read from the database's labels, no epoch loaded).
    same_classes : bool
        The subjects must share at least 2 classes (a group classifier); False for the zero-shot encoder, whose
        subjects may have seen other concepts.
    """
    if (subjects is None) == (not all_subjects):
        raise EegloopError("give either --subjects A,B,... or --all (not both)")
    if name is not None:
        check_group_name(name)
        if db.group_model_exists(name):
            raise EegloopError(f"--name: a group model named {name!r} already exists (choose another name, or "
                               "delete it first)")
        # its folder (models/group-<name>) would be the other's on a case-insensitive file system (macOS, Windows)
        twin = next((r.name for r in db.list_group_models() if r.name.casefold() == name.casefold()), None)
        if twin is not None:
            raise EegloopError(f"--name: {name!r} differs from the group model {twin!r} only in letter case (their "
                               "folders would be one on a case-insensitive file system): choose another name")
    if method not in GROUP_METHODS:
        raise EegloopError(f"--method: a group model is one of {', '.join(GROUP_METHODS)}, got {method!r}")
    consent = {c.code: c for c in db.subject_consents()}
    for code in list(subjects or ()) + list(exclude):
        if code not in consent:
            from ..database.subjects import unknown_subject

            raise EegloopError(unknown_subject(code))
    if subjects is not None:
        if exclude:
            raise EegloopError("--exclude: only with --all (leave the subject out of --subjects instead)")
        refused = [c for c in subjects if not consent[c].group]
        if refused:
            raise EegloopError(f"no group consent from {', '.join(refused)}: their EEG enters a group model only "
                               f"when they agreed (record it with: eegloop subject consent {refused[0]} --group "
                               "yes)")
        plan = GroupPlan(list(subjects))
        empty = [c for c in plan.subjects if not _has_epochs(db, c)]
        if empty:
            raise EegloopError(f"subject(s) without epochs: {', '.join(empty)} (record or import a session first)")
    else:
        used, skipped = [], []
        for code in sorted(consent):
            if code in exclude:
                skipped.append((code, "--exclude"))
            elif not consent[code].group:
                skipped.append((code, "no group consent"))
            elif not _has_epochs(db, code):
                skipped.append((code, "no epochs"))
            else:
                used.append(code)
        plan = GroupPlan(used, skipped)
    # one subject is enough: a lab's second subject can start from its first (a group of one: that subject's model,
    # aligned to the new one). The N170 recordings here have two subjects, so each is held out against the other
    if not plan.subjects:
        raise EegloopError("a group model needs at least 1 consenting subject with epochs, got 0")
    if same_classes:
        _check_classes(db, plan.subjects, protocol)
    return plan


def _check_classes(db, codes: Sequence[str], protocol: Optional[Protocol]) -> None:
    """Refuse before any epoch is loaded: subjects sharing fewer than 2 classes, or classes the protocol lacks."""
    present = {c: subject_labels(db, c) for c in codes}
    shared = set.intersection(*present.values())
    if len(shared) < 2:
        raise EegloopError(_too_few_shared(present))
    named = set(protocol.stimuli.classes) if protocol is not None else set()
    if named and not shared <= named:  # empty: every sub-folder, named after it
        raise EegloopError(_not_named(named, sorted(shared)))


def subject_labels(db, code: str, session_ids: Sequence[int] | None = None) -> set[str]:
    """The classes of a subject's training epochs (recording blocks of every session, or of ``session_ids``), from
    the database's labels (no epoch loaded)."""
    return db.epoch_labels(session_ids or [s.id for s in db.list_sessions(code)], FEEDBACK_BLOCK_BASE)


def _too_few_shared(present: dict) -> str:
    have = "; ".join(f"{code}: {', '.join(sorted(p))}" for code, p in present.items())
    return f"the subjects share fewer than 2 classes ({have}): nothing to train a group model on"


def _not_named(named: set, classes) -> str:
    return (f"--protocol: its stimuli.classes ({', '.join(sorted(named))}) are not the subjects' "
            f"({', '.join(classes)}): a group model must name the classes it decodes as they are")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _has_epochs(db, code: str) -> bool:
    return any(db.count_epochs(s.id) for s in db.list_sessions(code))


# -- fitting ---------------------------------------------------------------------------------------------------
@dataclass
class _Pooled:
    """The subjects' preprocessed (and aligned) epochs, pooled: features, labels, group ids per epoch."""

    X: np.ndarray
    y: np.ndarray
    subject: np.ndarray  # index into the subject list, per epoch
    runs: np.ndarray
    blocks: np.ndarray
    sessions: np.ndarray


def _fit_riemann(pool: _Pooled, sfreq: float, n_classes: int, align: bool):
    """xDAWN covariances (the group's filters and prototypes) -> per-subject re-centring -> tangent space ->
    logistic regression; the fitted steps as one scikit-learn pipeline (saved with skops like any pipeline)."""
    from .pipelines import make_pipeline_for

    pipe = make_pipeline_for("riemann", sfreq, pool.X.shape[1], n_classes, len(pool.X))
    xdawn, ts, lr = (step for _, step in pipe.steps)
    xdawn.fit(pool.X.astype(np.float64), pool.y)
    parts = []
    for s in np.unique(pool.subject):
        m = pool.subject == s
        Cs = xdawn.transform(pool.X[m].astype(np.float64))
        parts.append((m, recentre(Cs) if align else Cs))
    C = np.empty((len(pool.X),) + parts[0][1].shape[1:])
    for m, Cs in parts:
        C[m] = Cs
    lr.fit(ts.fit_transform(C), pool.y)
    return pipe


def fit_group_network(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, method: str,
                      n_classes: int, training: TrainingConfig, seed: int = 0, device: str | None = None,
                      max_epochs: int | None = None, max_seconds: float | None = None, progress=False):
    """Train ``method``'s network on pooled (aligned) epochs, early-stopping on (X_val, y_val); then the
    prior-matching bias on the validation set (:func:`~.fitting.calibrate_bias`).

    One function over arrays, seed and device, so that a distributed (DDP) wrapper can call it on each rank
    with that rank's shard. Returns a :class:`~.fitting.Fitted`.
    """
    from .fitting import Fitted, calibrate_bias
    from .methods import build_network
    from .training import fit, predict_proba

    model = build_network(method, X, n_classes)
    res = fit(model, X, y, training, X_val, y_val, progress=progress, device=device, seed=seed,
              max_epochs=max_epochs, max_seconds=max_seconds, after_passes=1)
    val_proba = predict_proba(res.model, X_val, res.device, batch=512)
    bias = calibrate_bias(val_proba, y_val, n_classes)
    return Fitted(method, res.model, bias, res.history, res.device,
                  {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "device": res.device,
                   "stopped": res.stopped, "seconds": round(res.seconds, 3)}, val_proba)


def fit_group_network_parallel(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, method: str,
                               n_classes: int, training: TrainingConfig, launch, seed: int = 0,
                               max_epochs: int | None = None, checkpoint: str | None = None):
    """:func:`fit_group_network` on ``launch``'s ranks (:mod:`~.distributed`: DDP, launched as torchrun launches):
    a fixed number of epochs (``max_epochs`` or the protocol's), checkpointed after each by rank 0 and resumed
    from ``checkpoint``; then the bias on the early-stopping set, as the one-process fit. None on a node that
    holds no rank 0 (the node with rank 0 stores the model)."""
    from .distributed import FitPlan, fit_data_parallel
    from .fitting import Fitted, calibrate_bias
    from .methods import build_model, build_network
    from .training import predict_proba

    config = build_network(method, X, n_classes).get_config()
    world = launch.world_size
    batch = max(world, training.batch_size // world * world)  # split evenly over the ranks
    plan = FitPlan(config, epochs=max_epochs or training.max_epochs, batch_size=min(batch, len(y) // world * world),
                   lr=training.lr, clip=training.grad_clip, seed=seed, checkpoint=checkpoint)
    try:
        out = fit_data_parallel((X, y), plan, launch)  # written as float32 .npy for the ranks (one copy)
    except ValueError as exc:  # a checkpoint of another network, a batch the ranks cannot split: one line
        raise EegloopError(str(exc)) from None
    if out is None:
        return None
    model = out.load_into(build_model(config))
    val_proba = predict_proba(model, X_val, "cpu", batch=512)
    bias = calibrate_bias(val_proba, y_val, n_classes)
    return Fitted(method, model, bias, [{"epoch": i + 1, "train_loss": v} for i, v in enumerate(out.losses)], "cpu",
                  {"epochs_run": len(out.losses), "world_size": out.world_size, "resumed_from": out.resumed_from,
                   "batch_size": plan.batch_size, "device": "cpu"}, val_proba)


def _fit_network(pool: _Pooled, method: str, classes: dict, protocol: Protocol, seed: int, device, max_epochs,
                 progress, launch=None, checkpoint=None):
    """The early-stopping split (whole blocks of the pooled subjects where the design allows) and the fit."""
    from .folds import inner_validation
    from .scoring import scores

    es = EpochSet(pool.X, np.array(list(classes))[pool.y], 1.0, 0.0, [], pool.runs, pool.blocks, pool.sessions,
                  dict(classes))
    split = inner_validation(es, np.arange(len(es)), protocol.training.split, seed)
    tr, va = split
    if launch is not None:
        fitted = fit_group_network_parallel(pool.X[tr], pool.y[tr], pool.X[va], pool.y[va], method, len(classes),
                                            protocol.training, launch, seed, max_epochs, checkpoint)
        if fitted is None:
            return None, {}
    else:
        fitted = fit_group_network(pool.X[tr], pool.y[tr], pool.X[va], pool.y[va], method, len(classes),
                                   protocol.training, seed, device, max_epochs, progress=progress)
    from .fitting import apply_bias

    held = scores(pool.y[va], apply_bias(fitted.val_proba, fitted.bias))
    return fitted, {"early_stopping": split.how, "n_train": int(len(tr)), "n_heldout": int(len(va)),
                    "heldout": held, "heldout_note": "early-stopping epochs of the training subjects: not a new "
                                                     "subject's score (evaluate leave-one-subject-out for that)"}


# -- pretrain ----------------------------------------------------------------------------------------------------
@dataclass
class _Subject:
    """One subject's training epochs (recording blocks, artifacts rejected) and where they come from."""

    code: str
    es: EpochSet
    session_ids: list
    protocol: Protocol
    n_rejected: int


@dataclass
class GroupModel:
    """A trained, stored group model (what :func:`pretrain` returns).

    Attributes
    ----------
    model_id : int
        Its ``models`` row.
    path : Path
        Its file (``.skops`` for the Riemannian pipeline, ``.safetensors`` for a network; a ``.json`` beside it).
    alignment : str
        How each subject was aligned, in words.
    grid : Grid
        The channels, rate and window every subject's epochs were brought to (a new subject's are too).
    members : list of GroupMember
        Whose epochs it holds: subject, sessions, epoch count (and consent, as stored).
    provenance : dict
        What the database keeps in the model's ``config``.
    """

    model_id: int
    name: str
    method: str
    path: Path
    alignment: str
    grid: Grid
    classes: dict
    members: list
    protocol_sha256: str
    provenance: dict
    metrics: dict
    seconds: float
    prior: object = None  # stlda.TemporalPrior | None: what tuning the model to a new subject starts from

    def lines(self) -> list[str]:
        """What the CLI prints after training."""
        from .stlda import MAX_NOISE_PRIOR_FEATURES

        n = sum(m.n_epochs for m in self.members)
        return [f"group model {self.name} (id {self.model_id}): {self.path}",
                f"{self.method} on {n} epochs of {_count(len(self.members), 'subject')} "
                f"({', '.join(f'{m.code} {m.n_epochs}' for m in self.members)}), {len(self.grid.channel_names)} "
                f"channels ({', '.join(self.grid.channel_names)}) at {self.grid.sfreq:g} Hz, classes "
                f"{', '.join(self.classes)}; protocol sha256 {self.protocol_sha256[:12]}",
                f"alignment: {self.alignment}",
                (f"tuning prior: the class differences' time courses ({self.prior.basis.shape[1]}, derivatives "
                 f"included) and the background's temporal covariance over {len(self.prior.time_cov)} windows"
                 + (f", its spatio-temporal covariance ({len(self.prior.noise_cov)} features, "
                    + ("pooled in one head without each member's own sensor noise)" if self.prior.n_subjects > 1 else
                       "one subject's, in its per-component form: nothing to pool it with)")
                    if self.prior.noise_cov is not None else
                    ", not its spatio-temporal covariance (only up to "
                    f"{MAX_NOISE_PRIOR_FEATURES} channels x windows, or members of too few epochs)")
                 + f", from {_count(self.prior.n_subjects, 'subject')}"
                 if self.prior is not None else
                 "tuning prior: none (a new subject's labelled epochs can only be blended with it)"),
                f"trained in {self.seconds:.1f} s" + (
                    f" (resumed from its checkpoint after epoch {self.metrics['resumed_from']} of "
                    f"{self.metrics.get('epochs_run')})" if self.metrics.get("resumed_from") else "")]


@verbose
def pretrain(db, subjects: Sequence[str], name: str, method: str = "riemann", align: bool = True,
             protocol: Optional[Protocol] = None, seed: int = 0, device: str | None = None,
             max_epochs: int | None = None, progress: Optional[Callable[[str], None]] = None,
             launch=None, checkpoint: str | None = None, verbose=None) -> Optional[GroupModel]:
    """Train one model on consenting subjects' epochs (one or more) and store it with its provenance.

    Parameters
    ----------
    db : Database
    subjects : list of str
        Subjects with group consent (each refused by name otherwise, before any work; see :func:`plan_group`).
    name : str
        The group model's name (unique; it names its folder ``models/group-<name>/``).
    method : str
        ``riemann`` (default), ``conv1d`` or ``lstm`` (:data:`GROUP_METHODS`).
    align : bool
        Align each subject on its own data (the method's alignment); False pools them as they are (a control).
    protocol : Protocol | None
        The reference protocol: its montage orders the channels, its preprocessing and analysis window apply,
        its hash is stored (default: the one stored with the first subject's latest session).
    seed, device, max_epochs
        Networks: the seed, the torch device (default: CUDA when there is one) and an epoch cap.
    launch : eegloop.decoder.distributed.Launch | None
        Networks: train data-parallel on these ranks (PyTorch DDP; ``eegloop pretrain --nproc/--nnodes``) for
        ``max_epochs`` epochs, checkpointed to ``checkpoint`` and resumed from it. On a node without rank 0 nothing
        is stored and None is returned.
    """
    t0 = time.perf_counter()
    say = Reporter(progress, bus=False)
    plan_group(db, subjects=list(subjects), name=name, method=method, protocol=protocol)
    data = [_load_subject(db, code) for code in subjects]
    ref = protocol or data[0].protocol
    classes = _shared_classes(data)  # plan_group checked them against --protocol from the stored labels
    grid = common_grid([d.es for d in data], ref.amplifier.channel_names)
    pre = _preprocessor(ref, grid, method)
    metric = ("riemann" if method == "riemann" else "euclid") if align else "none"
    say(f"pretrain {name}: {_count(len(data), 'subject')}, {', '.join(grid.channel_names)} at {grid.sfreq:g} Hz, "
        f"{method}, alignment: {metric}")
    pool = _pool(data, grid, pre, classes, metric)
    prior = _temporal_prior(data, grid, pre, classes)
    if method == "riemann":
        model, bias, metrics = _fit_riemann(pool, grid.sfreq, len(classes), align), None, {}
    else:
        fitted, metrics = _fit_network(pool, method, classes, ref, seed, device, max_epochs, progress=False,
                                       launch=launch, checkpoint=checkpoint)
        if fitted is None:
            say(f"pretrain {name}: this node's ranks are done; the node holding rank 0 stores the model")
            return None
        model, bias = fitted.model, fitted.bias
        metrics.update(fitted.info)
    from ..database.trained_models import GroupMember

    members = [GroupMember(d.code, d.session_ids, int((pool.subject == k).sum())) for k, d in enumerate(data)]
    metrics.update(n_epochs=int(len(pool.y)), seconds=round(time.perf_counter() - t0, 3))
    provenance = _provenance(name, method, metric, ref, grid, classes, data, pool, seed)
    path, mid = _save_and_register(db, name, method, model, pre, classes, grid, bias, metrics, provenance, members,
                                   prior)
    say(f"stored group model {name} (id {mid}) in {path}")
    stored = db.get_group_model(name)
    return GroupModel(mid, name, method, path, ALIGNMENTS[metric], grid, classes, stored.members, ref.sha256,
                      provenance, metrics, time.perf_counter() - t0, prior)


def _load_subject(db, code: str) -> _Subject:
    from .rejection import reject_artifacts
    from .trainingset import load_training_epochs

    data = load_training_epochs(db, code)
    rej = reject_artifacts(data.es, data.protocol)
    es = data.es.subset(rej.kept) if rej.n_rejected else data.es
    return _Subject(code, es, list(data.session_ids), data.protocol, rej.n_rejected)


def _shared_classes(data: Sequence[_Subject]) -> dict:
    """The class ids every subject has epochs of (the first subject's order and names)."""
    present = [set(d.es.labels.tolist()) for d in data]
    classes = {c: n for c, n in data[0].es.classes.items() if all(c in p for p in present)}
    if len(classes) < 2:  # plan_group checked the stored labels: here artifact rejection emptied a class
        raise EegloopError(_too_few_shared({d.code: p for d, p in zip(data, present)}))
    return classes


def _preprocessor(ref: Protocol, grid: Grid, method: str):
    from .methods import feature_key
    from .preprocessing import Preprocessor

    pre = Preprocessor.from_protocol(ref.preprocessing, ref.epochs, grid.sfreq, grid.tmin)
    pre = pre.with_representation(feature_key(method))
    try:
        pre.window_slice(grid.n_times)
    except ValueError:
        raise EegloopError(f"the protocol's analysis window [{ref.epochs.tmin:g}, {ref.epochs.tmax:g}] s is outside "
                           f"the window every subject's epochs cover ({grid.tmin:g} s + "
                           f"{grid.n_times / grid.sfreq:g} s)") from None
    return pre


def _pool(data: Sequence[_Subject], grid: Grid, pre, classes: dict, metric: str) -> _Pooled:
    index = {c: i for i, c in enumerate(classes)}
    parts = []
    for k, d in enumerate(data):
        keep = np.flatnonzero(np.isin(d.es.labels, list(classes)))
        es = d.es.subset(keep)
        F = preprocess_and_align(harmonise(es, grid), pre, metric)
        parts.append((F, np.array([index[c] for c in es.labels]), np.full(len(es), k), es))
    return _Pooled(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   np.concatenate([p[2] for p in parts]), np.concatenate([p[3].runs for p in parts]),
                   np.concatenate([p[3].blocks for p in parts]), np.concatenate([p[3].sessions for p in parts]))


def _temporal_prior(data: Sequence[_Subject], grid: Grid, pre, classes: dict):
    """The group's prior for tuning it to a new subject (:class:`~.stlda.TemporalPrior`): its members' epochs on
    the grid, as the ``time`` representation of the group's preprocessing, 50 ms windows; None (logged) when it
    cannot be estimated."""
    from .stlda import group_temporal_prior

    pre_t = pre.with_representation("time")
    index = {c: i for i, c in enumerate(classes)}
    members = []
    for d in data:
        es = d.es.subset(np.flatnonzero(np.isin(d.es.labels, list(classes))))
        members.append((pre_t(harmonise(es, grid)), np.array([index[c] for c in es.labels])))
    try:
        return group_temporal_prior(members, max(1, int(round(0.05 * grid.sfreq))))
    except (ValueError, np.linalg.LinAlgError) as exc:
        logger.info("no temporal prior for this group model: %s", exc)
        return None


def _provenance(name, method, metric, ref: Protocol, grid: Grid, classes, data, pool: _Pooled, seed) -> dict:
    """What the database keeps of a group model: whose data, how it was harmonised and aligned."""
    subjects = [{"code": d.code, "session_ids": d.session_ids, "n_epochs": int((pool.subject == k).sum()),
                 "n_rejected": d.n_rejected, "n_other_classes": int((~np.isin(d.es.labels, list(classes))).sum()),
                 "sfreq": d.es.sfreq, "protocol_sha256": d.protocol.sha256, "group_consent": "yes"}
                for k, d in enumerate(data)]
    montage = list(ref.amplifier.channel_names) or list(data[0].es.channel_names)
    return {"group": True, "name": name, "method": method, "alignment": metric, "alignment_text": ALIGNMENTS[metric],
            "subjects": subjects, "protocol_name": ref.name, "protocol_sha256": ref.sha256, "grid": grid.to_json(),
            "channels_dropped": [c for c in montage if c not in grid.channel_names], "classes": dict(classes),
            "seed": seed}


def _save_and_register(db, name, method, model, pre, classes, grid: Grid, bias, metrics, provenance, members,
                       prior=None):
    """The model's file (and its JSON, with the group's grid and alignment), then its rows; the files go again
    when the rows are refused (a name taken meanwhile, consent withdrawn while it trained)."""
    import uuid
    from datetime import datetime

    from .._files import write_private_text
    from .modelio import db_config, save_model

    stamp = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    out = db.data_dir / "models" / f"group-{name}" / f"{method}-{stamp}.safetensors"
    path = save_model(model, pre, classes, grid.channel_names, out, metrics, bias=bias, method=method,
                      n_times=grid.n_times)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta.update(format=GroupDecoder.FORMAT, group={"name": name, "alignment": provenance["alignment"],
                                                   "grid": grid.to_json()},
                provenance=provenance)  # beside the file too (subjects, sessions, epochs, consent, protocol hash)
    if prior is not None:
        meta["temporal_prior"] = prior.to_json()
    write_private_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    try:
        model_meta = {k: v for k, v in db_config(meta).items() if k != "provenance"}  # the rows keep it once
        mid = db.add_group_model(name, method, path, {**provenance, "model": model_meta}, metrics, members)
    except BaseException:
        _remove_files(path)
        raise
    return path, mid


def _remove_files(path: Path) -> None:
    for p in (path, path.with_suffix(".json")):
        p.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the group's folder, once empty
    except OSError:
        pass


def fit_group_in_memory(db, subjects: Sequence[str], method: str = "riemann", protocol: Optional[Protocol] = None,
                        seed: int = 0, max_epochs: int | None = None) -> GroupDecoder:
    """:func:`pretrain`'s model (same consent rule, pooling, alignment) in memory, never stored; ``subjects``: whose."""
    plan_group(db, subjects=list(subjects), method=method)
    return fit_group_from(load_members(db, subjects), method, protocol, seed, max_epochs)


def load_members(db, subjects: Sequence[str]) -> list:
    """The members' epochs as :func:`fit_group_from` takes them (each subject's recording-block epochs, artifacts
    rejected with its own protocol): what a task on another machine gets instead of the database."""
    return [_load_subject(db, code) for code in subjects]


def fit_group_from(data: Sequence, method: str = "riemann", protocol: Optional[Protocol] = None, seed: int = 0,
                   max_epochs: int | None = None) -> GroupDecoder:
    """A group model in memory from its members' loaded epochs (:func:`load_members`; consent checked by the
    caller: :func:`plan_group`)."""
    ref = protocol or data[0].protocol
    classes, grid = _shared_classes(data), common_grid([d.es for d in data], ref.amplifier.channel_names)
    pre, metric = _preprocessor(ref, grid, method), "riemann" if method == "riemann" else "euclid"
    pool = _pool(data, grid, pre, classes, metric)
    dec = GroupDecoder.__new__(GroupDecoder)  # the attributes __init__ reads from a stored model's files
    dec.name, dec.alignment, dec.grid, dec.pre, dec.classes, dec.method = "memory", metric, grid, pre, classes, method
    dec.device, dec.subjects, dec.meta, dec.model, dec.pipeline, dec.bias = "cpu", [d.code for d in data], {}, None, \
        None, None
    dec.prior = _temporal_prior(data, grid, pre, classes)
    if method == "riemann":
        dec.pipeline = _fit_riemann(pool, grid.sfreq, len(classes), True)
    else:
        fitted = _fit_network(pool, method, classes, ref, seed, "cpu", max_epochs, progress=False)[0]
        dec.model, dec.bias = fitted.model.eval(), fitted.bias
    return dec


def delete_group_models(db, subject: str, dependents: Optional[dict] = None) -> list:
    """Delete every group model trained on ``subject``'s epochs: files first, then rows (a subject withdrawing
    group consent). Returns the deleted models' records.

    A subject's model that blends one of them (quick-train with ``decoder.group_model``) keeps the group model
    *tuned* to that subject in a file of its own (``-tuned.skops``): the group's prior, estimated from the members'
    epochs (their class differences' time courses, their background's covariance). That file goes too; the
    subject's model can then no longer be loaded (it says to train it again), and :func:`dependent_models` lists
    such models beforehand (``dependents``: its answer, when the caller already has it)."""
    gone = []
    dependents = dependent_models(db, subject) if dependents is None else dependents
    for rec in db.list_group_models(subject):
        for model, tuned in dependents.get(rec.id, []):
            if tuned is not None:
                tuned.unlink(missing_ok=True)
                logger.info("deleted %s (subject %s's model %d, tuned from group model %s)", tuned.name,
                            model.subject, model.id, rec.name)
        _remove_files(db.abspath(rec.checkpoint_path))
        db.delete_group_model(rec.id)
        logger.info("deleted group model %s (id %d)", rec.name, rec.id)
        gone.append(rec)
    return gone


def dependent_models(db, subject: str) -> dict:
    """For each group model holding ``subject``'s data (by id): the subjects' models that blend it, each with the
    file of the group model tuned to them (None where it has none): ``{group id: [(ModelRecord, Path | None)]}``.
    Found by the group model's file, which a model's JSON names relative to itself (a group name can be reused)."""
    groups = {db.abspath(r.checkpoint_path).resolve(): r.id for r in db.list_group_models(subject)}
    out: dict = {}
    for model in db.list_models("group_adapted"):
        entry = model.config.get("group") if isinstance(model.config, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        here = db.abspath(model.checkpoint_path).parent
        gid = groups.get((here / entry["path"]).resolve())
        if gid is None:
            continue
        tuned = entry.get("tuned")
        path = (here / tuned["path"]).resolve() if isinstance(tuned, dict) and isinstance(tuned.get("path"), str) \
            else None
        if path is not None and path.parent != here.resolve():  # only ever the file saved beside the model
            path = None
        out.setdefault(gid, []).append((model, path))
    return out
