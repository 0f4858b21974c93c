"""The decoding methods: one registry that evaluation, selection, training, saving and the CLI consult.

Each :class:`Method` says what it is (a scikit-learn/pyriemann pipeline, a network, a network distilled from the
CLIP teacher, or ``auto``'s model selection), which representation of the epochs it reads (a key of
:func:`~.fitting.features_for`), how its untrained model is built, whether it learns from the teacher's soft
targets, and its cost class (whether evaluation runs its folds side by side and whether it shares the networks'
time budget). Nothing here imports torch or scikit-learn: the builders import them when called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .ensembles import ENSEMBLES

__all__ = ["Method", "METHODS", "BASELINES", "PAPER_NAMES", "get_method", "method_names", "is_sklearn",
           "is_network", "distils", "feature_key", "members", "build_network", "stored_kind", "rep_of", "student",
           "build_model"]

# kinds
SELECTION = "selection"  # auto: the best candidate on honest inner folds
PIPELINE = "pipeline"  # scikit-learn / pyriemann, saved with skops
NETWORK = "network"  # a torch network trained with plain cross-entropy, saved as safetensors
DISTILLED = "distilled network"  # a torch network trained on the teacher's soft targets too (alpha < 1)

# cost classes
LIGHT = "light"  # a pipeline fitted in seconds: folds one after another
TRAINS_NETWORK = "pipeline training a network"  # CEBRA: folds side by side, outside the networks' budget
HEAVY = "network"  # folds side by side, sharing evaluate's time budget with the other networks
NESTED = "nested selection"  # auto: a whole model selection inside each fold


def _residual_cnn(X: np.ndarray, n_classes: int):
    from .models import ResidualCNN

    return ResidualCNN(X.shape[1], n_classes, X.shape[2], X.shape[3])


def _lstm(X: np.ndarray, n_classes: int):
    from .models import LSTMNet

    return LSTMNet(X.shape[1], n_classes, X.shape[2])


def _conv1d(X: np.ndarray, n_classes: int):
    from .models import Conv1DNet

    return Conv1DNet(X.shape[1], n_classes, X.shape[2])


def _eegnet(X: np.ndarray, n_classes: int):
    from .fieldnets import EEGNetModel

    return EEGNetModel(X.shape[1], n_classes, X.shape[2])


def _shallow(X: np.ndarray, n_classes: int):
    from .fieldnets import ShallowConvNet

    return ShallowConvNet(X.shape[1], n_classes, X.shape[2])


def _pipeline(name: str) -> Callable:
    def build(sfreq: float, n_chans: int, n_classes: int, n_samples: int | None = None):
        from .pipelines import make_pipeline_for

        return make_pipeline_for(name, sfreq, n_chans, n_classes, n_samples)

    return build


@dataclass(frozen=True)
class Method:
    """One decoding method.

    Attributes
    ----------
    name : str
        What protocols, the CLI and reports call it.
    kind : str
        ``selection`` (auto), ``pipeline``, ``network`` or ``distilled network``.
    representation : str | None
        The epochs' representation it reads (a key of :func:`~.fitting.features_for`); None for ``auto``.
    builder : callable | None
        Networks: ``builder(X, n_classes)`` -> an untrained module shaped for ``X``; pipelines:
        ``builder(sfreq, n_chans, n_classes, n_samples)`` -> an unfitted pipeline; None for ``auto``.
    distils : bool
        Whether it learns from the teacher's soft targets (``auto`` does: it may pick a distilled network).
    cost : str
        ``light``, ``pipeline training a network``, ``network`` or ``nested selection``.
    paper_name : str
        Its row in the paper's Table 1 layout.
    """

    name: str
    kind: str
    representation: Optional[str]
    builder: Optional[Callable]
    distils: bool
    cost: str
    paper_name: str

    @property
    def is_pipeline(self) -> bool:
        return self.kind == PIPELINE

    @property
    def is_network(self) -> bool:
        return self.kind in (NETWORK, DISTILLED)

    @property
    def parallel_folds(self) -> bool:
        """Whether evaluation runs its folds side by side in worker processes (anything that trains a network)."""
        return self.cost != LIGHT

    @property
    def undistilled(self) -> str:
        """The name of the same network trained without the teacher (``kd_erp`` -> ``cnn_erp``)."""
        return f"cnn_{self.representation}" if self.kind == DISTILLED else self.name


def _cnn(name: str, rep: str, paper: str, distilled: bool) -> Method:
    return Method(name, DISTILLED if distilled else NETWORK, rep, _residual_cnn, distilled, HEAVY, paper)


def _pipe(name: str, rep: str, paper: str, cost: str = LIGHT) -> Method:
    return Method(name, PIPELINE, rep, _pipeline(name), False, cost, paper)


_REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("auto", SELECTION, None, None, True, NESTED, "Default: the best candidate on inner folds"),
    _cnn("kd_stft", "stft", "Knowledge distillation on STFT", True),
    _cnn("kd_erp", "erp", "Residual CNN on binned ERP (KD when a teacher exists)", True),
    _cnn("kd_wavelet", "wavelet", "Knowledge distillation on db4 wavelets", True),
    _pipe("riemann", "time", "xDAWN covariances + tangent space + LR"),
    _pipe("lda_windowed", "time", "Shrinkage LDA, 50 ms window means"),
    # shrinkage towards a spatial x temporal covariance: the background's correlation across windows kept
    _pipe("lda_st", "time", "Spatio-temporal shrinkage LDA, 50 ms window means"),
    _pipe("logreg_windowed", "time", "Logistic regression, windowed signal"),
    # the mean of lda_windowed's, logreg_windowed's and riemann's probabilities: what auto prefers (README)
    Method("vote", PIPELINE, "time", _pipeline("vote"), False, LIGHT, "Soft vote: shrinkage LDA, windowed LR, "
           "xDAWN + TS + LR"),
    # Table 1: power of the signal, before per-epoch standardisation
    _pipe("logreg_power", "time_raw", "Logistic regression, averaged squared signal"),
    _pipe("logreg_pca", "time", "Logistic regression on PCA"),
    _pipe("cebra_knn", "time", "CEBRA embedding + kNN", TRAINS_NETWORK),  # CEBRA trains a small network too
    _cnn("cnn_stft", "stft", "CNN on STFT (no distillation)", False),
    _cnn("cnn_image", "image", "CNN on raw EEG as a 2-D image", False),
    Method("lstm", NETWORK, "time", _lstm, False, HEAVY, "LSTM (time series)"),
    # the time series at >= 2.5 x the band edge: same information, a third of the work
    Method("conv1d", NETWORK, "series", _conv1d, False, HEAVY, "1-D CNN (time series)"),
    # the field's networks for small ERP datasets, from braindecode (eegloop/decoder/fieldnets.py)
    Method("eegnet", NETWORK, "time", _eegnet, False, HEAVY, "EEGNet (braindecode)"),
    Method("shallow_fbcsp", NETWORK, "time", _shallow, False, HEAVY, "Shallow ConvNet (braindecode ShallowFBCSPNet)"),
)}

#: every method name, in the order reports list them
METHODS = tuple(_REGISTRY)
#: Table 1's rows (Ferrante et al. 2023) and the classical pipelines that auto selection compares
BASELINES = ("logreg_power", "logreg_windowed", "logreg_pca", "lda_windowed", "riemann", "cebra_knn", "lstm",
             "conv1d", "cnn_image", "cnn_stft", "kd_wavelet")
PAPER_NAMES = {m.name: m.paper_name for m in _REGISTRY.values()}


def method_names() -> tuple[str, ...]:
    """Every method name (``auto`` first): the CLI's ``--methods`` choices."""
    return METHODS


def get_method(name: str) -> Method:
    """The registry's entry for ``name``; ValueError when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}") from None


def rep_of(method: str) -> str | None:
    """The representation a residual CNN (``kd_*``/``cnn_*``) reads, or None for any other method."""
    m = _REGISTRY.get(method)
    return m.representation if m is not None and m.builder is _residual_cnn else None


def is_sklearn(method: str) -> bool:
    """Whether ``method`` is a scikit-learn/pyriemann pipeline (saved with skops, no early stopping)."""
    m = _REGISTRY.get(method)
    return m is not None and m.is_pipeline


def is_network(method: str) -> bool:
    """Whether ``method`` trains a torch network of its own (saved as safetensors)."""
    m = _REGISTRY.get(method)
    return m is not None and m.is_network


def members(method: str) -> tuple:
    """An ensemble's member methods (``vote``: :data:`.ensembles.ENSEMBLES`), or ``()``."""
    return ENSEMBLES.get(method, ())


def distils(method: str) -> bool:
    """Whether ``method`` learns from the teacher's soft targets (``kd_*``, and ``auto``, which may pick one)."""
    m = _REGISTRY.get(method)
    return m is not None and m.distils


def feature_key(method: str) -> str:
    """Which representation a method's input is (a key of :func:`~.fitting.features_for`)."""
    m = _REGISTRY.get(method)
    return (m.representation if m is not None else None) or "time"


def build_network(method: str, X: np.ndarray, n_classes: int):
    """The untrained network of ``method``, shaped for the inputs ``X``; ValueError for a method without one."""
    m = _REGISTRY.get(method)
    if m is None or not m.is_network:
        raise ValueError(f"unknown method {method!r}")
    return m.builder(X, n_classes)


def stored_kind(method: str, distilled: bool) -> str:
    """The kind a trained model is registered under in the database: a distilling network trained without the
    teacher's soft targets is stored as its plain counterpart (``kd_erp`` -> ``cnn_erp``)."""
    m = _REGISTRY.get(method)
    if m is None or distilled:
        return method
    return m.undistilled


def student(representation: str) -> str:
    """The protocol's own student: the distilled residual CNN reading ``representation``
    (``preprocessing.representation``), what quick-train falls back on when nothing can be compared."""
    for m in _REGISTRY.values():
        if m.kind == DISTILLED and m.representation == representation:
            return m.name
    raise ValueError(f"no distilled network reads the {representation!r} representation")


def build_model(config: dict):
    """Rebuild a saved network from its ``get_config()`` output (``kind``: its architecture)."""
    from .models import Conv1DNet, LSTMNet, ResidualCNN

    cfg = dict(config)
    kind = cfg.pop("kind")
    if kind in ("eegnet", "shallow_fbcsp"):  # braindecode's, imported only for them
        from .fieldnets import EEGNetModel, ShallowConvNet

        return {"eegnet": EEGNetModel, "shallow_fbcsp": ShallowConvNet}[kind](**cfg)
    cls = {c.kind: c for c in (ResidualCNN, LSTMNet, Conv1DNet)}[kind]
    if "widths" in cfg:
        cfg["widths"] = tuple(cfg["widths"])
    return cls(**cfg)
