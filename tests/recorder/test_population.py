"""A simulated population (``amplifier.simulate.subject``): subjects differ by their own spatial mixing, latency
and noise around class patterns they share, so that group learning can be tested where the truth is known;
``subject: null`` is the simulator as it was."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import roc_auc_score

from eegloop.cli.app import main
from eegloop.protocol import SimulateConfig, protocol_from_dict
from eegloop.recorder.population import subject_variation
from eegloop.recorder.simulator import simulate_epochs

SFREQ, MARGIN = 128, 1.0  # a margin long enough that the 1 Hz high-pass settles before the window
SUBJECTS = (1, 3)
TRIALS = [(1, b, b * 40 + k, "ab"[k % 2]) for b in range(1, 6) for k in range(40)]  # 200 epochs, 100 a class


def protocol(**simulate):
    return protocol_from_dict({
        "stimuli": {"folder": "x", "classes": {"a": "a", "b": "b"}},
        "paradigm": {"block_s": 10, "image_s": 0.5, "images_per_class": 20, "runs": 1},
        "amplifier": {"channels": 8, "sfreq": SFREQ, "simulate": simulate},
        "epochs": {"tmin": -0.1, "tmax": 0.6, "margin_s": MARGIN},
        "preprocessing": {"bandpass_hz": [1, 20], "notch_hz": None, "stft_window_ms": 200, "stft_hop_ms": 100}})


def filtered(es) -> np.ndarray:
    """1-20 Hz (the ERP's band), the margins cut off: (epochs, channels, times)."""
    sos = butter(4, [1, 20], btype="band", fs=SFREQ, output="sos")
    m = int(MARGIN * SFREQ)
    return sosfiltfilt(sos, es.data.astype(np.float64), axis=-1)[:, :, m:-m]


@pytest.fixture(scope="module")
def population():
    """Two subjects of one population (seed 0): filtered epochs, labels (1 = class b)."""
    out = {}
    for k in SUBJECTS:
        es = simulate_epochs(protocol(subject=k), trials=TRIALS)
        out[k] = (filtered(es), (es.labels == "b").astype(int))
    return out


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 10) -> tuple[float, int]:
    """(correlation, lag): the shift of ``b`` (samples) that best matches ``a``, both (channels, times)."""
    best = (-2.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[:, lag:], b[:, :b.shape[1] - lag]) if lag >= 0 else (a[:, :lag], b[:, -lag:])
        best = max(best, (float(np.corrcoef(x.ravel(), y.ravel())[0, 1]), lag))
    return best


def test_subjects_differ_by_their_own_mixing_and_latency_around_shared_patterns(population):
    """The class difference of each subject, unmixed by that subject's true mixing, is one shared pattern shifted
    by the subjects' true latency difference; as recorded (mixed) the two subjects' patterns differ."""
    va, vb = (subject_variation(k, 8) for k in SUBJECTS)
    assert not np.allclose(va.mixing, vb.mixing) and va.latency_s != vb.latency_s
    diff = {k: X[y == 1].mean(0) - X[y == 0].mean(0) for k, (X, y) in population.items()}
    a, b = diff[SUBJECTS[0]], diff[SUBJECTS[1]]
    raw_corr, _ = best_lag(b, a)
    corr, lag = best_lag(np.linalg.solve(vb.mixing, b), np.linalg.solve(va.mixing, a))
    assert corr > 0.85 and corr > raw_corr + 0.1, (corr, raw_corr)
    assert abs(lag - (vb.latency_s - va.latency_s) * SFREQ) <= 1  # the truth: B's responses that much later


def euclidean_alignment(X: np.ndarray) -> np.ndarray:
    """He & Wu 2019: each subject's epochs whitened by the inverse square root of its own mean covariance
    (pyriemann has no signal-level alignment, only covariance re-centring; three lines here)."""
    R = np.mean([x @ x.T / x.shape[1] for x in X], axis=0)
    w, V = np.linalg.eigh(R)
    return np.einsum("ij,njt->nit", (V / np.sqrt(w)) @ V.T, X)


def test_a_model_of_one_subject_transfers_to_another_after_alignment(population):
    """Shared class patterns: LDA on subject A's aligned ERP (50 ms means) scores subject B well above chance."""
    def features(X):
        X = euclidean_alignment(X)
        return X[:, :, :X.shape[2] // 6 * 6].reshape(len(X), X.shape[1], -1, 6).mean(-1).reshape(len(X), -1)

    (Xa, ya), (Xb, yb) = (population[k] for k in SUBJECTS)
    for (Xs, ys), (Xt, yt) in (((Xa, ya), (Xb, yb)), ((Xb, yb), (Xa, ya))):
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(features(Xs), ys)
        assert roc_auc_score(yt, lda.decision_function(features(Xt))) > 0.75


def test_no_subject_is_the_single_simulated_subject_of_before():
    """``subject: null`` (the default) and the field left out give the same samples; subject 0 is a subject of
    the population, not the seed's subject (sample-for-sample equality with the simulator before the field
    existed was checked once against the previous commit)."""
    short = TRIALS[:40]
    base = simulate_epochs(protocol(), trials=short)
    assert protocol(subject=None).amplifier.simulate == protocol().amplifier.simulate == SimulateConfig()
    assert np.array_equal(simulate_epochs(protocol(subject=None), trials=short).data, base.data)
    assert not np.allclose(simulate_epochs(protocol(subject=0), trials=short).data, base.data)
    again = simulate_epochs(protocol(subject=0), trials=short)  # a subject is reproducible
    assert np.array_equal(simulate_epochs(protocol(subject=0), trials=short).data, again.data)


@pytest.mark.parametrize("value", [-1, 2**32, 1.5, "one"])
def test_a_bad_subject_is_one_line_naming_the_field(tmp_path, capsys, value):
    import yaml

    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"stimuli": {"folder": "x"}, "amplifier": {"simulate": {"subject": value}}}))
    assert main(["protocol", "check", "--design-only", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eegloop: error:") and "amplifier.simulate.subject" in err and "\n" not in err
