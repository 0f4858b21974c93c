"""The independent fits of an evaluation as tasks: one method on one outer fold of one subject, with the true labels
or the i-th label shuffle, each with its own seed.

:func:`run_fit` is what a worker runs (:mod:`eegloop.cluster` sends it there); a task's inputs are a
:class:`SubjectData` (the subject's epochs, features and protocol, shipped once per subject) and a :class:`FitTask`
(its fold's indices, the label permutation, the teacher's soft targets: arrays and small values). Its seed is the
task's, never the worker's, so any executor gives the numbers a serial run gives.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..protocol import Protocol
from ..types import EpochSet
from .fitting import fit_method
from .folds import inner_validation
from .methods import build_network, feature_key, get_method, is_network

__all__ = ["SubjectData", "FitTask", "FitResult", "run_fit", "labelled", "default_workers", "CLUSTER_WORTH_S",
           "fixed_precision", "preload_for"]


def preload_for(methods=None) -> tuple:
    """What the fits of ``methods`` import (None: any method): a local cluster's workers are forked from one
    process that imported these once. A local worker's intra-op threads come from EEGLOOP_THREADS
    (:func:`.training.set_threads`)."""
    light = methods is not None and not any(get_method(m).parallel_folds for m in methods)
    return (("eegloop.decoder.tasks", "eegloop.decoder.pipelines", "sklearn.pipeline", "sklearn.discriminant_analysis",
             "sklearn.linear_model", "sklearn.ensemble", "pyriemann") + (() if light else ("torch",)))


@dataclass
class SubjectData:
    """What every task of one subject shares: its epochs, their features and its protocol."""

    es: EpochSet
    feats: dict
    protocol: Protocol
    split: str


@dataclass
class FitTask:
    """One fit: ``method`` trained on fold ``fold``'s training part of ``subject``, scored on its test part.

    ``permutation`` 0 fits the true labels, i > 0 the i-th label shuffle (``labels`` holds its permutation of the
    epochs); ``teach`` False is the teacher ablation's fit (alpha 1).
    """

    subject: str
    method: str
    fold: int
    permutation: int
    seed: int
    train: np.ndarray
    test: np.ndarray
    labels: Optional[np.ndarray] = None  # the shuffle's permutation of the epochs (None: the true labels)
    teacher_logits: Optional[np.ndarray] = None
    teach: bool = True
    max_s: Optional[float] = None  # the time budget's cap on a network fit
    precision: Optional[str] = None  # decoder training.precision fixed by the client ("auto" measured there)
    select_budget_s: Optional[float] = None  # auto's inner selection: None, decoder.select_budget_s; inf, none

    @property
    def group(self) -> tuple:
        """The (subject, method) whose fits this one belongs to: one progress line when all of them are done."""
        return self.subject, self.method


@dataclass
class FitResult:
    """A fit's test-fold probabilities and what the report says of it."""

    proba: np.ndarray
    history: list = field(default_factory=list)
    method: str = ""  # the method fitted (auto: the candidate it chose)
    stopped: Optional[str] = None  # how a network's training ended ("time_budget": the cap)
    alpha: Optional[float] = None  # distillation weight (1: plain cross-entropy; None: a pipeline)
    seconds: float = 0.0
    budget_skipped: tuple = ()  # auto: the candidates its selection's time budget left out (wall-clock: say so)


def labelled(es: EpochSet, permutation: Optional[np.ndarray]) -> EpochSet:
    """``es`` with its labels permuted (the same data array, not a copy), or ``es`` itself."""
    if permutation is None:
        return es
    return dataclasses.replace(es, labels=es.labels[permutation])


def run_fit(task: FitTask, data: SubjectData) -> FitResult:
    """Fit ``task.method`` on its fold (``auto``: the whole model selection on the training part) and predict the
    test part."""
    t0 = time.perf_counter()
    es = labelled(data.es, task.labels)
    protocol = data.protocol
    if task.precision is not None and protocol.training.precision != task.precision:
        protocol = dataclasses.replace(protocol, training=dataclasses.replace(protocol.training,
                                                                              precision=task.precision))
    if task.method == "auto":
        from .selection import select_model

        sel = select_model(es, protocol, data.feats, task.train, teacher_logits=task.teacher_logits, seed=task.seed,
                           budget_s=task.select_budget_s)
        fitted = sel.fit_winner(es, data.feats, task.train, protocol, task.teacher_logits, seed=task.seed)
        skipped = sel.budget_skipped()
    else:
        skipped = ()
        tr, va = inner_validation(es, task.train, data.split, task.seed)
        fitted = fit_method(task.method, es, data.feats, tr, va, protocol, task.teacher_logits, False, task.seed,
                            max_seconds=task.max_s)
    p = fitted.predict(data.feats[feature_key(fitted.method)][task.test], len(es.classes))
    return FitResult(p, fitted.history, fitted.method, fitted.info.get("stopped"), fitted.info.get("alpha"),
                     time.perf_counter() - t0, skipped)


#: serial seconds of fitting below which a LocalCluster is not worth opening: on 2 cores (AMD EPYC) one took ~7 s
#: wall and ~10 CPU-seconds to start with its workers' imports, before its first fit
CLUSTER_WORTH_S = 20.0


def default_workers(n_tasks: int) -> int:
    """How many tasks run at once by default: one per core (or EEGLOOP_JOBS), never more than there are tasks."""
    return max(1, min(n_tasks, int(os.environ.get("EEGLOOP_JOBS", 0) or (os.cpu_count() or 1))))


def fixed_precision(method: str, es: EpochSet, feats: dict, train: np.ndarray, protocol: Protocol) -> Optional[str]:
    """``training.precision: auto`` decided once here, where nothing competes for the cores, for every worker of
    a local cluster (workers measuring it side by side would each see a slower machine); None for a pipeline or a
    precision the protocol fixes."""
    if not is_network(method) or protocol.training.precision != "auto":
        return None
    import torch

    from .training import choose_bf16

    X = feats[feature_key(method)][train[:protocol.training.batch_size]]
    model = build_network(method, X, len(es.classes))
    fast = choose_bf16("auto", model, torch.as_tensor(X), torch.as_tensor(es.y[train[:len(X)]]), "cpu")
    return "bf16" if fast else "fp32"
