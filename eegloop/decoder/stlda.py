"""Spatio-temporal LDA: shrinkage towards a structured space x time covariance, and a group's prior on time courses.

An ERP decoder reads each channel's mean in short windows (``channels x windows`` features). The background EEG
that hides the response is correlated in space (volume conduction) and in time (its 1/f spectrum): neighbouring
windows share most of their noise. Shrinkage LDA as usually fitted (Ledoit-Wolf towards a multiple of the
identity: ``lda_windowed``) forgets the second of these whenever it has few epochs to estimate the covariance
from, which is exactly when calibration must be short. This estimator shrinks the sample covariance of the
class-centred features towards the Kronecker product of a spatial and a temporal covariance (Beltrachini, von
Ellenrieder & Muravchik 2013, IEEE Trans. Signal Process. 61:1766; the same idea as the block-Toeplitz LDA of
Sosulski & Tangermann 2022, J. Neural Eng. 19:066006)::

    Sigma = (1 - lam) * S + lam * kron(C_space, C_time)

``C_space`` (channels x channels) and ``C_time`` (windows x windows) are estimated from all features at once
(``channels`` resp. ``windows`` times more data per entry than ``S``), so the target keeps both correlations.
``lam`` is the value of a grid whose covariance gives the class-centred features of held-out contiguous folds
the highest Gaussian likelihood (one generalised eigendecomposition per fold: every ``lam`` costs nothing more).

A group model can lend two things that do not depend on a subject's head (the spatial mixing differs from person
to person; the time courses of the brain's responses and of its background far less):

- ``temporal_prior``: the group's ``C_time``, in place of the subject's own estimate;
- ``basis``: the group's time courses of the class differences (windows x k, e.g. the response and its
  derivative, which absorbs a subject's own latency). The subject's class means are then kept only within
  those time courses, on every channel: with ``k`` courses a class difference costs ``channels x k`` numbers to
  estimate from the subject's epochs instead of ``channels x windows``.

The target can keep more than one spatial covariance (``target="components"``): the background is
not one spatial pattern with one spectrum (alpha has its own topography, the 1/f background another), so a
single Kronecker product misses the structure that matters most to a decoder, the direction along which a
strong rhythm can be cancelled. The temporal eigenvectors ``u_j`` of ``C_time`` (the subject's or a group's; for
a stationary background, close to its frequency components) each get the subject's own spatial covariance
``S_j``, a sum of Kronecker products (de Munck et al. 2004; Bijma et al. 2005)::

    target = sum_j kron(S_j, u_j u_j^T)

``channels^2 / 2`` numbers per component, each estimated from every epoch. On 2 minutes of a simulated subject
(100 epochs, 4 channels, 15 windows) the tuned group model scored 0.976 instead of 0.903 AUC (mean of 10
subjects); the subject's own model 0.80 instead of 0.72; on the real N170/P300 subjects within .02 of the single
product, mostly above (BENCHMARKS.md). But on many channels a covariance per component can fit the background
better and classify worse (128 channels, 2000 epochs, 40 classes: 0.945 on inner folds against the single
product's 0.973, though its held-out likelihood was the higher), so by default (``"auto"``) the held-out folds
that choose the intensity (by likelihood) also choose the target: the one whose discriminant gives their
epochs' classes the lower log-loss.

A group can also lend its background's whole spatio-temporal covariance (``noise_prior``, on the group's grid:
``channels x windows`` squared), pooled over its members after bringing each into one reference head. A subject's
background is, to first order, the group's seen through the subject's own spatial mixing ``T`` (head shape, cap
placement: the model behind Euclidean alignment, He & Wu 2019)::

    target = (T kron I) noise_prior (T kron I)^T      (target="transported")

``T`` (``channels^2`` numbers) is the maximum-likelihood fit to the subject's class-centred epochs, so a few
minutes of the subject lend the group's full covariance, correlations between windows and channels included,
where the other targets keep only what their structure allows. What the head does not carry (noise added at
the sensors) the subject keeps as its own: the few directions in which its epochs vary far more than the
transported model allows get their own variance, and ``T`` is fitted without them (:mod:`.headmix`). On
2 minutes of a simulated subject (4 channels, 15 windows, 10 subjects, each held out) the tuned group model
scored 0.990 instead of 0.976, 0.992 with the sensors' excess; the folds' log-loss decides whether it is used
(``"auto"``).

The class means are kept within the group's time courses (``basis``); what lies outside them is the subject's
own (a response later than the group's by more than a derivative absorbs) or noise, and is kept in the
proportion its size exceeds noise (positive-part James-Stein, ``_basis_means``): 0.992 instead of 0.989 for a
simulated subject 34 ms later than its group. Within the courses, each course and its derivative are one
response a little earlier or later, so on every channel they carry one topography: a class's (channels x
courses) coefficients are kept at rank ``basis_rank`` (one per course; :class:`TemporalPrior` passes it) in the
fit's own metric, 8 numbers becoming 5 at 4 channels (0.9932 -> 0.9936 over the ten simulated subjects at 2
minutes; 0.9698 -> 0.9727 for the least even head).

Written here because the reference implementation of the block-Toeplitz variant (``toeplitzlda``) pins
``numpy<2`` and a compiled helper package; scikit-learn's LDA takes no structured shrinkage target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from .headmix import Pool, TransportedTarget, fit_mixing, sqrt_inv

__all__ = ["SpatioTemporalLDA", "TemporalPrior", "group_temporal_prior", "window_means", "temporal_basis",
           "SHRINKAGE_GRID", "fit_mixing", "pooled_noise_cov"]

#: the shrinkage intensities the folds choose from
SHRINKAGE_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
_RIDGE = 0.01  # added to C_time's diagonal (which is scaled to mean 1): baseline-corrected windows make it singular
#: the shrinkage targets: one Kronecker product, one spatial covariance per temporal component, or a group's
#: spatio-temporal covariance through the subject's own spatial mixing (needs ``noise_prior``)
TARGETS = ("auto", "components", "kronecker", "transported")
#: a group keeps its members' pooled spatio-temporal covariance only up to this many features (channels x windows):
#: features^2 numbers in the group model's JSON, and the mixing's fit grows as channels^4 or faster (9 members of
#: 1000 epochs, 2 cores of an AMD EPYC: pooling 0.23 s at 4 x 15 features, 0.81 s at 8 x 16, 6.7 s at 16 x 16; a
#: tuned fit on 100 epochs 0.03 s, 0.07 s, 0.43 s; at 32 x 16, before members' excess was fitted, 54 s and 14 s)
MAX_NOISE_PRIOR_FEATURES = 256
#: ``target="components"`` estimates a channels x channels covariance per temporal component from the epochs
#: alone: below this many epochs per channel it would be singular, and the Kronecker target is used instead (so
#: for ``"transported"``, whose mixing is fitted on the epochs, and for a group's pooled covariance: per feature)
MIN_EPOCHS_PER_CHANNEL = 2


def window_means(X: np.ndarray, width: int) -> np.ndarray:
    """(n, channels, times) -> (n, channels, windows): the mean of each ``width`` samples (a tail shorter than a
    window is dropped)."""
    X = np.asarray(X, dtype=np.float64)
    w = max(1, int(width))
    n = max(1, X.shape[-1] // w)
    return X[..., :n * w].reshape(X.shape[0], X.shape[1], n, -1).mean(-1)


def temporal_basis(deviations, k: int = 1, derivative: bool = True, noise=None) -> np.ndarray:
    """The time courses shared by several subjects' class differences: (windows, k or 2k), orthonormal columns.

    Parameters
    ----------
    deviations : list of np.ndarray
        Per subject, its class means minus their mean (classes, channels, windows), each scaled as the caller
        wants the subjects weighed (e.g. spatially whitened).
    k : int
        How many time courses (the leading right singular vectors of all subjects' deviations stacked).
    derivative : bool
        Add each course's derivative: a subject whose response comes a little earlier or later than the group's
        is, to first order, the course plus a multiple of its derivative.
    noise : np.ndarray | None
        (windows, windows): the background's temporal covariance. Given, the courses are those with the most
        class difference *relative to the noise* (the deviations whitened by it before the decomposition, the
        courses coloured back after): class means of a few hundred epochs still carry the background's slow
        drifts, which hold most of the raw power.
    """
    rows = np.concatenate([np.asarray(d, dtype=np.float64).reshape(-1, np.shape(d)[-1]) for d in deviations])
    if noise is not None:
        C = normalised_time_cov(noise)
        wv, V = np.linalg.eigh(C)
        wv = np.maximum(wv, 1e-12 * wv.max())
        rows = rows @ ((V / np.sqrt(wv)) @ V.T)
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    B = vt[:max(1, int(k))]
    if noise is not None:
        B = B @ ((V * np.sqrt(wv)) @ V.T)
    if derivative and B.shape[1] > 1:
        B = np.concatenate([B, np.gradient(B, axis=1)])
    q, _ = np.linalg.qr(B.T)
    return q


def _time_cov(Xc: np.ndarray) -> np.ndarray:
    """Class-centred (n, c, w) -> (w, w) temporal covariance, scaled to mean diagonal 1, ridged."""
    C = np.tensordot(Xc, Xc, axes=([0, 1], [0, 1])) / max(1, Xc.shape[0] * Xc.shape[1])
    return normalised_time_cov(C)


def normalised_time_cov(C: np.ndarray) -> np.ndarray:
    """A temporal covariance scaled to mean diagonal 1 with :data:`_RIDGE` added to it."""
    C = np.asarray(C, dtype=np.float64)
    w = len(C)
    C = C / max(np.trace(C) / w, 1e-300)
    return C + _RIDGE * np.eye(w)


def _centre(X: np.ndarray, yi: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    means = np.stack([X[yi == j].mean(0) for j in range(k)])
    return X - means[yi], means


def _space_cov(Xc: np.ndarray) -> np.ndarray:
    """Class-centred (n, c, w) -> (c, c) spatial covariance, with a tiny ridge (a flat channel stays invertible)."""
    n, c, w = Xc.shape
    Cs = np.tensordot(Xc, Xc, axes=([0, 2], [0, 2])) / max(1, n * w)
    return Cs + 1e-9 * np.trace(Cs) / c * np.eye(c)


class _KronTarget:
    """kron(Cs, Ct): one spatial and one temporal covariance."""

    def __init__(self, Cs: np.ndarray, Ct: np.ndarray):
        self.Cs, self.Ct = Cs, Ct

    def whitener(self):
        # kron(Cs, Ct)^(-1/2) = kron(Cs^(-1/2), Ct^(-1/2)) on C-order (channel, window) features
        Ws, Wt = sqrt_inv(self.Cs), sqrt_inv(self.Ct)
        return lambda X: (Ws @ X @ Wt).reshape(len(X), -1)  # Ws, Wt symmetric

    def matrix(self) -> np.ndarray:
        return np.kron(self.Cs, self.Ct)

    def logdet(self) -> float:
        return len(self.Ct) * np.linalg.slogdet(self.Cs)[1] + len(self.Cs) * np.linalg.slogdet(self.Ct)[1]


class _ComponentTarget:
    """sum_j kron(S_j, u_j u_j^T): the temporal eigenvectors ``u_j`` of ``Ct``, each with its own spatial
    covariance ``S_j`` estimated from the class-centred epochs ``Xc`` (n, c, w) projected on it."""

    def __init__(self, Xc: np.ndarray, Ct: np.ndarray):
        _, U = np.linalg.eigh(Ct)
        Yt = np.ascontiguousarray((Xc @ U).transpose(2, 1, 0))  # (w, c, n): each component's channels
        self._set(Yt @ Yt.transpose(0, 2, 1) / max(1, Xc.shape[0]), U)

    @classmethod
    def of(cls, S: np.ndarray, U: np.ndarray) -> "_ComponentTarget":
        """The target with the spatial covariances ``S`` (w, c, c) along the columns of ``U``."""
        t = cls.__new__(cls)
        t._set(S, U)
        return t

    def _set(self, S: np.ndarray, U: np.ndarray) -> None:
        self.U = U
        c = S.shape[1]
        tr = np.trace(S, axis1=1, axis2=2)
        tr = np.maximum(tr, 1e-12 * max(tr.max(), 1e-300))  # a component without variance still gets a ridge
        self.S = S + (1e-9 * tr / c)[:, None, None] * np.eye(c)  # a tiny ridge, as _space_cov's

    def whitener(self):
        Wj = np.stack([sqrt_inv(s) for s in self.S])  # in the temporal eigenbasis the target is block-diagonal
        U = self.U
        return lambda X: ((Wj @ (X @ U).transpose(2, 1, 0)).transpose(2, 1, 0) @ U.T).reshape(len(X), -1)

    def logdet(self) -> float:
        return float(np.sum(np.linalg.slogdet(self.S)[1]))  # U is orthogonal

    def matrix(self) -> np.ndarray:
        c, w = self.S.shape[1], self.U.shape[0]
        # entry (a t, b s) = sum_j S_j[a, b] U[t, j] U[s, j], as one matrix product: (c c w, w) @ (w, w)
        T = (self.S.transpose(1, 2, 0)[:, :, None, :] * self.U).reshape(-1, w) @ self.U.T  # (c, c, t, s)
        return T.reshape(c, c, w, w).transpose(0, 2, 1, 3).reshape(c * w, c * w)


class SpatioTemporalLDA(ClassifierMixin, BaseEstimator):
    """LDA on window means with a space x time structured shrinkage target (scikit-learn classifier).

    Parameters
    ----------
    width : int
        Samples per window (the input is (n, channels, times)).
    shrinkage : float | None
        ``lam`` in [0, 1]; None: chosen on held-out folds of the training epochs (:data:`SHRINKAGE_GRID`).
    temporal_prior : np.ndarray | None
        (windows, windows): ``C_time`` from elsewhere (a group model); None: the subject's own.
    basis : np.ndarray | None
        (windows, k): the class means are kept only within these time courses (a group model's); None: as
        estimated.
    basis_rank : int | None
        Each class's deviation within ``basis`` is a (channels, k) matrix of coefficients; given, it is kept at
        this rank (the best approximation where its noise is white), the rest dropped: a group's basis holds each
        course with its derivative, one response shifted in time, whose coefficients share one topography
        (:meth:`TemporalPrior.estimator` passes one per course). None: all of it. Without ``basis``, unused.
    n_folds : int
        Contiguous folds for choosing ``lam``.
    target : {"auto", "components", "kronecker", "transported"}
        The shrinkage target: one spatial covariance per temporal eigenvector of ``C_time`` (see the module's
        notes), the single product ``kron(C_space, C_time)``, ``noise_prior`` through the subject's spatial mixing
        (never either of those two with fewer than :data:`MIN_EPOCHS_PER_CHANNEL` epochs per channel), or
        (``auto``) whichever of them classifies held-out folds with the lower log-loss (``target_``;
        ``transported`` only with a ``noise_prior``). A model saved before the choice existed used the single
        product.
    noise_prior : np.ndarray | None
        (channels x windows, channels x windows): a group's spatio-temporal covariance of the background
        (:class:`TemporalPrior`'s ``noise_cov``), for ``target="transported"``; None: no such target.
    """

    # a model saved before these parameters existed lacks the attribute: get_params, repr and clone read these
    noise_prior = None
    basis_rank = None

    def __init__(self, width: int = 1, shrinkage=None, temporal_prior=None, basis=None, n_folds: int = 5,
                 target: str = "auto", noise_prior=None, basis_rank=None):
        self.width = width
        self.basis_rank = basis_rank
        self.shrinkage = shrinkage
        self.temporal_prior = temporal_prior
        self.basis = basis
        self.n_folds = n_folds
        self.target = target
        self.noise_prior = noise_prior

    # -- the covariance -----------------------------------------------------------------------------------------
    def _targets(self, n: int, c: int) -> tuple[str, ...]:
        """The targets this fit may use: "components" and "transported" only with enough epochs per channel, the
        latter only with a ``noise_prior``."""
        wanted = getattr(self, "target", "kronecker")  # a model saved before the choice used the single product
        names = ("components", "kronecker") if wanted == "auto" else (wanted,)
        if wanted == "auto" and self._noise_prior() is not None:
            names += ("transported",)
        if n < MIN_EPOCHS_PER_CHANNEL * c:
            names = tuple(t for t in names if t not in ("components", "transported")) or ("kronecker",)
        return names

    def _basis(self, w: int) -> Optional[np.ndarray]:
        """``basis`` checked against the epochs' ``w`` windows, as orthonormal columns spanning the same time
        courses (a group's already are; a basis given by hand need not be, and the class means are projected on
        its span), or None."""
        if self.basis is None:
            return None
        B = np.asarray(self.basis, dtype=np.float64)
        if B.ndim != 2 or B.shape[0] != w:
            raise ValueError(f"basis is {B.shape}, the epochs have {w} windows")
        if not np.isfinite(B).all():
            raise ValueError("basis has values that are not finite numbers")
        U, sv, _ = np.linalg.svd(B, full_matrices=False)
        return U[:, sv > 1e-10 * max(sv.max(initial=0.0), 1e-300)]

    def _basis_rank(self) -> Optional[int]:
        r = getattr(self, "basis_rank", None)  # a model saved before the rank existed kept all of it
        if r is None:
            return None
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"basis_rank is {r!r}, not a whole number >= 1 (or None)")
        return int(r)

    def _noise_prior(self):
        P = getattr(self, "noise_prior", None)  # a model saved before noise priors existed has none
        return None if P is None else np.asarray(P, dtype=np.float64)

    def _target(self, Xc: np.ndarray, name: str, pool: Optional[Pool] = None):
        """The target ``name`` estimated on ``Xc``; ``pool``: ``noise_prior`` with its derived matrices, when the
        caller builds several transported targets (a fit: one per fold and one at the end)."""
        if name == "transported":
            return TransportedTarget(Xc, pool if pool is not None else Pool(self._noise_prior()))
        Ct = normalised_time_cov(self.temporal_prior) if self.temporal_prior is not None else _time_cov(Xc)
        return _ComponentTarget(Xc, Ct) if name == "components" else _KronTarget(_space_cov(Xc), Ct)

    def _choose(self, Xc3: np.ndarray, yi: np.ndarray, means: np.ndarray, B: Optional[np.ndarray] = None,
                pool: Optional[Pool] = None) -> tuple[float, str]:
        """The intensity (of the grid, or ``shrinkage``) under which held-out contiguous folds of the
        class-centred features are likeliest, for each target; of the targets, the one whose discriminant (at
        its intensity) gives the held-out epochs' classes the lower log-loss.

        ``Xc3`` are the features centred on their class means ``means`` (classes, channels, windows); ``yi`` the
        class indices; ``B`` the orthonormal basis (:meth:`_basis`) the folds' class means are kept within. The
        likelihood picks the intensity (it needs no labels beyond the centring and is the
        steadier of the two); the target is chosen on what the model is for: a covariance per component fits
        the background better on many channels and still classifies worse (BENCHMARKS.md). A group's transported
        covariance is kept unless another target's log-loss is lower by more than one standard error.
        """
        n, c, w = Xc3.shape
        names = self._targets(n, c)
        grid = np.asarray(SHRINKAGE_GRID if self.shrinkage is None else [float(self.shrinkage)])
        # each fold costs an eigendecomposition of (channels x windows)^2 per target: 3 folds beyond 512 features
        # (128 channels x 14 windows, 2000 epochs, 40 classes, idle, 2 cores of an AMD EPYC: the whole fit 3.9 s
        # with both targets, 2.1-2.2 s with one)
        k = int(min(self.n_folds if c * w <= 512 else 3, n // 2))
        if len(grid) * len(names) == 1 or k < 2:
            return (float(grid[0]) if len(grid) == 1 else 0.5), names[0]
        raw = Xc3 + means[yi]
        edges = np.linspace(0, n, k + 1).astype(int)
        ll = np.zeros((len(names), len(grid)))
        loss = np.zeros((len(names), len(grid), k))  # per fold: the transported target's tolerance below
        for f, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            tr = np.r_[0:a, b:n]
            m_tr = np.stack([raw[tr][yi[tr] == j].mean(0) if np.any(yi[tr] == j) else means[j]
                             for j in range(len(means))])
            if B is not None:
                m_tr = m_tr.mean(0) + (m_tr - m_tr.mean(0)) @ B @ B.T
            for i, name in enumerate(names):
                target = self._target(Xc3[tr], name, pool)
                whiten = target.whitener()
                Ztr, Zte = whiten(Xc3[tr]), whiten(Xc3[a:b])
                d, V = np.linalg.eigh(Ztr.T @ Ztr / len(tr))
                q = (Zte @ V) ** 2  # held-out features in the eigenbasis: Sigma(lam) is diagonal there
                P, mV = whiten(raw[a:b]) @ V, whiten(m_tr) @ V
                for j, lam in enumerate(grid):
                    ev = np.maximum((1 - lam) * d + lam, 1e-12)
                    # the whitening's Jacobian (log det of the target) makes the two targets comparable
                    ll[i, j] += -0.5 * ((b - a) * (np.sum(np.log(ev)) + target.logdet()) + np.sum(q / ev))
                    if len(names) > 1:
                        sc = P @ (mV / ev).T - 0.5 * np.sum(mV ** 2 / ev, axis=1)
                        sc -= sc.max(1, keepdims=True)
                        logp = sc - np.log(np.exp(sc).sum(1, keepdims=True))
                        loss[i, j, f] -= np.sum(logp[np.arange(b - a), yi[a:b]])
        best = ll.argmax(1)
        L = loss[np.arange(len(names)), best]  # (targets, folds)
        i = int(np.argmin(L.sum(1)))
        if "transported" in names:
            # the group's covariance takes c^2 numbers from the subject, the others c^2 per component or more:
            # it is kept unless another target's log-loss is lower by more than the folds resolve (one standard
            # error of the paired per-fold differences' sum). Without the tolerance, one simulated subject of ten
            # kept the per-component target by 19.3 to 19.8 and scored 0.934 instead of 0.951 AUC.
            t = names.index("transported")
            d = L[t] - L[i]
            if d.sum() <= np.sqrt(k) * np.std(d, ddof=1):
                i = t
        return float(grid[best[i]]), names[i]

    # -- scikit-learn -------------------------------------------------------------------------------------------
    def fit(self, X, y):
        X = window_means(X, self.width)
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise ValueError("SpatioTemporalLDA needs epochs of at least two classes")
        Xc3, means = _centre(X, yi, k)
        class_means = means
        n, c, w = X.shape
        if getattr(self, "target", "kronecker") not in TARGETS:
            raise ValueError(f"target is {self.target!r}, not one of {', '.join(TARGETS)}")
        if self.temporal_prior is not None and np.shape(self.temporal_prior) != (w, w):
            raise ValueError(f"temporal_prior is {np.shape(self.temporal_prior)}, the epochs have {w} windows")
        rank = self._basis_rank()
        P = self._noise_prior()
        if P is not None and P.shape != (c * w, c * w):
            raise ValueError(f"noise_prior is {P.shape}, the epochs have {c} channels x {w} windows")
        if getattr(self, "target", "kronecker") == "transported" and P is None:
            raise ValueError("target='transported' needs a noise_prior (a group's spatio-temporal covariance)")
        B = self._basis(w)
        pool = Pool(P) if P is not None and "transported" in self._targets(n, c) else None
        lam, self.target_ = self._choose(Xc3, yi, class_means, B, pool)
        F = Xc3.reshape(n, -1)
        sigma = (1 - lam) * (F.T @ F / n) + lam * self._target(Xc3, self.target_, pool).matrix()
        if B is not None:
            means, self.outside_basis_ = _basis_means(means, np.bincount(yi, minlength=k), B, sigma, rank)
        M = means.reshape(k, -1)
        self.coef_ = np.linalg.solve(sigma, M.T).T
        self.intercept_ = -0.5 * np.sum(M * self.coef_, axis=1) + np.log(1.0 / k)
        self.shrinkage_ = float(lam)
        self.n_features_in_ = c * w
        return self

    def decision_function(self, X):
        F = window_means(X, self.width).reshape(len(X), -1)
        s = F @ self.coef_.T + self.intercept_
        return s[:, 1] - s[:, 0] if len(self.classes_) == 2 else s

    def predict_proba(self, X):
        F = window_means(X, self.width).reshape(len(X), -1)
        s = F @ self.coef_.T + self.intercept_
        s -= s.max(1, keepdims=True)
        p = np.exp(s)
        return p / p.sum(1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]


def _basis_means(means: np.ndarray, counts: np.ndarray, B: np.ndarray, sigma: np.ndarray,
                 rank: Optional[int] = None):
    """Class means kept within a group's time courses ``B`` (windows, b), and what lies outside them shrunk by the
    positive-part James-Stein factor: (means, the factor per class).

    Each class's deviation from the grand mean (the mean of the class means) splits into its projection on the
    courses (on every channel) and the rest. The rest is the subject's own: a response later than the group's by
    more than its derivative absorbs, a component the group lacks, or noise. Its squared Mahalanobis length
    (``sigma``: the fit's covariance) is compared with what noise alone would give it (the class mean's variance
    through the same projection), and it is kept in the proportion ``max(0, 1 - noise / length)``: none of it
    where it is no larger than noise, most of it once the epochs resolve it. Discarding it outright (as before)
    cost a simulated subject whose response came 34 ms late 0.989 instead of 0.992 AUC at 2 minutes. With
    ``rank``, each class's coefficients on the courses (channels x b) are kept at that rank (:func:`_low_rank`).
    """
    k = len(means)
    grand = means.mean(0)
    dev = (means - grand).reshape(k, -1)
    shape, p = means.shape, dev.shape[1]
    coef = (means - grand) @ B  # (k, channels, b)
    rest = dev - (coef @ B.T).reshape(k, -1)
    G = np.kron(np.eye(shape[1]), B)
    S = G.T @ sigma @ G  # the coefficients' noise covariance, up to each class's variance factor
    if rank is not None and rank < min(coef.shape[1:]):
        coef = _low_rank(coef, S, rank)
    on = (coef @ B.T).reshape(k, -1)
    # R = I - G G^T (G = kron(I, B), orthonormal columns) is a symmetric projector; the rest of a class mean's noise
    # has covariance v R sigma R with v its variance factor below, so its expected squared length is
    # v tr(sigma^-1 R sigma R) = v (p - 2 tr(G^T G) + tr((G^T sigma^-1 G)(G^T sigma G))): no p x p product
    noise_trace = float(p - 2 * G.shape[1] + np.sum((G.T @ np.linalg.solve(sigma, G)) * S.T))
    inv_n = 1.0 / np.maximum(counts, 1)
    var = (1 - 2.0 / k) * inv_n + inv_n.sum() / k ** 2  # of (class mean - mean of class means), per unit sigma
    length = np.einsum("kp,kp->k", rest, np.linalg.solve(sigma, rest.T).T)
    factor = np.clip(1 - var * noise_trace / np.maximum(length, 1e-300), 0.0, 1.0)
    kept = on + factor[:, None] * rest
    kept -= kept.mean(0)  # deviations from the mean of the class means still (with two classes they already are)
    return (grand.reshape(1, -1) + kept).reshape(shape), factor


def _low_rank(D: np.ndarray, S: np.ndarray, rank: int) -> np.ndarray:
    """Each of ``D``'s matrices (k, channels, b) at rank ``rank`` where its noise (covariance ``S`` of a matrix's
    row-major entries, the same for all) is white: ``S``'s partial traces over courses and over channels (its
    Kronecker factors, up to scale, where it is a Kronecker product; an approximation otherwise) whiten rows and
    columns, once for all matrices; the SVDs are truncated there and coloured back."""
    c, b = D.shape[1:]
    S4 = S.reshape(c, b, c, b)
    Wc, Wb = sqrt_inv(np.einsum("ajbj->ab", S4)), sqrt_inv(np.einsum("iaib->ab", S4))
    U, s, Vt = np.linalg.svd(Wc @ D @ Wb, full_matrices=False)
    kept = (U[..., :rank] * s[:, None, :rank]) @ Vt[:, :rank]
    return np.linalg.solve(Wc, kept) @ np.linalg.inv(Wb)


# -- a group's prior -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TemporalPrior:
    """What a group model lends a new subject's :class:`SpatioTemporalLDA`: the time courses of the class
    differences and the background's temporal covariance, on the group's grid (rate, window).

    Attributes
    ----------
    width : int
        Samples per window of the group's grid.
    time_cov : np.ndarray
        (windows, windows): the members' class-centred temporal covariance, pooled (mean diagonal 1).
    basis : np.ndarray
        (windows, b): orthonormal time courses of the members' class differences (and their derivatives).
    n_subjects : int
        How many members it was estimated from.
    noise_cov : np.ndarray | None
        (channels x windows, channels x windows): the members' class-centred spatio-temporal covariance, each
        brought into one reference head, its own sensors' excess left out, before pooling
        (:func:`pooled_noise_cov`), mean diagonal 1; None beyond :data:`MAX_NOISE_PRIOR_FEATURES` features (or in a
        group model from before it was kept).
    courses : int | None
        How many time courses ``basis`` holds, each with its derivative (:func:`temporal_basis`): the class
        means within it keep one topography per course (``basis_rank``). None: a basis of another make, kept
        whole.
    """

    width: int
    time_cov: np.ndarray
    basis: np.ndarray
    n_subjects: int
    noise_cov: Optional[np.ndarray] = None
    courses: Optional[int] = None

    def estimator(self) -> SpatioTemporalLDA:
        """An unfitted :class:`SpatioTemporalLDA` that uses this prior."""
        return SpatioTemporalLDA(self.width, temporal_prior=self.time_cov, basis=self.basis,
                                 noise_prior=self.noise_cov, basis_rank=self.courses)

    def to_json(self) -> dict:
        d = {"width": int(self.width), "time_cov": np.round(self.time_cov, 8).tolist(),
             "basis": np.round(self.basis, 8).tolist(), "n_subjects": int(self.n_subjects)}
        if self.noise_cov is not None:
            d["noise_cov"] = np.round(self.noise_cov, 8).tolist()
        if self.courses is not None:
            d["courses"] = int(self.courses)
        return d

    @classmethod
    def from_json(cls, d: Optional[dict]) -> Optional["TemporalPrior"]:
        """The prior stored in a group model's JSON; None when it has none (a model from before priors) or the
        stored arrays do not fit together."""
        if not isinstance(d, dict):
            return None
        try:
            C = np.asarray(d["time_cov"], dtype=np.float64)
            B = np.asarray(d["basis"], dtype=np.float64)
            width, n = int(d["width"]), int(d.get("n_subjects", 0))
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        if C.ndim != 2 or B.ndim != 2:
            return None
        w = len(C)
        if (width < 1 or C.shape != (w, w) or B.shape[0] != w or not 0 < B.shape[1] <= w
                or not (np.isfinite(C).all() and np.isfinite(B).all())
                or not np.allclose(B.T @ B, np.eye(B.shape[1]), atol=1e-4)):  # the class means are projected on it
            return None
        # a prior stored before "courses" was written was built by group_temporal_prior: courses and derivatives
        courses = d.get("courses", B.shape[1] // 2)
        if isinstance(courses, bool) or not isinstance(courses, int) or not 1 <= courses <= B.shape[1]:
            courses = None
        return cls(width, C, B, n, _noise_cov_from_json(d.get("noise_cov"), w), courses)


def _noise_cov_from_json(value, w: int) -> Optional[np.ndarray]:
    """A stored ``noise_cov``, or None when absent or not a symmetric positive definite (channels x w) square."""
    if value is None:
        return None
    try:
        P = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if (P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] % w or P.shape[0] > MAX_NOISE_PRIOR_FEATURES
            or not np.isfinite(P).all() or not np.allclose(P, P.T, atol=1e-6)):
        return None
    if np.linalg.eigvalsh(P).min() <= 0:
        return None
    return P


def _per_component(P: np.ndarray, U: np.ndarray, c: int) -> np.ndarray:
    """A spatio-temporal covariance (c w, c w) kept only within each temporal eigenvector ``u_j`` (columns of ``U``):
    ``sum_j kron(S_j, u_j u_j^T)``, ``S_j`` its spatial covariance along ``u_j`` (``target="components"``'s form)."""
    w = len(U)
    return _ComponentTarget.of(np.einsum("atbs,tj,sj->jab", P.reshape(c, w, c, w), U, U), U).matrix()


#: added to the pooled covariance's diagonal (mean 1): enough to invert it where baseline-corrected windows make it
#: singular, far below the background left beside a strong rhythm (0.01, :data:`_RIDGE`, drowned the directions
#: a decoder cancels the rhythm along: 0.886 instead of 0.912 AUC on a test's 10 Hz rhythm)
_POOL_RIDGE = 1e-6
#: the pooled covariance's shrinkage towards its per-component form: chosen from these by leaving members out
POOL_SHRINKAGE_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def pooled_noise_cov(covs: Sequence[np.ndarray], c: int, w: int, time_cov: np.ndarray,
                     iterations: int = 3, counts: Optional[Sequence[int]] = None) -> np.ndarray:
    """Several subjects' spatio-temporal covariances (c w, c w) pooled in one reference head.

    Each is brought into the frame of the current pooled estimate by the inverse of its fitted spatial mixing
    (:func:`fit_mixing`) and averaged, a few times over (the first subject's head is the first frame; which frame
    does not matter to a new subject, whose own mixing is fitted to the pool). Each is scaled to mean diagonal 1
    first. With ``counts`` (the epochs behind each covariance) each member is fitted as a new subject's
    transported target is, its own excess found and left out (:class:`TransportedTarget`: noise added at that
    member's sensors is not the background every head carries, and a new subject's excess is found as its own):
    on the simulated population (10 subjects, 2 minutes, each held out) 0.993 instead of 0.992 mean AUC. A pool of
    few epochs for its ``(c w)^2`` entries is noisy: it is shrunk towards its own per-component form (the
    temporal eigenvectors of ``time_cov``, :func:`_per_component`) by the intensity of :data:`POOL_SHRINKAGE_GRID`
    under which each member, left out of the pool, is likeliest (one member: nothing to leave out, its
    per-component form; nor can its own excess be told from its background, the pool being itself); last
    :data:`_POOL_RIDGE` on the diagonal (baseline-corrected windows make it singular).
    """
    norm = lambda S: S / max(np.trace(S) / len(S), 1e-300)  # noqa: E731
    covs = [norm(np.asarray(S, dtype=np.float64)) for S in covs]
    eye = np.eye(c * w)
    ref, mapped = covs[0] + _POOL_RIDGE * eye, covs
    counts = [None] * len(covs) if counts is None else list(counts)
    for _ in range(iterations):
        mapped, pool = [], Pool(ref)
        for S, n in zip(covs, counts):
            if n is None:
                T, head = fit_mixing(S, pool, c, w), S
            else:
                t = TransportedTarget.of_cov(S, n, pool, c, w)
                T, head = t.T, t.head
            TI = np.kron(np.linalg.inv(T), np.eye(w))
            mapped.append(TI @ head @ TI.T)
        ref = norm(np.mean(mapped, 0))
        ref = (ref + ref.T) / 2 + _POOL_RIDGE * eye
    _, U = np.linalg.eigh(normalised_time_cov(time_cov))
    grid = np.asarray(POOL_SHRINKAGE_GRID)
    alpha = 1.0
    if len(mapped) > 1:
        ll = np.zeros(len(grid))
        total = np.sum(mapped, 0)
        for S in mapped:
            rest = (total - S) / (len(mapped) - 1)
            rest = (rest + rest.T) / 2
            struct = _per_component(rest, U, c)
            for i, a in enumerate(grid):
                Pa = (1 - a) * rest + a * struct + _POOL_RIDGE * eye
                sign, logdet = np.linalg.slogdet(Pa)
                ll[i] += -np.inf if sign <= 0 else -0.5 * (logdet + np.trace(np.linalg.solve(Pa, S)))
        alpha = float(grid[int(np.argmax(ll))])
    pooled = norm(np.mean(mapped, 0))
    pooled = (pooled + pooled.T) / 2
    return (1 - alpha) * pooled + alpha * _per_component(pooled, U, c) + _POOL_RIDGE * eye


def group_temporal_prior(members: Sequence[tuple], width: int, k: int = 1) -> TemporalPrior:
    """The prior of a group from its members' preprocessed epochs.

    Parameters
    ----------
    members : list of (X, y)
        Per member, its epochs on the group's grid, preprocessed (n, channels, times), and their class indices.
    width : int
        Samples per window.
    k : int
        Time courses of the class differences kept (each with its derivative: :func:`temporal_basis`).

    Each member's class means enter the time courses spatially whitened by its own class-centred covariance, so
    that a member with large or noisy signals does not outweigh the others, and its class-centred epochs enter
    the temporal covariance scaled to unit power for the same reason. Up to :data:`MAX_NOISE_PRIOR_FEATURES`
    features, their spatio-temporal covariances are pooled too (:func:`pooled_noise_cov`), when every member has
    :data:`MIN_EPOCHS_PER_CHANNEL` epochs per channel and all of them together as many per feature.
    """
    cov, devs, full = 0.0, [], []
    for X, y in members:
        W = window_means(X, width)
        y = np.asarray(y)
        present = np.unique(y)
        if len(present) < 2:
            continue
        yi = np.searchsorted(present, y)
        Xc, means = _centre(W, yi, len(present))
        w = W.shape[2]
        Ct = np.tensordot(Xc, Xc, axes=([0, 1], [0, 1]))
        cov = cov + Ct / max(np.trace(Ct) / w, 1e-300)
        devs.append(np.einsum("ij,kjt->kit", sqrt_inv(_space_cov(Xc)), means - means.mean(0)))
        c = Xc.shape[1]
        if c * w <= MAX_NOISE_PRIOR_FEATURES and len(Xc) >= MIN_EPOCHS_PER_CHANNEL * c:  # enough for its mixing
            F = Xc.reshape(len(Xc), -1)
            full.append((F.T @ F / len(F), len(F)))
    if not devs:
        raise ValueError("no member has epochs of two classes: no temporal prior")
    cov = np.asarray(cov) / len(devs)
    # the pool needs as many epochs per feature as a subject's per-component target needs per channel
    enough = len(full) == len(devs) and sum(n for _, n in full) >= MIN_EPOCHS_PER_CHANNEL * c * w
    noise = pooled_noise_cov([S for S, _ in full], c, w, cov, counts=[n for _, n in full]) if enough else None
    return TemporalPrior(int(width), cov, temporal_basis(devs, k=k, noise=cov), len(devs), noise, max(1, int(k)))
