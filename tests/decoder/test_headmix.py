"""A group's background through a subject's own head (eegloop.decoder.headmix): the fitted mixing, and what the head
does not carry."""
from __future__ import annotations

import numpy as np
from scipy.linalg import eigvalsh
from test_stlda import line_residue, rhythm_epochs

from eegloop.decoder.headmix import Pool, TransportedTarget, fit_mixing
from eegloop.decoder.stlda import group_temporal_prior, window_means


def test_the_fitted_mixing_recovers_a_subjects_head():
    """Epochs drawn from ``(T kron I) P (T kron I)^T``: :func:`fit_mixing` finds a ``T`` that carries ``P`` to
    their covariance (up to what leaves ``P`` unchanged: the carried covariance is what is compared)."""
    r = np.random.default_rng(8)
    c, w, n = 3, 6, 20000
    A = r.normal(size=(c * w, c * w))
    P = A @ A.T / (c * w) + 0.1 * np.eye(c * w)
    T = np.eye(c) + 0.6 * r.normal(size=(c, c))
    TI = np.kron(T, np.eye(w))
    truth = TI @ P @ TI.T
    F = r.multivariate_normal(np.zeros(c * w), truth, size=n)
    That = fit_mixing(F.T @ F / n, P, c, w)
    TIh = np.kron(That, np.eye(w))
    np.testing.assert_allclose(TIh @ P @ TIh.T, truth, atol=0.05 * np.abs(truth).max())


def test_noise_added_at_the_sensors_is_the_subjects_own_excess_and_does_not_bend_its_fitted_head():
    """Line-noise residue at the sensors is not the group's background through the subject's head. Fitted as if
    it were (:func:`fit_mixing` on the epochs as they are), the mixing bends to explain it; the transported target
    finds it as the subject's own excess (two directions: the sine's two phases, far beyond what the model allows)
    and fits the mixing without it: the carried covariance stays that of the same epochs without the residue.
    The target's whitening, matrix and log-determinant agree with the excess in them."""
    prior = group_temporal_prior([rhythm_epochs(s, 0, 300) for s in range(30, 35)], width=5)
    pool, c, w = Pool(prior.noise_cov), 4, 14

    def centred(X, y):
        W = window_means(X, 5)
        return W - np.stack([W[y == k].mean(0) for k in (0, 1)])[y]

    def carried(T):
        TI = np.kron(T, np.eye(w))
        return TI @ pool.P @ TI.T

    def distance(A, B):  # affine-invariant (Riemannian) distance between covariances
        return float(np.sqrt(np.sum(np.log(eigvalsh(A, B)) ** 2)))

    for s in range(40, 45):
        X, y = rhythm_epochs(s, 0, 100)
        noisy = centred(X + line_residue(100, s, 10.0), y)
        clean = carried(TransportedTarget(centred(X, y), pool).T)
        F = noisy.reshape(100, -1)
        bent = distance(carried(fit_mixing(F.T @ F / 100, pool, c, w)), clean)
        target = TransportedTarget(noisy, pool)
        kept = distance(carried(target.T), clean)
        assert len(target.excess) == 2 and target.excess.min() > 5, (s, target.excess)
        assert kept < 1.0 and bent > 3 * kept, (s, kept, bent)
        Wh = target.whitener()(np.eye(c * w).reshape(c * w, c, w)).T
        np.testing.assert_allclose(Wh @ target.matrix() @ Wh.T, np.eye(c * w), atol=1e-6)
        np.testing.assert_allclose(target.logdet(), np.linalg.slogdet(target.matrix())[1], rtol=1e-6)
