"""`eegloop evaluate` through the CLI as the README writes it: --subjects, --all, --permutations, --ablation teacher;
every score it prints or writes carries its split and whether it is inflated or label-shuffled (issue 25)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from eegloop.embeddings import TINY_CLIP
from eegloop.paradigm.schedule import make_schedule
from eegloop.protocol import protocol_from_dict
from eegloop.recorder.simulator import simulate_epochs
from eegloop.stimuli import SYNTH_CLASSES, load_stimuli


def protocol(folder, repeats=1, seed=0, model="auto"):
    return protocol_from_dict({
        "decoder": {"model": model},
        "stimuli": {"folder": str(folder), "synthesize": True, "synth_size_px": 64,
                    "classes": dict(list(SYNTH_CLASSES.items())[:4])},
        "paradigm": {"block_s": 5, "image_s": 0.5, "pause_s": 1, "images_per_class": 40, "repeats": repeats,
                     "runs": 2, "order": "interleaved"},
        "amplifier": {"channels": 16, "sfreq": 250, "simulate": {"snr": 0.5, "seed": seed}},
        "teacher": {"model": TINY_CLIP, "pretrained": None},
        "feedback": {"cue_share": 0},
        "training": {"n_folds": 3, "max_epochs": 8}})


def store(db, code, p):
    """A simulated subject's epochs as an imported session, its stimulus images registered (what a visit leaves)."""
    from eegloop.recorder.importers import import_epochset

    stim = load_stimuli(p)
    sched = make_schedule(p, stim)
    es = simulate_epochs(p, sched)
    es.images = np.array([Path(t.image).name for t in sched.trials])
    import_epochset(db, code, p, es, source="simulated")
    db.add_stimuli(stim)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from eegloop.database import Database

    root = tmp_path_factory.mktemp("cli-eval")
    db = Database(None, data_dir=root)
    store(db, "s1", protocol(root / "stim1", seed=1))
    store(db, "s2", protocol(root / "stim1", seed=2))
    store(db, "rep", protocol(root / "stim2", repeats=2, seed=3))  # every image shown twice, in different blocks
    store(db, "pipe", protocol(root / "stim1", seed=4, model="lda_windowed"))
    store(db, "net", protocol(root / "stim1", seed=5, model="kd_erp"))
    return root


@pytest.fixture
def eegloop(data, capsys):
    from eegloop.cli import main

    def run(*args):
        rc = main([*map(str, args), "--data", str(data)])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    return run


def test_subjects_with_permutations_the_table_and_its_json(eegloop, data):
    r = eegloop("evaluate", "--subjects", "s1,s2", "--methods", "lda_windowed", "--permutations", "3")
    assert r.returncode == 0, r.stderr
    assert "s1: block-wise, 3 folds, s2: block-wise, 3 folds" in r.stdout
    assert "p: permutation p-value per subject and method (3 label-shuffled refits each)" in r.stdout
    row = [line for line in r.stdout.splitlines() if line.startswith("Shrinkage LDA")][-1]  # the across table's
    assert row.count("(p 0.25)") == 2  # 3 refits: p is never below 1/4, and the signal puts these at it
    assert "INFLATED" not in r.stdout
    across = json.loads(sorted((data / "reports").glob("evaluation-across-*.json"))[-1].read_text())
    assert across["split"] == {"s1": "block", "s2": "block"} and across["inflated"] is False
    assert across["shuffled_labels"] is False
    lda = across["methods"]["lda_windowed"]
    assert set(lda["per_subject"]) == {"s1", "s2"} and all(v["p"] == 0.25 for v in lda["per_subject"].values())
    assert lda["mean"] > across["chance"]["s1"] + 0.15  # 160 epochs: a shuffled score has an SD near 0.035


def test_all_subjects_json_labels_inflated_and_shuffled(eegloop):
    r = eegloop("evaluate", "--all", "--methods", "lda_windowed", "--split", "random", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(res["subjects"]) == ["net", "pipe", "rep", "s1", "s2"]
    assert set(res["split"].values()) == {"random"} and res["inflated"] is True
    assert set(res["inflated_subjects"]) == set(res["subjects"])
    r = eegloop("evaluate", "--subjects", "s1,s2", "--methods", "lda_windowed", "--shuffle-labels")
    assert r.returncode == 0, r.stderr
    assert "(control: labels shuffled for s1, s2 — scores should sit at chance)" in r.stdout


def test_repeated_images_across_folds_are_inflated(eegloop):
    """Whole blocks out, but the test blocks' images were shown in the training blocks too (repeats: 2)."""
    r = eegloop("evaluate", "--subject", "rep", "--methods", "lda_windowed", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["split"] == "block" and res["inflated"] is True
    assert "images repeated across folds" in res["inflated_why"]
    r = eegloop("evaluate", "--subjects", "s1,rep", "--methods", "lda_windowed")
    assert r.returncode == 0, r.stderr
    assert "!! INFLATED scores for rep: rep: images repeated across folds" in r.stdout
    r = eegloop("evaluate", "--subject", "s1", "--methods", "lda_windowed", "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["inflated"] is False  # each image once: not inflated


def test_ablation_teacher_through_the_cli(eegloop):
    r = eegloop("evaluate", "--subject", "s1", "--methods", "kd_stft", "--ablation", "teacher", "--budget", "0",
                "--folds", "2", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    ab = res["ablation"]["kd_stft"]
    assert res["alpha"]["kd_stft"] == [0.5, 0.5] and ab["alpha_with"] == [0.5, 0.5] and ab["alpha_without"] == [1, 1]
    assert len(ab["difference"]) == 2 and 0.5 <= ab["p"] <= 1  # two folds: an exact sign-flip p is 0.5 or 1
    assert ab["test"].startswith("exact paired sign-flip")
    r = eegloop("evaluate", "--subject", "s1", "--methods", "lda_windowed", "--ablation", "teacher")
    assert r.returncode == 2 and "none of the methods distils" in r.stderr and len(r.stderr.splitlines()) == 1
    r = eegloop("evaluate", "--subject", "s1", "--zero-shot", "--ablation", "teacher")
    assert r.returncode == 2 and "--zero-shot" in r.stderr


def test_train_labels_its_tuned_on_score_optimistic_and_shows_the_honest_one(eegloop, data):
    from eegloop.database import Database
    from eegloop.report import quick_train_paragraph

    r = eegloop("train", "--subject", "net")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("early-stopping set"))
    assert "OPTIMISTIC, not an honest estimate: the best epoch was picked on it, the bias calibration was fitted" in line
    assert "honest estimate: run `eegloop evaluate --subject net`" in r.stdout
    db = Database(None, data_dir=data)
    m = db.latest_model("net").metrics
    assert m["heldout_optimistic"] is True and m["early_stopping"]["optimistic"] is True  # the database says so too
    assert "OPTIMISTIC" in quick_train_paragraph(m)

    # a pinned pipeline is scored by a fit that never saw its held-out whole blocks: not optimistic
    r = eegloop("evaluate", "--subject", "pipe", "--methods", "lda_windowed")
    assert r.returncode == 0, r.stderr
    r = eegloop("train", "--subject", "pipe")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("held-out set (then refitted on all)"))
    assert "held-out whole blocks" in line and "used for nothing else" in line and "OPTIMISTIC" not in line
    assert "honest estimate (lda_windowed, block-wise folds, evaluate): balanced_accuracy" in r.stdout
    text = quick_train_paragraph(db.latest_model("pipe").metrics)
    assert "None" not in text and "a pipeline fitted in one pass" in text  # not "None epochs run (best None)"
