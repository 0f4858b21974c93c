"""Issue 12: every class in the online model, automatic model selection, artifact rejection, calibration,
Table 1's baselines and statistics across subjects."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from eegloop.decoder import OnlineDecoder, quick_train
from eegloop.decoder.evaluation import across_subjects, evaluate, features_for, inner_validation, reject_artifacts
from eegloop.decoder.fitting import calibrate_bias
from eegloop.decoder.pipelines import load_pipeline
from eegloop.decoder.preprocessing import Preprocessor
from eegloop.decoder.selection import select_model
from eegloop.errors import EegloopError
from eegloop.paradigm.schedule import make_schedule
from eegloop.protocol import load_protocol, protocol_from_dict
from eegloop.recorder.simulator import simulate_epochs
from eegloop.stimuli import Stimulus, StimulusSet
from eegloop.types import EpochSet
from simkit import fake_set
from simkit import sim_protocol as _sim_protocol

REPO = Path(__file__).resolve().parents[2]


def sim_protocol(order="interleaved", **kw):  # shorter training than the decoder tests
    return _sim_protocol(order, 15, **kw)


def schedule_epochset(proto, stim) -> EpochSet:
    """An EpochSet laid out exactly as the protocol's schedule (labels, runs, blocks), data irrelevant."""
    trials = make_schedule(proto, stim).trials
    return EpochSet(np.zeros((len(trials), 1, 4), np.float32), [t.class_id for t in trials], 100.0, 0.0, ["C1"],
                    [t.run for t in trials], [t.block for t in trials], [1] * len(trials), dict(stim.classes))


@pytest.mark.parametrize("split", ["run", "block"])
def test_ferrante2023_every_class_is_in_the_fit_set(split):
    proto = load_protocol(REPO / "protocols" / "ferrante2023.yaml")
    stim = fake_set(40, 50)
    es = schedule_epochset(proto, stim)
    inner = inner_validation(es, np.arange(len(es)), split, seed=0)
    assert set(es.labels[inner.fit]) == set(es.class_ids)  # all 40 classes train the online model
    assert set(es.labels[inner.val]) == set(es.class_ids)  # and early stopping watches all of them
    assert inner.optimistic and "optimistic" in inner.how  # blocked design: same blocks on both sides
    assert not set(inner.fit) & set(inner.val) and len(inner.fit) + len(inner.val) == len(es)


def test_interleaved_design_holds_out_whole_blocks():
    proto = load_protocol(REPO / "protocols" / "interleaved.yaml")
    es = schedule_epochset(proto, fake_set(len(proto.stimuli.classes) or 40, proto.paradigm.images_per_class))
    inner = inner_validation(es, np.arange(len(es)), "block", seed=0)
    assert not inner.optimistic and inner.how == "held-out whole blocks"
    assert not set(es.blocks[inner.fit]) & set(es.blocks[inner.val])
    assert set(es.labels[inner.fit]) == set(es.labels[inner.val]) == set(es.class_ids)


def test_auto_selection_scores_every_candidate_and_refits_the_winner(tmp_path):
    proto = sim_protocol(decoder={"select_budget_s": 120})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    feats = features_for(es, proto, ["auto"])
    sel = select_model(es, proto, feats, seed=0)
    assert set(sel.candidates) == set(proto.decoder.candidates)
    scored = {n: c for n, c in sel.candidates.items() if "score" in c}
    assert sel.winner in scored and len(scored[sel.winner]["folds"]) == sel.n_folds == proto.decoder.inner_folds
    assert scored[sel.winner]["score"] >= max(c["score"] for c in scored.values()) - 0.1
    assert "chosen" in sel.describe() or sel.winner in sel.describe()
    # a budget too small for any network: the networks are listed as skipped, with the reason
    tight = select_model(es, protocol_from_dict({**proto.to_dict(), "decoder": {"select_budget_s": 0.01}}),
                         feats, seed=0)
    assert "skipped" in tight.candidates["kd_stft"] and "select_budget_s" in tight.candidates["kd_stft"]["skipped"]
    assert tight.winner in ("vote", "lda_windowed", "logreg_windowed", "riemann")
    # the vote's members were fitted for it: compared too, never "skipped" for a budget they did not spend
    assert all("score" in tight.candidates[m] for m in ("vote", "lda_windowed", "logreg_windowed", "riemann"))


def test_the_vote_is_scored_from_its_members_folds_exactly_as_it_fits():
    """auto scores ``vote`` from its members' inner-fold probabilities, with no fit of its own: the same numbers
    as the soft VotingClassifier itself fitted on each fold; a member a shape rules out is left out of it."""
    from eegloop.decoder.fitting import fit_method
    from eegloop.decoder.folds import inner_validation, make_folds
    from eegloop.decoder.scoring import scores

    proto = sim_protocol(decoder={"candidates": ["riemann", "vote", "lda_windowed", "logreg_windowed"]})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    feats = features_for(es, proto, ["auto"])
    sel = select_model(es, proto, feats, seed=0)
    folds = make_folds(es, proto.training.split, proto.decoder.inner_folds, 0)
    own = []
    for k, (tr, te) in enumerate(folds):
        fit, val = inner_validation(es, tr, proto.training.split, k)
        vote = fit_method("vote", es, feats, fit, val, proto, seed=k)
        assert [name for name, _ in vote.model.estimators] == ["lda_windowed", "logreg_windowed", "riemann"]
        own.append(scores(es.y[te], vote.predict(feats["time"][te], len(es.classes)))["balanced_accuracy"])
    assert sel.metric == "balanced_accuracy"
    np.testing.assert_allclose(sel.candidates["vote"]["folds"], own, atol=1e-4)  # stored rounded to 4 places
    # more classes than xDAWN covariances can take: riemann is ruled out, of the vote as of the comparison
    from eegloop.decoder.pipelines import make_pipeline_for, skip_reason

    assert skip_reason("riemann", 4, 17) and skip_reason("vote", 4, 17) is None
    assert [name for name, _ in make_pipeline_for("vote", 250.0, 4, 17).estimators] == ["lda_windowed",
                                                                                          "logreg_windowed"]
    # its members' fits were counted once, under their own names
    assert sel.candidates["vote"]["seconds"] == pytest.approx(sum(sel.candidates[m]["seconds"] for m in
                                                                  ("lda_windowed", "logreg_windowed", "riemann")),
                                                              abs=0.05)


@pytest.mark.parametrize("method", ["lda_windowed", "vote"])
def test_quick_train_pipeline_decodes_online_like_offline(tmp_path, method):
    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    proto = sim_protocol(decoder={"model": method})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    import_epochset(db, "S1", proto, es, source="sim")
    tm = quick_train(db, "S1", progress=False)
    assert tm.path.suffix == ".skops" and tm.metrics["method"] == method
    assert stat.S_IMODE(os.stat(tm.path).st_mode) == 0o600
    assert tm.metrics["heldout"]["top1"] > tm.metrics["chance_top1"] + 0.1  # held-out whole blocks
    dec = OnlineDecoder(tm.path)
    pipe = load_pipeline(tm.path)
    pre = Preprocessor.from_dict(dec.meta["preprocessing"])
    offline = pipe.predict_proba(pre(es.data[:5]).astype(np.float64))
    for i in range(5):
        p = dec.predict(es.data[i])
        assert list(p) == list(es.classes)
        np.testing.assert_allclose(list(p.values()), offline[i], rtol=1e-6, atol=1e-9)


@pytest.mark.realtime  # its figure is the machine's load's as much as the code's: run alone
def test_quick_train_keeps_its_time_budget(tmp_path):
    """training.budget_s bounds the whole quick-train: the epochs are planned from the measured pace, training
    stops at the budget with the best weights, and the model's metrics say so; budget 0 trains every epoch."""
    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    proto = sim_protocol(decoder={"model": "kd_erp"}, training={"max_epochs": 5000, "patience": 5000,
                                                                "budget_s": 3})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    import_epochset(db, "S1", proto, es, source="sim")
    # budget 0: no limit (this first fit also pays the process's one-time costs: imports, the precision check)
    full = quick_train(db, "S1", protocol=sim_protocol(decoder={"model": "kd_erp"},
                                                         training={"max_epochs": 3, "patience": 10, "budget_s": 0}),
                       progress=False)
    assert full.metrics["stopped"] == "max_epochs" and full.metrics["epochs_run"] == 3
    seen = []
    tm = quick_train(db, "S1", protocol=proto, progress=seen.append)
    assert tm.metrics["stopped"] == "time_budget" and tm.metrics["budget_s"] == 3
    # behaviour, not a wall-clock figure this machine's load decides (how close to 3 s it ends on an idle machine:
    # benchmarks/bench_quick_train.py): the budget, not max_epochs or patience, ended a training that had planned
    # more epochs than it could hold
    assert 1 <= tm.metrics["epochs_run"] < 5000 and len(seen) == tm.metrics["epochs_run"]
    # the plan: every epoch's record says how many epochs the budget holds at the pace so far, and the time left
    assert all(r["epoch"] <= r["planned"] < 5000 and r["eta_s"] >= 0 for r in seen)
    assert abs(seen[-1]["planned"] - seen[-1]["epoch"]) <= 1


def test_a_model_file_with_foreign_types_is_refused(tmp_path):
    import skops.io as sio

    path = tmp_path / "m.skops"
    sio.dump({"f": os.system}, str(path))  # a function that runs commands: never a model part
    with pytest.raises(EegloopError, match="does not load.*system"):
        load_pipeline(path)
    (tmp_path / "junk.skops").write_bytes(b"PK\x03\x04not a zip")
    with pytest.raises(EegloopError, match="not a readable skops file"):
        load_pipeline(tmp_path / "junk.skops")


def test_artifacts_and_flat_channels_are_rejected_and_counted():
    proto = sim_protocol(epochs={"reject_uv": 200.0, "flat_uv": 0.5})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    t = np.arange(es.data.shape[-1]) / es.sfreq
    es.data[3, 2] += 500 * np.sin(2 * np.pi * 30 * t)  # a muscle burst inside the band, far beyond 200 µV
    es.data[10, 5] = 0.0  # a disconnected electrode
    rej = reject_artifacts(es, proto)
    assert 3 not in rej.kept and 10 not in rej.kept and rej.n_rejected == 2
    assert rej.by_class[es.labels[3]]["peak_to_peak"] == 1 and rej.by_class[es.labels[10]]["flat"] == 1
    assert sum(v["kept"] for v in rej.by_class.values()) == len(es) - 2
    rep = evaluate(es, proto, methods=["lda_windowed"], split="block")
    assert rep.n_epochs == len(es) - 2 and rep.rejection["rejected"] == 2


def test_baseline_is_subtracted():
    proto = sim_protocol(epochs={"tmin": -0.1, "tmax": 0.5, "baseline": [-0.1, 0.0]},
                         preprocessing={"standardize": False})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    es.data += 300.0 * np.linspace(0, 1, es.data.shape[-1])  # a slow ramp the band-pass leaves some of
    pre = Preprocessor.from_protocol(proto.preprocessing, proto.epochs, es.sfreq, es.tmin)
    x = pre.with_representation("time")(es.data)
    n_base = int(round(0.1 * es.sfreq))
    np.testing.assert_allclose(x[..., :n_base].mean(-1), 0.0, atol=1e-2)
    without = Preprocessor.from_dict({**pre.to_dict(), "baseline": None}).with_representation("time")(es.data)
    assert np.abs(without[..., :n_base].mean(-1)).max() > 0.1


def test_calibration_removes_a_lean_to_one_class():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    score = 0.3 * (y - 0.5) + rng.normal(0, 0.2, len(y))  # informative, but every prob is > 0.5 for class 1
    p1 = 1 / (1 + np.exp(-(score + 1.0)))
    proba = np.column_stack([1 - p1, p1])
    assert (proba.argmax(1) == 1).mean() > 0.9
    from eegloop.decoder.fitting import apply_bias

    fixed = apply_bias(proba, calibrate_bias(proba, y, 2))
    share = (fixed.argmax(1) == 1).mean()
    assert 0.35 < share < 0.65
    assert np.mean(fixed.argmax(1) == y) > np.mean(proba.argmax(1) == y)
    # the ranking (AUC) is untouched
    assert np.array_equal(np.argsort(fixed[:, 1]), np.argsort(proba[:, 1]))


def test_log_power_baseline_sees_power():
    """Classes that differ only in signal power: the fixed Table-1 baseline separates them."""
    rng = np.random.default_rng(1)
    n, ch, t = 160, 4, 200
    y = np.arange(n) % 2
    data = rng.standard_normal((n, ch, t)).astype(np.float32) * (1.0 + 1.0 * y)[:, None, None] * 10
    es = EpochSet(data, np.where(y, "b", "a"), 250.0, -0.2, [f"C{i}" for i in range(ch)], np.zeros(n),
                  np.arange(n) // 16, np.ones(n), {"a": "a", "b": "b"})
    proto = sim_protocol(amplifier={"channels": 4}, epochs={"tmin": 0.0, "tmax": 0.4, "margin_s": 0.2},
                         preprocessing={"notch_hz": None, "bandpass_hz": [1, 40]})
    rep = evaluate(es, proto, methods=["logreg_power"], split="block", n_folds=5)
    assert rep.summary()["logreg_power"]["top1"] > 0.9


def test_across_subjects_table_with_permutation_pvalues():
    proto = sim_protocol()
    reps = {}
    for i, snr in enumerate((0.3, 0.0)):
        p = protocol_from_dict({**proto.to_dict(), "amplifier": {**proto.to_dict()["amplifier"],
                                                                  "simulate": {"snr": snr, "seed": i}}})
        es = simulate_epochs(p, make_schedule(p, fake_set(4, 30)))
        reps[f"S{i}"] = evaluate(es, p, methods=["lda_windowed"], split="block", permutations=9)
    table, summary = across_subjects(reps)
    per = summary["methods"]["lda_windowed"]["per_subject"]
    assert set(per) == {"S0", "S1"} and "mean (std)" in table and "chance" in table
    assert per["S0"]["p"] == pytest.approx(0.1)  # 1 / (9 + 1): better than every shuffled refit
    assert per["S1"]["p"] > 0.1  # no class signal: inside the null band
    vals = [per[s]["balanced_accuracy"] for s in ("S0", "S1")]
    assert summary["methods"]["lda_windowed"]["mean"] == pytest.approx(np.mean(vals), abs=1e-3)


def test_feedback_cues_are_chosen_by_content():
    """The same cues in quick-train and feedback (different processes); kept out of training: test_session."""
    from eegloop.stimuli import cue_images

    stim = StimulusSet({"a": "a", "b": "b"}, tuple(Stimulus(Path(f"/x/{c}/{k}.png"), c, f"{c}{k:02d}")
                                                   for c in "ab" for k in range(20)))
    cues = cue_images(stim, 0.1)
    assert {c: [s.sha256 for s in v] for c, v in cues.items()} == {"a": ["a00", "a01"], "b": ["b00", "b01"]}
    assert cue_images(stim, 0.0) == {}


def test_evaluate_time_budget_caps_network_fits_and_says_so():
    """The networks share the evaluation's time budget: a fit that reaches its share stops after that epoch,
    keeps its best state, and the report names the method and the folds; budget 0 trains fully."""
    proto = sim_protocol(training={"max_epochs": 400, "patience": 400, "n_folds": 2})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    rep = evaluate(es, proto, methods=["lda_windowed", "conv1d"], split="run", budget_s=0.5)
    assert rep.budget_stopped == {"conv1d": 2}
    assert all(len(h) < 400 for h in rep.histories["conv1d"])
    assert any("time budget" in n and "conv1d 2/2 folds" in n for n in rep.notes)
    assert rep.to_json()["budget_stopped"] == {"conv1d": 2}
    assert list(rep.methods) == ["lda_windowed", "conv1d"]  # the order asked for, though the network ran last
    full = evaluate(es, protocol_from_dict({**proto.to_dict(), "training": {**proto.to_dict()["training"],
                                                                             "max_epochs": 3}}),
                    methods=["conv1d"], split="run", budget_s=0)
    assert not full.budget_stopped and all(len(h) == 3 for h in full.histories["conv1d"])


def test_auto_s_selection_budget_in_an_evaluation_is_named_and_lifted_by_budget_0():
    """auto's inner selection keeps decoder.select_budget_s (wall-clock, as in a visit): the candidates it left
    out are named with their folds in the notes and the JSON; budget 0 lifts it, and every candidate is compared
    in every fold (numbers that do not depend on the machine's speed)."""
    proto = sim_protocol(training={"n_folds": 2}, decoder={"select_budget_s": 0.001,
                                                             "candidates": ["lda_windowed", "riemann"]})
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    rep = evaluate(es, proto, methods=["auto"], split="run")
    assert rep.select_skipped == {"riemann": 2} and rep.selected == ["lda_windowed"] * 2
    assert any(n.startswith("auto: its selection's time budget (0.001 s, decoder.select_budget_s) left out riemann "
                            "in 2/2 folds") and "--budget 0 compares every candidate" in n for n in rep.notes)
    assert rep.to_json()["select_budget_skipped"] == {"riemann": 2}
    full = evaluate(es, proto, methods=["auto"], split="run", budget_s=0)
    assert not full.select_skipped and "select_budget_skipped" not in full.to_json()
    assert not any("selection's time budget" in n for n in full.notes)


@pytest.mark.slow(weight=2)
def test_cebra_knn_baseline_decodes():
    proto = sim_protocol()
    es = simulate_epochs(proto, make_schedule(proto, fake_set(4, 30)))
    rep = evaluate(es, proto, methods=["cebra_knn"], split="block", n_folds=3)
    s = rep.summary()["cebra_knn"]
    assert s["balanced_accuracy"] > rep.chance["chance_top1"] + 0.1, s  # 0.45 against 0.25 here
    assert "CEBRA embedding + kNN" in rep.table()


def test_series_representation_keeps_the_band_and_drops_what_would_alias():
    """conv1d's input: the filtered signal at >= 2.5 x the band edge, anti-aliased (no folded line noise)."""
    sf, n = 1000.0, 1500
    t = np.arange(n) / sf
    x = (np.sin(2 * np.pi * 20 * t) + np.sin(2 * np.pi * 160 * t)).astype(np.float32)[None, None]
    pre = Preprocessor(sfreq=sf, epoch_tmin=-0.5, tmin=0.0, tmax=0.5, notch_hz=None, notch_width_hz=2.0,
                       bandpass_hz=(14.0, 70.0), bandpass_order=4, standardize=False, representation="series",
                       stft_window_ms=40, stft_hop_ms=10)
    y = pre(x)[0, 0]
    assert pre.series_factor == 5 and y.shape == pre.output_shape(1, n)[1:] == (100,)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    f = np.fft.rfftfreq(len(y), pre.series_factor / sf)
    assert abs(f[spec.argmax()] - 20) <= 2  # the in-band sine survives at its own frequency
    assert spec[np.abs(f - 40).argmin()] < 0.05 * spec.max()  # 160 Hz would fold to 40 Hz at 200 Hz: it does not


def test_selection_rule_compares_candidates_fold_by_fold():
    """Issue 27: the one-standard-error rule on paired fold differences. Folds differ in difficulty far more than
    the candidates differ on any one of them; a costlier candidate ahead on every fold by a steady margin wins,
    one ahead by a margin that changes sign from fold to fold does not (the cheaper one is kept)."""
    from eegloop.decoder.selection import _choose

    order = ["lda_windowed", "riemann"]  # cheapest first
    hard_easy = np.array([0.60, 0.80, 0.90])  # the folds' own difficulty, shared by both candidates
    steady = {"lda_windowed": hard_easy - 0.03, "riemann": hard_easy}
    # the unpaired rule: the best's fold scores spread 0.088 (one SE), so the 0.03 margin was "noise" -> LDA
    assert np.std(hard_easy, ddof=1) / np.sqrt(3) > 0.03
    assert _choose(order, steady) == ("riemann", "")
    noisy = {"lda_windowed": hard_easy + np.array([-0.08, 0.05, -0.03]), "riemann": hard_easy}
    winner, note = _choose(order, noisy)  # riemann ahead by 0.02 on average, but not on every fold
    assert winner == "lda_windowed" and "riemann scored highest" in note and "paired" in note
    assert _choose(order, {"riemann": hard_easy}) == ("riemann", "")  # one scored candidate (others skipped)
    # a cheaper candidate that is best wins outright
    assert _choose(order, {"lda_windowed": hard_easy + 0.01, "riemann": hard_easy}) == ("lda_windowed", "")
