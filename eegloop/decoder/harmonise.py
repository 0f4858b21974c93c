"""Bringing subjects' epochs together: a common grid (channels by name, rate, window) and per-subject alignment.

Used by group models (:mod:`.group`, :mod:`.groupdecoder`): :func:`harmonise` puts one subject's epochs on a
:class:`Grid`, :func:`align_subject` whitens them by their own covariances' mean (no labels needed) and
:class:`Reference` freezes that whitening, computed on a subject's first epochs, for decoding later epochs one at a
time (online feedback from a group model).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from ..errors import EegloopError
from ..types import EpochSet

__all__ = ["Grid", "common_grid", "harmonise", "harmonise_array", "align_subject", "recentre", "preprocess_and_align",
           "Reference"]


@dataclass(frozen=True)
class Grid:
    """What every subject's epochs are brought to: the channels (by name, in the montage's order), the rate,
    the time of the first sample relative to onset, and the samples per epoch."""

    channel_names: list
    sfreq: float
    tmin: float
    n_times: int

    def to_json(self) -> dict:
        return {"channel_names": list(self.channel_names), "sfreq": self.sfreq, "tmin": self.tmin,
                "n_times": self.n_times}


def common_grid(sets: Sequence[EpochSet], montage: Sequence[str] = ()) -> Grid:
    """The grid ``sets`` share: the channels of ``montage`` (default: the first set's) that every set has, the
    lowest rate, and the window every set covers. One line when they share no channel or no time."""
    order = list(montage) or list(sets[0].channel_names)
    shared = [c for c in order if all(c in es.channel_names for es in sets)]
    if not shared:
        have = "; ".join(f"{', '.join(es.channel_names)}" for es in sets)
        raise EegloopError(f"the subjects' sessions share no channel of the montage ({', '.join(order)}); their "
                           f"channels: {have}")
    sfreq = float(min(es.sfreq for es in sets))
    start = max(es.tmin for es in sets)
    end = min(es.tmin + es.data.shape[-1] / es.sfreq for es in sets)
    n = int(np.floor((end - start) * sfreq + 1e-6))
    if n < 2:
        raise EegloopError("the subjects' epochs share no common time window")
    return Grid(shared, sfreq, float(start), n)


def harmonise(es: EpochSet, grid: Grid) -> np.ndarray:
    """``es``'s epochs on ``grid``: its channels picked by name, resampled (scipy's polyphase ``resample_poly``,
    anti-aliased) and cut to the grid's window -> (n, channels, times) float32."""
    return harmonise_array(es.data, es.channel_names, es.sfreq, es.tmin, grid)


def harmonise_array(data: np.ndarray, channel_names: Sequence[str], sfreq: float, tmin: float,
                    grid: Grid) -> np.ndarray:
    """:func:`harmonise` for epochs given as an array (n, channels, times) with their channel names, rate and the
    time of their first sample (an online epoch has no :class:`~eegloop.types.EpochSet`)."""
    missing = [c for c in grid.channel_names if c not in channel_names]
    if missing:
        raise EegloopError(f"the epochs lack channel(s) {', '.join(missing)} the group model was trained on")
    idx = [list(channel_names).index(c) for c in grid.channel_names]
    x = np.asarray(data)[:, idx, :].astype(np.float64)
    if abs(sfreq - grid.sfreq) > 1e-9:
        from scipy.signal import resample_poly

        ratio = Fraction(grid.sfreq / sfreq).limit_denominator(1000)
        x = resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
    a = int(round((grid.tmin - tmin) * grid.sfreq))
    if a < 0 or a + grid.n_times > x.shape[-1]:
        raise EegloopError(f"the epochs ({tmin:g} s, {np.shape(data)[-1] / sfreq:g} s long) do not cover the "
                           f"group model's window ({grid.tmin:g} s, {grid.n_times / grid.sfreq:g} s long)")
    return np.ascontiguousarray(x[..., a:a + grid.n_times], dtype=np.float32)


# -- alignment -----------------------------------------------------------------------------------------------
def _centre(C: np.ndarray, metric: str):
    """pyriemann's re-centring of one subject's SPD matrices: the fitted ``TLCenter`` (one domain)."""
    from pyriemann.transfer import TLCenter, encode_domains

    _, y_enc = encode_domains(C, np.zeros(len(C), int), np.full(len(C), "subject"))
    return TLCenter(target_domain="subject", metric=metric).fit(C, y_enc)


def align_subject(X: np.ndarray, metric: str = "riemann") -> tuple[np.ndarray, np.ndarray]:
    """Whiten one subject's epochs by the inverse square root of the mean of its trial covariances.

    Parameters
    ----------
    X : array (n, channels, times)
        One subject's epochs (all of them; labels are not needed).
    metric : str
        ``riemann``: the Riemannian mean (re-centring, Zanini et al. 2018); ``euclid``: the arithmetic mean
        (Euclidean alignment, He & Wu 2019). Either through ``pyriemann.transfer.TLCenter`` on the epochs'
        sample covariances (lightly shrunk).

    Returns
    -------
    aligned : array (n, channels, times) float32
        ``W.T @ x`` for every epoch: their covariances' mean becomes the identity.
    W : array (channels, channels)
        The whitening filter.
    """
    from pyriemann.estimation import Covariances

    C = Covariances(estimator="scm").transform(np.asarray(X, dtype=np.float64))
    # a little shrinkage towards the identity keeps every trial's matrix SPD (a rank-deficient montage, e.g.
    # average-referenced); pyriemann's OAS/Shrinkage estimators loop over the trials in Python (0.5 s for 360
    # trials of 6 channels here), this is one vectorised line
    n_ch = C.shape[-1]
    C += (1e-3 * np.trace(C, axis1=1, axis2=2) / n_ch)[:, None, None] * np.eye(n_ch)[None]
    W = _centre(C, metric).centers_["subject"].filters_
    return np.einsum("ij,njt->nit", W.T, X).astype(np.float32), W


def recentre(C: np.ndarray) -> np.ndarray:
    """One subject's SPD matrices re-centred to the identity (their Riemannian mean; ``TLCenter``)."""
    return _centre(C, "riemann").transform(C)


def recentring_filter(C: np.ndarray) -> np.ndarray:
    """The filter ``P`` of :func:`recentre` on ``C`` (``P.T @ C_i @ P`` re-centres), to apply to other matrices."""
    return _centre(C, "riemann").centers_["subject"].filters_


def preprocess_and_align(X: np.ndarray, pre, metric: str) -> np.ndarray:
    """Preprocessed epochs of one subject, aligned on that subject alone (``metric``: riemann, euclid, none)."""
    F = pre(X)
    return align_subject(F, metric)[0] if metric != "none" else F


@dataclass
class Reference:
    """One subject's alignment, frozen: computed on some of their epochs (labels unused), applied to others.

    ``signal``: the whitening filter of the preprocessed signals (``W.T @ x``, :func:`align_subject`);
    ``covariance``: for the Riemannian group pipeline, the re-centring filter of its xDAWN covariances
    (``P.T @ C @ P``, :func:`recentre`); None for networks. ``n_epochs``: how many epochs it was computed on.
    """

    signal: Optional[np.ndarray]
    covariance: Optional[np.ndarray]
    n_epochs: int

    def align(self, F: np.ndarray) -> np.ndarray:
        """Preprocessed epochs (n, channels, times) whitened by the frozen signal filter."""
        if self.signal is None:
            return F
        return np.einsum("ij,njt->nit", self.signal.T, F).astype(np.float32)

    def recentre(self, C: np.ndarray) -> np.ndarray:
        """Covariances (n, k, k) re-centred by the frozen filter."""
        if self.covariance is None:
            return C
        P = self.covariance
        return np.einsum("ji,njk,kl->nil", P, C, P)

    def to_arrays(self) -> dict:
        out = {}
        if self.signal is not None:
            out["signal"] = np.asarray(self.signal, dtype=np.float64)
        if self.covariance is not None:
            out["covariance"] = np.asarray(self.covariance, dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, n_epochs: int) -> "Reference":
        return cls(arrays.get("signal"), arrays.get("covariance"), int(n_epochs))
