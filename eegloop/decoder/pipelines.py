"""Classical pipelines (scikit-learn, pyriemann): the decoders that win on small real data sets.

Each pipeline takes the preprocessed signal (n, channels, times) — the same
:class:`~.preprocessing.Preprocessor` path as the CNNs, with the ``time``
representation — and ends in a classifier with ``predict_proba`` (which methods are pipelines:
the registry, :mod:`.methods`):

- ``lda_windowed``: the mean of each 50 ms window per channel, standardised,
  shrinkage LDA (Ledoit-Wolf) with equal class priors: the classic ERP decoder.
- ``lda_st``: the same window means, LDA with the covariance shrunk towards a spatial x temporal structure
  instead of the identity (:mod:`.stlda`: a spatial covariance per temporal component): the background's
  correlation between windows, and each rhythm's own topography, are kept.
- ``logreg_windowed``: the same features, L2 logistic regression, balanced class weights.
- ``riemann``: xDAWN-filtered ERP covariances (pyriemann ``XdawnCovariances``, OAS shrinkage, computed over the
  whole stack of epochs: :mod:`.xdawncov`) -> tangent space -> logistic regression (the eeg-notebooks/MOABB
  pipeline).
- ``vote``: ``lda_windowed``, ``logreg_windowed`` and ``riemann``, each fitted on the same epochs, their class probabilities averaged
  (scikit-learn's soft ``VotingClassifier``). No one of them wins on every subject and inner folds rarely tell
  which will (the note on :mod:`.selection`); the average is never far from the best of them.
- ``logreg_power`` (Table 1): log of the averaged squared signal per channel,
  computed before per-epoch standardisation (after it every channel's power is 1).
- ``logreg_pca`` (Table 1): the whole signal, standardised, PCA to 64
  components, logistic regression.
- ``cebra_knn`` (Table 1): the 50 ms window means, standardised, embedded by CEBRA
  (Schneider et al. 2023, the ``cebra`` package: supervised contrastive learning with the class
  as the discrete label, an MLP without temporal context, 8 dimensions, cosine distance) and
  classified by k nearest neighbours in that space. A baseline only: not saved as a model.

Fitted pipelines are saved with skops (https://skops.readthedocs.io): unlike
pickle, loading builds only the types the caller trusts, so a model file
cannot run code. :func:`load_pipeline` trusts exactly the types eegloop's own
pipelines are made of and refuses any other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..errors import EegloopError
from .ensembles import ENSEMBLES

__all__ = ["make_pipeline_for", "save_pipeline", "load_pipeline", "WindowMeans", "LogPower",
           "Flatten", "skip_reason", "fitting_members"]

_MAX_XDAWN_DIM = 32  # beyond this (many classes) xDAWN covariances cost minutes: 40 classes x 128 ch, 2000 epochs:
# 156 s for 3 inner folds on 2 cores (AMD EPYC), five times the selection budget


class WindowMeans(TransformerMixin, BaseEstimator):
    """(n, ch, t) -> (n, ch * windows): the mean of each ``width`` samples, flattened."""

    def __init__(self, width: int = 1):
        self.width = width

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X)
        w = max(1, int(self.width))
        n = max(1, X.shape[-1] // w)
        return X[..., :n * w].reshape(X.shape[0], X.shape[1], n, -1).mean(-1).reshape(len(X), -1)


class LogPower(TransformerMixin, BaseEstimator):
    """(n, ch, t) -> (n, ch): log of the averaged squared signal (Table 1's first baseline)."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.log(np.mean(np.square(np.asarray(X, dtype=np.float64)), -1) + 1e-12)


class Flatten(TransformerMixin, BaseEstimator):
    """(n, ...) -> (n, features)."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X)
        return X.reshape(len(X), -1)


class CebraKNN(BaseEstimator):
    """CEBRA embedding (discrete class labels) + k-nearest-neighbour classifier, seeded.

    scikit-learn has no contrastive embedding, so CEBRA's own estimator (itself scikit-learn
    compatible) is used; this class only fixes its seed and device and puts a kNN after it.
    """

    def __init__(self, output_dimension: int = 8, max_iterations: int = 1000, batch_size: int = 256,
                 n_neighbors: int = 15, seed: int = 0):
        self.output_dimension, self.max_iterations, self.batch_size = output_dimension, max_iterations, batch_size
        self.n_neighbors, self.seed = n_neighbors, seed

    def fit(self, X, y):
        import logging
        import warnings

        import torch
        from sklearn.neighbors import KNeighborsClassifier

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CEBRA's deprecation notices about torch.jit, at import and fit
            import cebra
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)  # CEBRA's samplers draw from numpy's global generator
        y = np.asarray(y).astype(np.int64)
        self.embedding_ = cebra.CEBRA(model_architecture="offset1-model", output_dimension=self.output_dimension,
                                      max_iterations=self.max_iterations, batch_size=min(self.batch_size, len(X)),
                                      device="cpu", verbose=False, distance="cosine", temperature=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("cebra").setLevel(logging.ERROR)
            self.embedding_.fit(np.asarray(X, dtype=np.float32), y)
        k = max(1, min(self.n_neighbors, len(X) - 1))
        self.knn_ = KNeighborsClassifier(k, metric="cosine").fit(self._embed(X), y)
        self.classes_ = self.knn_.classes_
        return self

    def _embed(self, X):
        return self.embedding_.transform(np.asarray(X, dtype=np.float32))

    def predict_proba(self, X):
        return self.knn_.predict_proba(self._embed(X))

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]


def _xdawn_filters(n_chans: int, n_classes: int) -> int:
    return max(0, min(4, n_chans, _MAX_XDAWN_DIM // (2 * n_classes)))


def skip_reason(method: str, n_chans: int, n_classes: int) -> str | None:
    """Why ``method`` is not worth fitting on this shape of data, or None (``vote``: None while a member fits)."""
    if method in ENSEMBLES:
        whys = [skip_reason(m, n_chans, n_classes) for m in ENSEMBLES[method]]
        return None if any(w is None for w in whys) else "; ".join(whys)
    if method == "riemann" and _xdawn_filters(n_chans, n_classes) < 1:
        return f"{n_classes} classes make xDAWN covariances larger than {_MAX_XDAWN_DIM} x {_MAX_XDAWN_DIM}"
    return None


def fitting_members(method: str, n_chans: int, n_classes: int) -> list:
    """An ensemble's members that fit this shape of data (what its VotingClassifier holds); ``[]`` otherwise."""
    return [m for m in ENSEMBLES.get(method, ()) if skip_reason(m, n_chans, n_classes) is None]


def make_pipeline_for(method: str, sfreq: float, n_chans: int, n_classes: int, n_samples: int | None = None):
    """An unfitted scikit-learn pipeline for ``method``."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    width = max(1, int(round(0.05 * sfreq)))  # 50 ms windows
    lr = dict(max_iter=1000, class_weight="balanced")
    if method == "lda_windowed":
        return make_pipeline(WindowMeans(width), StandardScaler(),
                             LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto",
                                                        priors=np.full(n_classes, 1.0 / n_classes)))
    if method == "lda_st":
        from .stlda import SpatioTemporalLDA

        return make_pipeline(SpatioTemporalLDA(width))
    if method == "logreg_windowed":
        return make_pipeline(WindowMeans(width), StandardScaler(), LogisticRegression(C=1.0, **lr))
    if method == "logreg_power":
        return make_pipeline(LogPower(), StandardScaler(), LogisticRegression(C=1.0, **lr))
    if method == "logreg_pca":
        from sklearn.decomposition import PCA

        k = 64 if n_samples is None else max(1, min(64, n_samples - 1))
        return make_pipeline(Flatten(), StandardScaler(), PCA(k, random_state=0), LogisticRegression(C=1.0, **lr))
    if method == "cebra_knn":
        return make_pipeline(WindowMeans(width), StandardScaler(), CebraKNN())
    if method == "riemann":
        from pyriemann.tangentspace import TangentSpace

        from .xdawncov import XdawnOASCovariances

        nf = _xdawn_filters(n_chans, n_classes)
        if nf < 1:
            raise EegloopError(f"riemann: {skip_reason(method, n_chans, n_classes)}")
        return make_pipeline(XdawnOASCovariances(nfilter=nf, estimator="oas"), TangentSpace(metric="riemann"),
                             LogisticRegression(C=1.0, **lr))
    if method in ENSEMBLES:  # a soft vote: the mean of its members' probabilities (members that fit this shape)
        from sklearn.ensemble import VotingClassifier

        return VotingClassifier([(m, make_pipeline_for(m, sfreq, n_chans, n_classes, n_samples))
                                 for m in fitting_members(method, n_chans, n_classes)], voting="soft")
    raise ValueError(f"unknown pipeline {method!r}")


def fit_pipeline(method: str, X: np.ndarray, y: np.ndarray, sfreq: float, n_classes: int):
    """Fit ``method`` on (X, y); X is the ``time`` representation (n, ch, t)."""
    pipe = make_pipeline_for(method, sfreq, X.shape[1], n_classes, len(X))
    return pipe.fit(np.asarray(X, dtype=np.float64), y)


def predict_pipeline(pipe, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities (n, n_classes), zero for classes the pipeline never saw."""
    p = np.zeros((len(X), n_classes))
    p[:, pipe.classes_] = pipe.predict_proba(np.asarray(X, dtype=np.float64))
    return p


# skops trusts scikit-learn's own types; beyond them, exactly the types eegloop's pipelines are made of
TRUSTED_TYPES = frozenset({
    "eegloop.decoder.pipelines.WindowMeans", "eegloop.decoder.pipelines.LogPower",
    "eegloop.decoder.pipelines.Flatten", "eegloop.decoder.stlda.SpatioTemporalLDA",
    "pyriemann.estimation.XdawnCovariances", "eegloop.decoder.xdawncov.XdawnOASCovariances",
    "pyriemann.spatialfilters.Xdawn", "pyriemann.tangentspace.TangentSpace",
    "sklearn.utils._bunch.Bunch",  # a VotingClassifier's named_estimators_ (a dict with attribute access)
})


def save_pipeline(pipe, path: Path) -> None:
    import skops.io as sio

    from .._files import private_file

    private_file(path, create=True)
    sio.dump(pipe, str(path))
    private_file(path)


def load_pipeline(path: Path):
    """Load a pipeline saved by :func:`save_pipeline`; any type outside eegloop's own pipelines is refused."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as exc:  # a damaged or foreign file: one line, never a traceback
        raise EegloopError(f"model file {path}: not a readable skops file ({type(exc).__name__})") from None
    refused = [t for t in untrusted if t not in TRUSTED_TYPES]
    if refused:
        raise EegloopError(f"model file {path}: holds types eegloop does not load ({', '.join(refused[:5])})")
    try:
        return sio.load(str(path), trusted=untrusted)
    except Exception as exc:
        raise EegloopError(f"model file {path}: could not be loaded ({type(exc).__name__}: {exc})"[:400]) from None

