"""Zero-shot across subjects (issue 27, item 7): an encoder trained on the other subjects identifies a held-out
subject's images of never-trained classes; each subject aligned on its own epochs. How well it decodes is
measured by benchmarks (a test-sized encoder is at chance); here: who trains on what, the alignment's algebra, and
the refusals."""
from __future__ import annotations

import numpy as np
import pytest

from eegloop.decoder.zeroshot_subjects import euclidean_alignment, zero_shot_loso
from eegloop.errors import EegloopError
from eegloop.paradigm.schedule import make_schedule
from eegloop.recorder.simulator import simulate_epochs
from eegloop.stimuli import load_stimuli
from test_zero_shot import simulated, zs_protocol


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    d = tmp_path_factory.mktemp("zs-pop")
    subs, Z = {}, None
    for k in (1, 2, 3):  # one stimulus set (drawn once, embedded once), three heads of one simulated population
        p = zs_protocol(d, classes=10, per_class=8, repeats=1,
                        amplifier={"channels": 8, "simulate": {"snr": 0.6, "embedding_signal": 1.0, "subject": k}},
                        encoder={"test_share": 0.3, "max_epochs": 2, "filters": 4, "attention_dim": 0, "hidden": 16,
                                 "batch_size": 32, "budget_s": 0})
        if Z is None:
            es, Z = simulated(p)
        else:
            sched = make_schedule(p, load_stimuli(p))
            es = simulate_epochs(p, sched)
            es.images = np.array([t.image_sha256 for t in sched.trials])
        subs[f"S{k}"] = (es, Z)
    return p, subs


def test_each_subject_is_scored_by_an_encoder_that_never_saw_it(population):
    p, subs = population
    lines = []
    rep = zero_shot_loso(subs, p, test_classes=["circle", "square", "star"], permutations=20, progress=lines.append)
    assert [s.subject for s in rep.subjects] == ["S1", "S2", "S3"] and rep.alignment == "euclid"
    for s in rep.subjects:
        others = [c for c in subs if c != s.subject]
        assert s.trained_on == others
        # the others' epochs of the training classes, and nothing of the held-out subject or the test classes
        assert s.n_train_epochs == sum(int((~np.isin(subs[c][0].labels, rep.test_classes)).sum()) for c in others)
        es = subs[s.subject][0]
        assert s.n_test_epochs == int(np.isin(es.labels, rep.test_classes).sum()) == 24
        assert s.n_test_images == 24 and s.main_k == 24 and 0 <= s.pvalue <= 1
        assert s.scores["24-way (all)"]["chance_top1"] == pytest.approx(1 / 24, abs=1e-4)
    assert len(lines) == 3 and "S2 held out" in lines[1]
    js = rep.to_json()
    assert js["kind"] == "zero_shot_loso" and [r["trained_on"] for r in js["subjects"]][0] == ["S2", "S3"]
    assert "mean" in rep.table() and "SHUFFLED" not in rep.table()


def test_euclidean_alignment_undoes_each_subjects_own_mixing():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(200, 6, 50))  # shared sources
    A1, A2 = (np.eye(6) + 0.5 * rng.normal(size=(6, 6)) for _ in range(2))
    X1, X2 = np.einsum("cd,ndt->nct", A1, S), np.einsum("cd,ndt->nct", A2, S)
    for X in (X1, X2):
        Y = euclidean_alignment(X)
        Yc = Y - Y.mean(-1, keepdims=True)
        R = np.einsum("nct,ndt->cd", Yc, Yc) / (Y.shape[0] * Y.shape[2])
        np.testing.assert_allclose(R, np.eye(6), atol=1e-3)  # whitened on its own mean covariance
    # what is left between the two heads is a rotation: aligned, their epochs have the same inner products
    Y1, Y2 = euclidean_alignment(X1), euclidean_alignment(X2)
    g1, g2 = np.einsum("ct,cs->ts", Y1[0], Y1[0]), np.einsum("ct,cs->ts", Y2[0], Y2[0])
    assert np.corrcoef(g1.ravel(), g2.ravel())[0, 1] > 0.95
    raw = np.corrcoef(np.einsum("ct,cs->ts", X1[0], X1[0]).ravel(), np.einsum("ct,cs->ts", X2[0], X2[0]).ravel())
    assert raw[0, 1] < np.corrcoef(g1.ravel(), g2.ravel())[0, 1]


def test_fewer_than_three_subjects_or_unlike_montages_are_refused(population):
    p, subs = population
    with pytest.raises(EegloopError, match="at least 3 subjects, got 2"):
        zero_shot_loso(dict(list(subs.items())[:2]), p)
    es, Z = subs["S3"]
    fewer = es.subset(np.arange(len(es)))
    fewer.data, fewer.channel_names = fewer.data[:, :7], list(fewer.channel_names)[:7]
    with pytest.raises(EegloopError, match="S3 has 7 channels at 250 Hz where the first subject has 8"):
        zero_shot_loso({**subs, "S3": (fewer, Z)}, p)
