"""Causal preprocessing: decode an epoch the moment its window ends, with the same function offline and online."""
from __future__ import annotations

import numpy as np

from eegloop.decoder.preprocessing import Preprocessor
from eegloop.protocol import protocol_from_dict
from eegloop.recorder.epocher import Epocher, epoch_window


def _proto(tmp_path, causal=True, right=0.0):
    return protocol_from_dict({"stimuli": {"folder": str(tmp_path)}, "amplifier": {"channels": 2, "sfreq": 100},
                               "epochs": {"tmin": 0.0, "tmax": 0.5, "margin_s": 0.25, "right_margin_s": right},
                               "preprocessing": {"bandpass_hz": [1, 40], "notch_hz": None,
                                                 "causal": causal}})


def test_causal_output_depends_on_the_past_only(tmp_path):
    p = _proto(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 75)).astype(np.float32)  # 0.25 s before onset + the 0.5 s window, no right margin
    for causal in (True, False):
        pre = Preprocessor.from_protocol(p.preprocessing.__class__(bandpass_hz=[1, 40], causal=causal), p.epochs,
                                         100.0, -0.25).with_representation("time", standardize=False)
        y = pre(x)
        later = x.copy()
        later[..., 60:] += 100.0  # change the signal from sample 60 on (the window's 35th sample)
        y2 = pre(later)
        if causal:  # the first 35 samples of the window are untouched; the rest change
            assert np.array_equal(y[..., :35], y2[..., :35]) and not np.allclose(y[..., 35:], y2[..., 35:])
        else:  # a zero-phase filter looks ahead: earlier samples change too
            assert not np.allclose(y[..., :35], y2[..., :35])
    # saved with the model, restored for online decoding
    pre = Preprocessor.from_protocol(p.preprocessing, p.epochs, 100.0, -0.25)
    assert pre.causal and Preprocessor.from_dict(pre.to_dict()) == pre
    old = pre.to_dict()
    del old["causal"]  # a model saved before the option existed is zero-phase
    assert Preprocessor.from_dict(old).causal is False


def test_an_epoch_completes_when_its_window_ends(tmp_path):
    p = _proto(tmp_path)
    win = epoch_window(p.epochs, 100.0)
    assert (win.start, win.length) == (-25, 75)  # 0.25 s before, nothing after tmax
    both = epoch_window(_proto(tmp_path, right=None).epochs, 100.0)
    assert (both.start, both.length) == (-25, 100)  # right_margin_s null: margin_s on both sides
    ep = Epocher(p.epochs, 100.0, 2, [0, 1], [], ["A", "B"], buffer_s=5.0)
    ep.add_marker({"event": "block_start", "run": 1, "block": 1, "trials": 1}, 100.1, 1)
    ep.add_marker({"event": "stim_on", "run": 1, "block": 1, "trial": 1, "class": "a"}, 100.5, 1)
    t = 100.0 + np.arange(200) / 100
    x = np.random.default_rng(1).standard_normal((2, 200)).astype(np.float32)
    ep.append(x[:, :99], t[:99])  # up to 100.98: the window [100.5, 101.0) lacks its last sample
    assert ep.cut_ready() == []
    ep.append(x[:, 99:100], t[99:100])  # 100.99, the window's last sample: the epoch is whole, nothing after it
    (e,) = ep.cut_ready()
    assert e.data.shape == (2, 75) and e.trial == 1


def test_causal_decoder_learns_the_simulated_subject(tmp_path):
    from eegloop.decoder import evaluate
    from eegloop.paradigm.schedule import make_schedule
    from eegloop.recorder.simulator import simulate_epochs

    from simkit import fake_set, sim_protocol

    p = sim_protocol(epochs={"right_margin_s": 0.0}, preprocessing={"causal": True})
    es = simulate_epochs(p, make_schedule(p, fake_set(4, 30)))
    assert es.data.shape[-1] == int(0.75 * 250)  # 0.25 s before the onset, the 0.5 s window, nothing after
    rep = evaluate(es, p, methods=["lda_windowed"], n_folds=3)
    s = rep.summary()["lda_windowed"]
    assert s["balanced_accuracy"] > 2 * rep.chance["chance_balanced_accuracy"], rep.table()


def test_a_model_refuses_epochs_cut_unlike_its_training(tmp_path):
    """A zero-phase model given epochs without their right margin would compute other numbers silently."""
    import pytest

    from eegloop.decoder import OnlineDecoder, save_model
    from eegloop.decoder.models import ResidualCNN
    from eegloop.errors import EegloopError

    p = _proto(tmp_path, causal=False, right=None)  # 0.25 s on both sides: 100 samples at 100 Hz
    pre = Preprocessor.from_protocol(p.preprocessing, p.epochs, 100.0, -0.25).with_representation("erp")
    shape = pre.output_shape(2, 100)
    model = ResidualCNN(2, 2, shape[1], shape[2])
    path = save_model(model, pre, {"a": "a", "b": "b"}, ["A", "B"], tmp_path / "m.safetensors", {}, n_times=100)
    dec = OnlineDecoder(path)
    x = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    assert set(dec.predict(x)) == {"a", "b"}
    with pytest.raises(EegloopError, match="trained on epochs of 100"):
        dec.predict(x[:, :75])  # the same window, cut with right_margin_s 0
