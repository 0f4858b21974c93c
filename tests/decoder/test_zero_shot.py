"""Zero-shot decoding: the embedding-driven simulated subject, the EEG encoder, honest k-way identification."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from eegloop.decoder.evaluation import NoHonestFoldError
from eegloop.decoder.zeroshot import identification, zero_shot_evaluate, zero_shot_splits
from eegloop.embeddings import TINY_CLIP, image_embeddings
from eegloop.errors import EegloopError
from eegloop.paradigm.schedule import make_schedule
from eegloop.protocol import protocol_from_dict
from eegloop.recorder.simulator import simulate_epochs
from eegloop.stimuli import SYNTH_CLASSES, load_stimuli



def zs_protocol(folder, signal=1.0, classes=10, per_class=30, repeats=2, order="interleaved", **kw):
    d = {"stimuli": {"folder": str(Path(folder) / f"{classes}x{per_class}"), "synthesize": True, "synth_size_px": 64,
                     "classes": dict(list(SYNTH_CLASSES.items())[:classes])},
         "paradigm": {"block_s": 10, "image_s": 0.5, "pause_s": 1, "images_per_class": per_class, "repeats": repeats,
                      "runs": 2, "order": order},
         "amplifier": {"channels": 32, "sfreq": 250,
                       "simulate": {"snr": 0.4, "embedding_signal": signal, "class_signal": 1.0 if signal else 0.0}},
         "teacher": {"model": TINY_CLIP, "pretrained": None},
         "encoder": {"test_share": 0.3, "max_epochs": 40},
         "training": {"n_folds": 3}}
    for k, v in kw.items():
        d.setdefault(k, {}).update(v)
    return protocol_from_dict(d)


def simulated(p):
    stim = load_stimuli(p)
    sched = make_schedule(p, stim)
    es = simulate_epochs(p, sched)
    es.images = np.array([t.image_sha256 for t in sched.trials])
    return es, image_embeddings([(s.path, s.sha256) for s in stim.images], TINY_CLIP, None)


@pytest.fixture(scope="module")
def stim_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zs-stimuli")


@pytest.fixture(scope="module")
def subject(stim_dir):
    """The embedding-driven simulated subject: protocol, epochs (images as sha256), stimulus embeddings."""
    p = zs_protocol(stim_dir, encoder={"budget_s": 8})
    es, Z = simulated(p)
    return p, es, Z


def test_identification_is_the_exact_expectation_over_distractors():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((30, 30)) + 1.5 * np.eye(30)
    for k in (2, 5, 30):
        top1, top5 = identification(S, k)
        hits1 = hits5 = 0
        trials = 4000
        for _ in range(trials):  # Monte Carlo over random distractor sets
            i = rng.integers(30)
            others = rng.choice(np.delete(np.arange(30), i), k - 1, replace=False)
            better = int((S[i, others] > S[i, i]).sum())
            hits1 += better == 0
            hits5 += better < 5
        assert top1 == pytest.approx(hits1 / trials, abs=0.03)
        assert top5 == pytest.approx(hits5 / trials, abs=0.03)
    assert identification(np.eye(10), 10) == (1.0, 1.0)


def test_splits_hold_out_classes_and_their_blocks(stim_dir):
    p = zs_protocol(stim_dir, per_class=20, repeats=1)
    stim = load_stimuli(p)
    sched = make_schedule(p, stim)
    es = simulate_epochs(p, sched)
    test = ["circle", "star", "wave"]
    folds = zero_shot_splits(es, test, "block", 3)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen) == sorted(np.flatnonzero(np.isin(es.labels, test)))  # every test epoch once
    for tr, te in folds:
        assert not set(es.labels[tr]) & set(test)
        assert set(es.labels[te]) <= set(test)
        assert not set(es.blocks[tr]) & set(es.blocks[te])
    with pytest.raises(EegloopError, match="random"):
        zero_shot_splits(es, test, "random", 3)
    one_block = es.subset(np.arange(len(es)))
    one_block.blocks[:] = 1
    one_block.runs[:] = 1
    with pytest.raises(NoHonestFoldError, match="one block"):
        zero_shot_splits(one_block, test, "block", 3)
    # a blocked design: the held-out classes have blocks of their own -> one fold, still nothing shared
    pb = zs_protocol(stim_dir, per_class=20, repeats=1, order="blocked")
    esb = simulate_epochs(pb, make_schedule(pb, load_stimuli(pb)))
    (tr, te), = zero_shot_splits(esb, test, "block", 3)
    assert not set(esb.blocks[tr]) & set(esb.blocks[te])


@pytest.mark.slow(weight=2)
def test_zero_shot_on_the_embedding_driven_subject_and_its_control(stim_dir, subject):
    p, es, Z = subject
    rep = zero_shot_evaluate(es, Z, p, permutations=300, budget_s=40, seed=0)
    s = rep.scores["50-way"]
    assert rep.n_test_images == 90 and set(rep.test_classes) <= set(SYNTH_CLASSES)
    assert s["chance_top1"] == 0.02 and s["top1"] > 3 * s["chance_top1"], rep.table()
    assert rep.pvalue < 0.01
    assert rep.curve_k[-1][0] == 90 and len(rep.examples) == 6
    assert all(len(e["retrieved"]) == 5 for e in rep.examples)

    # the same design without the signal: inside the permutation null band
    p0 = zs_protocol(stim_dir, signal=0.0)
    es0, Z0 = simulated(p0)
    rep0 = zero_shot_evaluate(es0, Z0, p0, permutations=300, budget_s=40, seed=0)
    t0 = rep0.scores["50-way"]["top1"]
    assert rep0.null_band[0] - 0.01 <= t0 <= rep0.null_band[1] + 0.01, rep0.table()
    assert rep0.pvalue > 0.01


def _store(tmp_path, p, es, stim):
    """The simulated epochs as an imported session, with the stimuli registered (what a recording leaves)."""
    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    db = Database(None, data_dir=tmp_path)
    named = es.subset(np.arange(len(es)))
    name_of = {s.sha256: Path(s.path).name for s in stim.images}
    named.images = np.array([name_of[s] for s in es.images])
    import_epochset(db, "zs1", p, named, source="simulated")
    db.add_stimuli(stim)
    return db


@pytest.mark.slow(weight=2)
def test_train_encoder_and_evaluate_zero_shot_through_the_cli(tmp_path, subject, capsys):
    from eegloop.cli import main
    from eegloop.decoder import load_decoder, load_encoder

    p, es, Z = subject
    db = _store(tmp_path, p, es, load_stimuli(p))

    def eegloop(*args):
        rc = main([*map(str, args), "--data", str(tmp_path)])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    r = eegloop("train", "--subject", "zs1", "--encoder")
    assert r.returncode == 0, r.stderr
    assert "encoder 1:" in r.stdout and "chance" in r.stdout and "--zero-shot" in r.stdout
    enc, mid = load_encoder(db, "zs1")
    assert mid == 1 and enc.dim == 64 and enc.clip_model == TINY_CLIP
    z = enc.encode(es.data[0])
    assert z.shape == (64,) and abs(np.linalg.norm(z) - 1) < 1e-5
    # the encoder ranks its own training images: the shown image is among the top 10 % of all stimuli, mostly
    shas = sorted(Z)
    C = np.stack([Z[s] for s in shas])
    ranks = [int((enc.rank(enc.encode(es.data[i]), C) > enc.rank(enc.encode(es.data[i]), C)[shas.index(es.images[i])]).sum())
             for i in range(0, len(es), 40)]
    assert np.median(ranks) < 0.1 * len(shas)
    with pytest.raises(EegloopError, match="no trained model"):  # an encoder is not the class decoder
        load_decoder(db, "zs1")

    r = eegloop("evaluate", "--subject", "zs1", "--zero-shot", "--test-classes", "circle,star,wave",
                "--budget", "12", "--permutations", "200", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["test_classes"] == ["circle", "star", "wave"] and res["n_test_images"] == 90
    assert res["scores"]["50-way"]["top1"] > 3 * res["scores"]["50-way"]["chance_top1"]
    html = next((tmp_path / "reports").glob("zero-shot-zs1-*.html")).read_text()
    assert "Zero-shot identification" in html and html.count("data:image/png;base64") >= 2 + 6 * 6

    r = eegloop("evaluate", "--subject", "zs1", "--zero-shot", "--split", "random")
    assert r.returncode == 2 and r.stderr.startswith("eegloop: error: --split random") and "Traceback" not in r.stderr
    r = eegloop("evaluate", "--subject", "zs1", "--zero-shot", "--test-classes", "nope")
    assert r.returncode == 2 and "--test-classes: 'nope'" in r.stderr
