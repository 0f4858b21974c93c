"""A stored group model decoding a new subject's epochs: aligned on the subject's own epochs (no labels needed).

:meth:`GroupDecoder.predict_proba` aligns the epochs it is given on themselves (a batch: evaluation, zero
calibration scored offline); :meth:`GroupDecoder.reference` freezes a subject's alignment on some of their epochs
(the first minutes of a visit) so that later epochs can be decoded one at a time (online feedback).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import EegloopError
from ..types import EpochSet
from .harmonise import Grid, Reference, align_subject, harmonise, harmonise_array, preprocess_and_align, recentre

__all__ = ["GroupDecoder", "TunedGroup", "load_group_model", "predict_new_subject", "MIN_TUNING_EPOCHS"]

#: fewest labelled epochs per class a group model is tuned on (fewer: the group model as it is)
MIN_TUNING_EPOCHS = 4


class TunedGroup:
    """A group model's prior fitted to one subject's labelled epochs (:meth:`GroupDecoder.tuned`).

    The group lends what does not depend on the subject's head (:class:`~.stlda.TemporalPrior`: the time courses
    of its class differences and of its background); the subject's epochs give the rest, on every channel (where
    the response shows on their scalp, their noise). No alignment; where the prior keeps the group's spatio-temporal
    covariance (``noise_cov``), it is carried to the subject by their own spatial mixing, fitted on their epochs.
    """

    def __init__(self, group: "GroupDecoder", pipeline, n_epochs: int):
        self.group, self.pipeline, self.n_epochs = group, pipeline, int(n_epochs)
        self.classes = [str(c) for c in pipeline.classes_]
        self.name, self.method = group.name, group.method

    def predict_proba(self, es: EpochSet) -> np.ndarray:
        """Class probabilities (n, :attr:`classes`) for the subject's epochs (labels unused)."""
        return self.predict_array(es.data, es.channel_names, es.sfreq, es.tmin)

    def predict_array(self, data: np.ndarray, channel_names, sfreq: float, tmin: float, reference=None) -> np.ndarray:
        """Class probabilities for epochs given as an array (n, channels, times); ``reference`` is not used."""
        X = self.group.pre_time(harmonise_array(data, channel_names, sfreq, tmin, self.group.grid))
        return self.pipeline.predict_proba(X.astype(np.float64))


class GroupDecoder:
    """A stored group model, ready to decode a new subject's epochs.

    The new subject's epochs are brought to the model's grid (channels by name, rate, window), preprocessed as
    in training and aligned on the subject's own epochs (their covariances' mean: no labels needed), then
    decoded. Align on enough of the subject's epochs (a few minutes) for a stable mean.
    """

    FORMAT = "eegloop-group-model-1"

    def __init__(self, path: str | Path, device: str = "cpu"):
        from .metafile import read_model_meta
        from .preprocessing import Preprocessor

        path = Path(path)
        self.meta = read_model_meta(path, "group model")
        if self.meta.get("format") != self.FORMAT:
            raise EegloopError(f"{path} is not a group model (format {self.meta.get('format')!r})")
        group = self.meta["group"]
        self.name, self.alignment = group["name"], group["alignment"]
        self.grid = Grid(**group["grid"])
        self.pre = Preprocessor.from_dict(self.meta["preprocessing"])
        self.classes = dict(self.meta["classes"])
        self.method = self.meta["method"]
        bias = self.meta.get("calibration_bias")
        self.bias = np.asarray(bias, dtype=np.float64) if bias is not None else None
        self.device = device
        from .stlda import TemporalPrior

        self.prior = TemporalPrior.from_json(self.meta.get("temporal_prior"))  # None: a model from before priors
        #: how many subjects it learned from (None where it does not say: a model from before priors)
        self.n_subjects = self.prior.n_subjects if self.prior is not None else None
        if self.meta["model"].get("kind") == "pipeline":
            from .pipelines import load_pipeline

            self.pipeline, self.model = load_pipeline(path), None
        else:
            from safetensors.torch import load_file

            from .methods import build_model

            self.pipeline, self.model = None, build_model(self.meta["model"])
            self.model.load_state_dict(load_file(str(path)))
            self.model.eval().to(device)

    def pre_time(self, X: np.ndarray) -> np.ndarray:
        """Epochs on the model's grid -> the time series its prior was estimated on (the ``time`` representation
        of the model's preprocessing)."""
        pre = self.__dict__.get("_pre_time")
        if pre is None:
            pre = self.__dict__["_pre_time"] = self.pre.with_representation("time")
        return pre(X)

    def tuned(self, es: EpochSet) -> Optional[TunedGroup]:
        """The group's prior fitted to the subject's labelled epochs ``es`` (:class:`TunedGroup`); None when the
        model has no prior or ``es`` has fewer than two classes with :data:`MIN_TUNING_EPOCHS` epochs each."""
        if self.prior is None or len(es) == 0:
            return None
        labels, counts = np.unique(es.labels, return_counts=True)
        keep = labels[counts >= MIN_TUNING_EPOCHS]
        if len(keep) < 2:
            return None
        sub = es if len(keep) == len(labels) else es.subset(np.flatnonzero(np.isin(es.labels, keep)))
        X = self.pre_time(harmonise(sub, self.grid)).astype(np.float64)
        return TunedGroup(self, self.prior.estimator().fit(X, sub.labels), len(sub))

    def features(self, es: EpochSet) -> np.ndarray:
        """``es`` on the model's grid, preprocessed, aligned on ``es`` itself."""
        if len(es) < 2:
            raise EegloopError("aligning a new subject needs at least 2 of their epochs")
        return preprocess_and_align(harmonise(es, self.grid), self.pre, self.alignment)

    def reference(self, es: EpochSet) -> Reference:
        """The alignment of the subject whose epochs ``es`` are (labels unused), frozen for decoding other epochs
        of theirs (:meth:`predict_array`). The same numbers as :meth:`predict_proba` on ``es`` itself."""
        from .harmonise import recentring_filter

        if len(es) < 2:
            raise EegloopError("aligning a new subject needs at least 2 of their epochs")
        F = self.pre(harmonise(es, self.grid))
        W = None
        if self.alignment != "none":
            F, W = align_subject(F, self.alignment)
        P = None
        if self.pipeline is not None and self.alignment != "none":
            P = recentring_filter(self.pipeline.steps[0][1].transform(F.astype(np.float64)))
        return Reference(W, P, len(es))

    def predict_proba(self, es: EpochSet) -> np.ndarray:
        """Class probabilities (n, classes in :attr:`classes`' order) for the new subject's epochs ``es``
        (labels unused), aligned on ``es`` itself."""
        return self._decide(self.features(es), None)

    def predict_array(self, data: np.ndarray, channel_names, sfreq: float, tmin: float,
                      reference: Reference) -> np.ndarray:
        """Class probabilities for epochs given as an array (n, channels, times: e.g. one online epoch), aligned
        by a frozen :class:`~.harmonise.Reference` of their subject (:meth:`reference`)."""
        F = reference.align(self.pre(harmonise_array(data, channel_names, sfreq, tmin, self.grid)))
        return self._decide(F, reference)

    def _decide(self, X: np.ndarray, reference: Optional[Reference]) -> np.ndarray:
        if self.pipeline is not None:
            steps = self.pipeline.steps
            C = steps[0][1].transform(X.astype(np.float64))
            if self.alignment != "none":
                C = recentre(C) if reference is None else reference.recentre(C)
            head = self.pipeline[1:]
            p = np.zeros((len(X), len(self.classes)))
            p[:, head.classes_] = head.predict_proba(C)
            return p
        from .fitting import apply_bias
        from .training import predict_proba

        return apply_bias(predict_proba(self.model, X, self.device), self.bias)


def load_group_model(db, name: str, device: str = "cpu") -> GroupDecoder:
    """The group model ``name`` as a :class:`GroupDecoder` (one line for an unknown name)."""
    rec = db.get_group_model(name)
    return GroupDecoder(db.abspath(rec.checkpoint_path), device)


def predict_new_subject(model: GroupDecoder, es: EpochSet) -> np.ndarray:
    """Zero calibration: a group model's class probabilities for a new subject's unlabelled epochs, aligned on
    those epochs alone (:meth:`GroupDecoder.predict_proba`)."""
    return model.predict_proba(es)
