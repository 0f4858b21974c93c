"""The registry of decoding methods, and the one loader of training epochs (cheap: nothing is trained)."""
from __future__ import annotations

import numpy as np
import torch
import pytest

from eegloop.decoder import load_training_epochs
from eegloop.decoder.methods import (METHODS, PAPER_NAMES, build_model, build_network, distils, feature_key, get_method,
                                     is_network, members, is_sklearn, method_names, stored_kind, student)
from eegloop.paradigm.schedule import make_schedule
from eegloop.recorder.simulator import simulate_epochs
from eegloop.stimuli import feedback_cue_shas
from simkit import fake_set, sim_protocol


def test_the_registry_says_what_each_method_is():
    names = method_names()
    assert names == METHODS and names[0] == "auto" and len(set(names)) == len(names)
    assert set(PAPER_NAMES) == set(names)
    assert {m for m in names if is_sklearn(m)} == {"lda_windowed", "logreg_windowed", "riemann", "logreg_power",
                                                    "logreg_pca", "cebra_knn", "vote", "lda_st"}
    assert members("vote") == ("lda_windowed", "logreg_windowed", "riemann") and members("riemann") == ()
    assert {m for m in names if is_network(m)} == {"kd_stft", "kd_erp", "kd_wavelet", "cnn_stft", "cnn_image",
                                                    "lstm", "conv1d", "eegnet", "shallow_fbcsp"}
    assert [m for m in names if distils(m)] == ["auto", "kd_stft", "kd_erp", "kd_wavelet"]
    assert not distils("no_such_method") and not is_sklearn("no_such_method")
    assert [feature_key(m) for m in ("logreg_power", "lda_windowed", "conv1d", "lstm", "kd_wavelet", "cnn_image")] == [
        "time_raw", "time", "series", "time", "wavelet", "image"]
    # a distilling network trained without soft targets is registered as its plain counterpart
    assert stored_kind("kd_erp", distilled=False) == "cnn_erp" and stored_kind("kd_erp", distilled=True) == "kd_erp"
    assert stored_kind("riemann", distilled=False) == "riemann" and student("stft") == "kd_stft"
    # folds side by side for anything that trains a network (CEBRA too), one after another for linear pipelines
    assert [get_method(m).parallel_folds for m in ("auto", "kd_erp", "cebra_knn", "riemann")] == [True, True, True, False]
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


def test_the_registry_builds_networks_that_round_trip_through_their_config():
    net = build_network("kd_stft", np.zeros((2, 4, 3, 16), np.float32), 3)
    again = build_model(net.get_config())
    assert type(again) is type(net) and again.get_config() == net.get_config()
    assert build_network("conv1d", np.zeros((2, 4, 64), np.float32), 2).get_config()["kind"] == "conv1d"
    for name in ("eegnet", "shallow_fbcsp"):  # braindecode's, wrapped with the configuration eegloop saves
        net = build_network(name, np.zeros((2, 4, 60), np.float32), 3)
        again = build_model(net.get_config())
        assert type(again) is type(net) and again.get_config() == net.get_config()
        assert again(torch.zeros(2, 4, 60)).shape == (2, 3)
    with pytest.raises(ValueError):
        build_network("riemann", np.zeros((2, 4, 64)), 2)  # a pipeline has no network
    assert hasattr(get_method("lda_windowed").builder(250.0, 4, 3, 20), "predict_proba")


def test_training_epochs_leave_out_the_excluded_images(tmp_path):
    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    proto = sim_protocol(feedback={"cue_share": 0.1})
    stim = fake_set(4, 30)
    es = simulate_epochs(proto, make_schedule(proto, stim))
    es.images = np.array([f"{i % 30}.png" for i in range(len(es))])  # which of its class's images each showed
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.add_stimuli(stim)  # the epochs' images by content (sha256), as a visit stores them
    import_epochset(db, "S1", proto, es, source="sim")
    every = load_training_epochs(db, "S1")
    assert len(every.es) == len(es) and every.n_excluded == 0 and every.session_ids == [1]
    cues = feedback_cue_shas(proto, stim)  # the visit's choice: the smallest sha256 of each class
    assert len(cues) == 4 * 3 and feedback_cue_shas(sim_protocol(feedback={"cue_share": 0.0}), stim) == set()
    held = load_training_epochs(db, "S1", protocol=proto, exclude_images=cues, need_images=True)
    shown = int(np.isin(every.es.images, list(cues)).sum())
    assert held.n_excluded == shown > 0 and len(held.es) == len(es) - shown
    assert not set(held.es.images.tolist()) & cues and held.protocol is proto


def test_riemann_covariances_are_pyriemanns_computed_over_the_stack(tmp_path):
    """The riemann pipeline's xDAWN covariances (XdawnOASCovariances, OAS over the whole stack at once) are
    pyriemann's per-epoch scikit-learn OAS, and the pipeline saves and loads as a trusted model."""
    from pyriemann.estimation import XdawnCovariances
    from sklearn.covariance import oas

    from eegloop.decoder.pipelines import load_pipeline, make_pipeline_for, save_pipeline
    from eegloop.decoder.xdawncov import XdawnOASCovariances, oas_stack

    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 5, 90)) * rng.uniform(0.5, 20, (1, 5, 1))  # channels of unequal power
    X[:3] = 0.0  # all-zero epochs: scikit-learn's zero denominator (shrinkage 1)
    y = np.repeat([0, 1, 2], 20)
    for stack in (X, X[:, :1]):  # one channel: scikit-learn's own branch (the variance)
        np.testing.assert_allclose(oas_stack(stack), np.stack([oas(x.T)[0] for x in stack]), rtol=1e-12, atol=1e-9)
    theirs = XdawnCovariances(nfilter=2, estimator="oas").fit(X, y).transform(X)
    ours = XdawnOASCovariances(nfilter=2, estimator="oas").fit(X, y).transform(X)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12 * np.abs(theirs).max())
    pipe = make_pipeline_for("riemann", 128.0, 5, 3, len(X)).fit(X, y)
    assert isinstance(pipe.steps[0][1], XdawnOASCovariances)
    save_pipeline(pipe, tmp_path / "r.skops")
    np.testing.assert_array_equal(load_pipeline(tmp_path / "r.skops").predict_proba(X), pipe.predict_proba(X))
