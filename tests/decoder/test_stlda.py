"""The spatio-temporal LDA (eegloop.decoder.stlda): its covariance, a group's prior, its file."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, lfilter, sosfiltfilt

from eegloop.decoder.stlda import SpatioTemporalLDA, TemporalPrior, group_temporal_prior, window_means


def erp_epochs(subject: int, seed: int, n: int, latency: float = 0.3, c: int = 4, sfreq: int = 100,
               amp: float = 1.5):
    """One subject's epochs (n, c, 70 samples) of two classes differing by a bump at ``latency`` on one topography,
    in pink noise correlated across channels and time (as EEG's background is); the subject's own mixing of the
    channels, ``seed`` its epochs."""
    mix = np.eye(c) + 0.5 * np.random.default_rng([subject, 1]).normal(size=(c, c))
    r = np.random.default_rng([subject, seed])
    t = np.arange(70) / sfreq - 0.1
    pink = lfilter([0.05, -0.096, 0.0506, -0.0044], [1, -2.495, 2.017, -0.522], r.normal(size=(n, c, 400)), axis=-1)
    pink = sosfiltfilt(butter(4, [1, 20], btype="band", fs=sfreq, output="sos"), pink, axis=-1)[..., 200:270] * 10
    y = np.arange(n) % 2
    topo = np.array([1.0, -0.5, 0.8, 0.2])[:c]
    bump = np.exp(-0.5 * ((t - latency) / 0.05) ** 2)
    X = np.einsum("ij,njt->nit", mix, pink * 4 + y[:, None, None] * amp * topo[:, None] * bump)
    return X, y


def auc(y, s) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, s)


def test_the_kronecker_target_beats_identity_shrinkage_when_epochs_are_few():
    """With 60 epochs for 4 x 14 features in correlated noise, shrinking towards spatial x temporal keeps what
    Ledoit-Wolf's identity target throws away (scikit-learn's shrinkage LDA on the same window means)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, y = erp_epochs(0, 0, 60)
    Xt, yt = erp_epochs(0, 1, 600)
    st = SpatioTemporalLDA(width=5, target="kronecker").fit(X, y)
    lw = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(window_means(X, 5).reshape(60, -1), y)
    a_st = auc(yt, st.decision_function(Xt))
    a_lw = auc(yt, lw.decision_function(window_means(Xt, 5).reshape(600, -1)))
    assert a_st > a_lw + 0.05, (a_st, a_lw)
    assert 0 < st.shrinkage_ < 1 and st.coef_.shape == (2, 4 * 14)
    p = st.predict_proba(Xt)
    assert np.allclose(p.sum(1), 1) and (st.predict(Xt) == st.classes_[p.argmax(1)]).all()


def test_a_groups_prior_helps_a_subject_with_few_epochs_and_another_latency():
    """Five subjects (each its own mixing, noise and a latency within +-30 ms) give the time courses; a sixth with
    40 epochs decodes better with them than without."""
    members = []
    for s, lat in zip(range(10, 15), (0.27, 0.3, 0.33, 0.29, 0.31)):
        members.append(erp_epochs(s, 0, 300, latency=lat))
    prior = group_temporal_prior(members, width=5)
    assert prior.n_subjects == 5 and prior.basis.shape == (14, 2) and prior.time_cov.shape == (14, 14)
    gains = []
    for seed in range(20, 25):
        X, y = erp_epochs(seed, 0, 40, latency=0.32)
        Xt, yt = erp_epochs(seed, 1, 400, latency=0.32)
        gains.append(auc(yt, prior.estimator().fit(X, y).decision_function(Xt))
                     - auc(yt, SpatioTemporalLDA(width=5).fit(X, y).decision_function(Xt)))
    assert np.mean(gains) > 0.02, gains
    back = TemporalPrior.from_json(prior.to_json())
    np.testing.assert_allclose(back.basis, prior.basis, atol=1e-7)
    np.testing.assert_allclose(back.time_cov, prior.time_cov, atol=1e-7)


def rhythm_epochs(subject: int, seed: int, n: int, c: int = 4, sfreq: int = 100):
    """:func:`erp_epochs` with a strong 10 Hz rhythm of its own topography (random phase and amplitude in each
    epoch) under the response, as alpha is: two background components, each with its own spatial pattern."""
    X, y = erp_epochs(subject, seed, n, c=c, sfreq=sfreq)
    mix = np.eye(c) + 0.5 * np.random.default_rng([subject, 1]).normal(size=(c, c))  # erp_epochs' own
    r = np.random.default_rng([subject, seed, 2])
    t = np.arange(X.shape[-1]) / sfreq
    wave = np.sin(2 * np.pi * 10 * t[None] + r.uniform(0, 2 * np.pi, (n, 1))) * r.uniform(15, 40, (n, 1))
    topo = mix @ np.array([1.0, 0.9, -0.7, 0.4])[:c]
    return X + topo[None, :, None] * wave[:, None, :], y


def test_one_spatial_covariance_per_temporal_component_cancels_a_rhythm_with_its_own_topography():
    """A background of two components with their own topographies and spectra is not one Kronecker product:
    the group's prior with a spatial covariance per temporal component (``target="components"``, which its
    held-out folds choose over the single product) decodes new subjects with 60 epochs better than the single
    product. (The group's own spatio-temporal covariance is left out here: the next test.)"""
    import dataclasses

    members = [rhythm_epochs(s, 0, 300) for s in range(30, 35)]
    prior = dataclasses.replace(group_temporal_prior(members, width=5), noise_cov=None)
    gains = []
    for s in range(40, 45):
        X, y = rhythm_epochs(s, 0, 60)
        Xt, yt = rhythm_epochs(s, 1, 400)
        tuned = prior.estimator().fit(X, y)
        assert tuned.target_ == "components"  # chosen by the held-out folds' log-loss
        gains.append(auc(yt, tuned.decision_function(Xt))
                     - auc(yt, prior.estimator().set_params(target="kronecker").fit(X, y).decision_function(Xt)))
    assert np.mean(gains) > 0.03, gains


def test_the_groups_covariance_through_the_subjects_own_mixing_beats_a_covariance_per_component():
    """Every subject's background is the same sources through their own head (``rhythm_epochs``' mixing): the
    group's spatio-temporal covariance, pooled over five members and carried to a new subject by its fitted
    mixing (``target="transported"``: 16 numbers from the subject instead of 10 per component), decodes new
    subjects with 60 epochs better than the per-component target, and the held-out folds keep it."""
    members = [rhythm_epochs(s, 0, 300) for s in range(30, 35)]
    prior = group_temporal_prior(members, width=5)
    assert prior.noise_cov.shape == (4 * 14, 4 * 14)
    back = TemporalPrior.from_json(prior.to_json())
    np.testing.assert_allclose(back.noise_cov, prior.noise_cov, atol=1e-7)
    gains, chosen = [], []
    for s in range(40, 45):
        X, y = rhythm_epochs(s, 0, 60)
        Xt, yt = rhythm_epochs(s, 1, 400)
        tuned = back.estimator().fit(X, y)
        chosen.append(tuned.target_)
        gains.append(auc(yt, tuned.decision_function(Xt))
                     - auc(yt, back.estimator().set_params(target="components").fit(X, y).decision_function(Xt)))
    assert chosen.count("transported") >= 4, chosen
    assert np.mean(gains) > 0.003, gains


def line_residue(n: int, seed: int, amp: float, c: int = 4, sfreq: int = 100):
    """(n, c, 70): what a mains filter leaves of line noise, added at the sensors (never through the head): a 25 Hz
    sine of fixed amplitude and phase per channel, its phase against the epochs' onsets random."""
    r = np.random.default_rng([seed, 9])
    t = np.arange(70) / sfreq
    topo, phase = np.array([1.0, 0.3, 0.7, 0.5])[:c], np.array([0.0, 0.5, 1.3, 2.0])[:c]
    onset = r.uniform(0, 2 * np.pi, (n, 1, 1))
    return amp * topo[None, :, None] * np.sin(2 * np.pi * 25 * t[None, None] + phase[None, :, None] + onset)


def test_a_basis_given_by_hand_counts_by_its_span():
    """The class means are kept within the span of ``basis``: two bases of the same time courses, one orthonormal
    and one neither orthogonal nor of unit length, fit the same model."""
    X, y = erp_epochs(3, 0, 80)
    t = np.arange(14)
    course = np.exp(-0.5 * ((t - 8) / 2.0) ** 2)
    skewed = np.stack([3 * course, course + 0.5 * np.gradient(course)], 1)
    orthonormal, _ = np.linalg.qr(skewed)
    a = SpatioTemporalLDA(width=5, basis=skewed, target="kronecker").fit(X, y)
    b = SpatioTemporalLDA(width=5, basis=orthonormal, target="kronecker").fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="not finite"):
        SpatioTemporalLDA(width=5, basis=np.full((14, 2), np.nan)).fit(X, y)


def test_the_group_pools_what_its_members_heads_carry_not_their_sensors_noise():
    """Five members recorded with the same line-noise residue at their sensors: pooled as they are, the residue
    enters the group's background in each member's frame, and a new subject (without it) is less likely under the
    covariance carried to them than under the pool of the same members without the residue; pooled with each
    member's own excess left out (``counts`` given), most of that loss is gone."""
    from eegloop.decoder.headmix import Pool, TransportedTarget
    from eegloop.decoder.stlda import pooled_noise_cov

    c, w = 4, 14

    def centred(X, y):
        W = window_means(X, 5)
        return W - np.stack([W[y == k].mean(0) for k in (0, 1)])[y]

    def cov(X, y):
        F = centred(X, y).reshape(len(X), -1)
        return F.T @ F / len(F)

    members = [rhythm_epochs(s, 0, 300) for s in range(30, 35)]
    time_cov = group_temporal_prior(members, width=5).time_cov
    clean = [cov(X, y) for X, y in members]
    noisy = [cov(X + line_residue(300, s, 10.0), y) for s, (X, y) in zip(range(30, 35), members)]
    pools = {"clean": pooled_noise_cov(clean, c, w, time_cov, counts=[300] * 5),
             "as they are": pooled_noise_cov(noisy, c, w, time_cov),
             "excess left out": pooled_noise_cov(noisy, c, w, time_cov, counts=[300] * 5)}
    for s in range(40, 45):
        X, y = rhythm_epochs(s, 0, 100)
        St = cov(*rhythm_epochs(s, 1, 400))
        ll = {}
        for name, P in pools.items():
            M = TransportedTarget(centred(X, y), Pool(P)).matrix()
            ll[name] = -0.5 * (np.linalg.slogdet(M)[1] + np.trace(np.linalg.solve(M, St)))  # per held-out epoch
        assert ll["excess left out"] > ll["as they are"] + 0.5 and ll["clean"] > ll["excess left out"], (s, ll)


def _bump_and_background(seed: int):
    """Two classes' setting for the class-mean tests: 4 channels, 14 windows, 50 epochs a class, a bump's time
    course and its derivative (orthonormal, ``B``), a known Kronecker covariance (``sigma``, its Cholesky factor
    and inverse), and the generator that drew it, to draw the noise next."""
    r = np.random.default_rng(seed)
    c, w, n = 4, 14, 50
    t = np.arange(w) / w
    course = np.exp(-0.5 * ((t - 0.4) / 0.1) ** 2)
    B, _ = np.linalg.qr(np.stack([course, np.gradient(course)], 1))
    Ct = 0.8 ** np.abs(np.subtract.outer(np.arange(w), np.arange(w)))
    A = r.normal(size=(c, c))
    sigma = np.kron(A @ A.T + np.eye(c), Ct)
    return r, c, w, n, t, B, sigma, np.linalg.cholesky(sigma), np.linalg.inv(sigma)


def test_class_means_outside_the_groups_time_courses_are_shrunk_towards_them_not_dropped():
    """Two classes of 50 epochs whose difference is a bump (channels x windows, known covariance): within the
    group's time courses (the bump and its derivative) or 36 ms later than them. Kept only within the courses,
    a late subject's class difference is biased; estimated freely, it is noisy; kept within them plus what lies
    outside shrunk by the James-Stein factor, it is closer to the truth (Mahalanobis error, 300 draws) than
    either where the subject is late, and no farther than the projection where it is not."""
    from eegloop.decoder.stlda import _basis_means

    r, c, w, n, t, B, sigma, L, Si = _bump_and_background(3)
    errors, factors = {}, {}
    for late in (0.0, 0.12):
        half = 0.5 * np.outer([1.0, -0.5, 0.8, 0.2], np.exp(-0.5 * ((t - 0.4 - late) / 0.1) ** 2))
        truth = np.stack([-half, half])
        err, fac = {"projected": [], "free": [], "shrunk": []}, []
        for _ in range(300):
            m = truth + (L @ r.normal(size=(c * w, 2))).T.reshape(2, c, w) / np.sqrt(n)
            g = m.mean(0)
            shrunk, f = _basis_means(m, np.array([n, n]), B, sigma)
            fac.append(f)
            for name, e in (("projected", g + (m - g) @ B @ B.T), ("free", m), ("shrunk", shrunk)):
                d = ((e[1] - e[0]) - (truth[1] - truth[0])).ravel()
                err[name].append(d @ Si @ d)
        errors[late] = {k: float(np.mean(v)) for k, v in err.items()}
        factors[late] = float(np.mean(fac))
        assert np.allclose(shrunk.mean(0), m.mean(0))  # the grand mean is the subject's own
    on_time, late = errors[0.0], errors[0.12]
    assert on_time["shrunk"] <= 1.05 * on_time["projected"] and on_time["shrunk"] < 0.5 * on_time["free"], on_time
    assert late["shrunk"] < 0.9 * late["projected"] and late["shrunk"] < 0.5 * late["free"], late
    assert factors[0.0] < 0.15 < factors[0.12], factors


def test_a_course_and_its_derivative_keep_one_topography():
    """A response a little late is the group's course plus some of its derivative, with one topography on both:
    each class's coefficients on the two kept at rank one are closer to the truth (Mahalanobis error, 300
    draws) than the full projection, a noise-free one comes back unchanged, and with three classes they are
    still deviations from the mean of the class means."""
    from eegloop.decoder.stlda import _basis_means

    r, c, w, n, t, B, sigma, L, Si = _bump_and_background(5)
    half = 0.5 * np.outer([1.0, -0.5, 0.8, 0.2], (np.exp(-0.5 * ((t - 0.43) / 0.1) ** 2)) @ B @ B.T)
    truth = np.stack([-half, half])
    kept, _ = _basis_means(truth, np.array([n, n]), B, sigma, rank=1)
    assert np.allclose(kept, truth)
    err = {1: [], None: []}
    for _ in range(300):
        m = truth + (L @ r.normal(size=(c * w, 2))).T.reshape(2, c, w) / np.sqrt(n)
        for rank in err:
            e, _ = _basis_means(m, np.array([n, n]), B, sigma, rank=rank)
            d = ((e[1] - e[0]) - (truth[1] - truth[0])).ravel()
            err[rank].append(d @ Si @ d)
    assert np.mean(err[1]) < 0.8 * np.mean(err[None]), {k: np.mean(v) for k, v in err.items()}
    three = truth[[0, 1, 1]] + r.normal(size=(3, c, w))  # more than two classes: still deviations from their mean
    kept, _ = _basis_means(three, np.array([n, n, n]), B, sigma, rank=1)
    assert np.allclose(kept.mean(0), three.mean(0))


def test_a_prior_knows_its_courses_through_json_and_a_hand_made_one_keeps_its_basis_whole():
    from dataclasses import replace

    prior = group_temporal_prior([rhythm_epochs(s, 0, 200) for s in (30, 31)], width=5)
    assert prior.courses == 1 and prior.basis.shape[1] == 2 and prior.estimator().basis_rank == 1
    assert TemporalPrior.from_json(prior.to_json()).courses == 1
    old = {k: v for k, v in prior.to_json().items() if k != "courses"}  # stored before courses were written
    assert TemporalPrior.from_json(old).courses == 1
    assert TemporalPrior.from_json({**prior.to_json(), "courses": 7}).courses is None
    assert replace(prior, courses=None).estimator().basis_rank is None
    est = prior.estimator()
    del est.basis_rank  # as a model saved before the parameter existed
    assert est.get_params()["basis_rank"] is None


@pytest.mark.parametrize("target", ["kronecker", "components", "transported"])
def test_the_targets_whitening_is_the_inverse_square_root_of_its_matrix(target):
    """What chooses ``lam`` (the whitened folds) and what is fitted (the dense target) are the same matrix."""
    X, y = rhythm_epochs(50, 0, 40)
    prior = group_temporal_prior([rhythm_epochs(s, 0, 200) for s in (30, 31)], width=5)
    est = prior.estimator().set_params(target=target)
    Xc = window_means(X, 5) - window_means(X, 5).mean(0)
    tgt = est._target(Xc, target)
    c, w = Xc.shape[1:]
    W = tgt.whitener()(np.eye(c * w).reshape(c * w, c, w)).T  # column i: the whitening of unit vector i
    np.testing.assert_allclose(W @ tgt.matrix() @ W.T, np.eye(c * w), atol=1e-6)
    np.testing.assert_allclose(tgt.logdet(), np.linalg.slogdet(tgt.matrix())[1], rtol=1e-6)


def test_the_folds_choose_the_single_product_where_the_background_is_one():
    """Noise that is exactly one spatial x temporal product, on 24 channels: a covariance per component only adds
    estimation noise, and the held-out folds' log-loss says so."""
    r = np.random.default_rng(5)
    c, t, n = 24, 40, 150
    A, B = r.normal(size=(c, c)), np.linalg.cholesky(np.exp(-np.subtract.outer(range(t), range(t)) ** 2 / 20.0)
                                                     + 1e-3 * np.eye(t))
    X = A @ r.normal(size=(n, c, t)) @ B.T
    y = np.arange(n) % 2
    X[y == 1, :3, 15:25] += 0.5
    st = SpatioTemporalLDA(4).fit(X, y)
    assert st.target_ == "kronecker" and 0 < st.shrinkage_ < 1


def test_components_fall_back_to_the_kronecker_target_below_two_epochs_per_channel():
    """Too few epochs for a spatial covariance per component: the same model as the single product."""
    X, y = rhythm_epochs(51, 0, 7, c=4)
    a = SpatioTemporalLDA(5, target="components").fit(X, y)
    b = SpatioTemporalLDA(5, target="kronecker").fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_)
    assert a.target_ == "kronecker"
    with pytest.raises(ValueError, match="target is 'toeplitz'"):
        SpatioTemporalLDA(5, target="toeplitz").fit(X, y)


@pytest.mark.parametrize("bad", [None, "x", {}, {"width": 5, "time_cov": [[1.0]], "basis": [[1.0], [0.0]]},
                                 {"width": 0, "time_cov": [[1.0]], "basis": [[1.0]]},
                                 {"width": 5, "time_cov": [[float("nan")]], "basis": [[1.0]]},
                                 {"width": 5, "time_cov": "[[1.0]]", "basis": [[1.0]]},
                                 {"width": 5, "time_cov": 3.0, "basis": [[1.0]]},
                                 {"width": float("inf"), "time_cov": [[1.0]], "basis": [[1.0]]},
                                 {"width": 5, "time_cov": [[1.0, 0.0], [0.0, 1.0]], "basis": [[2.0], [0.0]]}])
def test_a_stored_prior_that_does_not_fit_together_is_none(bad):
    assert TemporalPrior.from_json(bad) is None


@pytest.mark.parametrize("noise", ["x", [[1.0]], [[1.0, 2.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 1.0]],
                                   [[float("nan"), 0.0], [0.0, 1.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
def test_a_stored_noise_covariance_that_does_not_fit_is_dropped_not_the_prior(noise):
    """Not a symmetric positive definite (channels x windows) square: the prior loads without it."""
    good = {"width": 5, "time_cov": [[1.0, 0.0], [0.0, 1.0]], "basis": [[1.0], [0.0]], "n_subjects": 2}
    assert TemporalPrior.from_json({**good, "noise_cov": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                                                          [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]}
                                   ).noise_cov.shape == (4, 4)
    back = TemporalPrior.from_json({**good, "noise_cov": noise})
    assert back is not None and back.noise_cov is None


def test_bad_shapes_are_refused_before_fitting():
    X, y = erp_epochs(0, 0, 40)
    with pytest.raises(ValueError, match="two classes"):
        SpatioTemporalLDA(5).fit(X, np.zeros(40, int))
    with pytest.raises(ValueError, match="temporal_prior is"):
        SpatioTemporalLDA(5, temporal_prior=np.eye(3)).fit(X, y)
    with pytest.raises(ValueError, match="basis is"):
        SpatioTemporalLDA(5, basis=np.ones((3, 1))).fit(X, y)
    with pytest.raises(ValueError, match="noise_prior is"):
        SpatioTemporalLDA(5, noise_prior=np.eye(5)).fit(X, y)
    with pytest.raises(ValueError, match="needs a noise_prior"):
        SpatioTemporalLDA(5, target="transported").fit(X, y)
    for rank in (0, 1.5, True, "1"):
        with pytest.raises(ValueError, match="basis_rank is"):
            SpatioTemporalLDA(5, basis_rank=rank).fit(X, y)


def test_lda_st_is_a_method_saved_and_loaded_with_only_trusted_types(tmp_path):
    """``lda_st`` in the registry: a pipeline saved with skops, loaded back with eegloop's trusted types (same
    probabilities), and three classes decoded."""
    from eegloop.decoder.methods import get_method, is_sklearn
    from eegloop.decoder.pipelines import fit_pipeline, load_pipeline, predict_pipeline, save_pipeline

    assert is_sklearn("lda_st") and get_method("lda_st").representation == "time"
    X, y = erp_epochs(3, 0, 90)
    y = np.arange(90) % 3
    X[y == 2, 0] += 0.5
    pipe = fit_pipeline("lda_st", X, y, 100.0, 3)
    save_pipeline(pipe, tmp_path / "m.skops")
    back = load_pipeline(tmp_path / "m.skops")
    np.testing.assert_allclose(predict_pipeline(back, X, 3), predict_pipeline(pipe, X, 3))
    assert predict_pipeline(pipe, X, 3).shape == (90, 3)
