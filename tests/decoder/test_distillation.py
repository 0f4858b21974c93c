"""Issue 25: evaluate distils as quick-train does, says which alpha each fold used, and measures what the teacher
adds (the same folds with and without it, paired)."""
from __future__ import annotations

import numpy as np
import pytest

from eegloop.decoder.evaluation import evaluate, make_folds, paired_sign_flip
from eegloop.decoder.fitting import teacher_logits_for as _teacher_logits
from eegloop.decoder.teacher import ClipTeacher
from eegloop.errors import EegloopError
from eegloop.paradigm.schedule import make_schedule
from eegloop.recorder.simulator import simulate_epochs
from eegloop.stimuli import synthesize_stimuli
from simkit import sim_protocol


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """A simulated subject shown real (procedural) images, and a CLIP teacher (tiny, random, built here) that
    separates their classes."""
    tmp = tmp_path_factory.mktemp("distil")
    st = synthesize_stimuli(tmp / "img", 4, per_class=30, size=64)
    proto = sim_protocol(stimuli={"classes": dict(st.classes)}, training={"max_epochs": 12, "n_folds": 3},
                         teacher={"enabled": True, "model": "tiny-random-clip", "pretrained": None})
    sched = make_schedule(proto, st)
    es = simulate_epochs(proto, sched)
    es.images = np.array([t.image_sha256 for t in sched.trials])
    teacher = ClipTeacher.fit(proto.teacher, [(str(s.path), s.sha256, s.class_id) for s in st.images],
                              list(st.classes), cache_dir=tmp / "cache")
    return proto, es, teacher


def test_teacher_separates_the_classes(subject):
    _proto, es, teacher = subject
    assert teacher.accuracy > 0.25 + 0.4  # 4 classes: chance 0.25; measured 0.98 on these 120 images


def test_soft_targets_for_the_training_epochs_only(subject):
    proto, es, teacher = subject
    tr, te = make_folds(es, "block", 3)[0]
    tl = _teacher_logits(teacher, es, tr)
    assert tl is not None and tl.shape == (len(es), 4)
    assert np.isfinite(tl[tr]).all()  # every training epoch gets its soft target, as in quick-train
    assert np.isnan(tl[te]).all()  # no test image's logits are made, or needed
    # the refitted head knows only the training images: it agrees with their labels
    assert np.mean(tl[tr].argmax(1) == es.y[tr]) > 0.9
    # a label-shuffled control gets a teacher that learnt the shuffled labels, not the true classes
    shuf = es.subset(np.arange(len(es)))
    shuf.labels = es.labels[np.random.default_rng(0).permutation(len(es))]
    tl_shuf = _teacher_logits(teacher, shuf, tr)
    assert np.mean(tl_shuf[tr].argmax(1) == es.y[tr]) < 0.5


def test_evaluate_distils_in_every_fold_and_the_ablation_pairs_the_folds(subject):
    proto, es, teacher = subject
    rep = evaluate(es, proto, methods=["kd_stft"], split="block", teacher=teacher, budget_s=0, ablation="teacher")
    k = rep.n_folds
    assert rep.alphas["kd_stft"] == [proto.training.alpha] * k  # distilled in every fold, and it says so
    ab = rep.ablation["kd_stft"]
    assert ab.alpha_with == [0.5] * k and ab.alpha_without == [1.0] * k
    assert ab.with_teacher == [f[rep.key_metric] for f in rep.methods["kd_stft"]]
    assert ab.with_teacher != ab.without_teacher  # the teacher changed what the student learnt
    out = rep.to_json()
    assert out["alpha"]["kd_stft"] == [0.5] * k
    assert out["ablation"]["kd_stft"]["difference"] == [round(a - b, 4) for a, b in
                                                        zip(ab.with_teacher, ab.without_teacher)]
    assert 2 / 2 ** k <= out["ablation"]["kd_stft"]["p"] <= 1
    table = rep.table()
    assert "distilled from the teacher (alpha 0.5) in 3/3 folds" in table and "teacher ablation, kd_stft" in table


def test_without_a_teacher_alpha_1_is_recorded_and_the_ablation_refused(subject):
    proto, es, _teacher = subject
    rep = evaluate(es, proto, methods=["kd_stft"], split="block", budget_s=0,
                   **{"n_folds": 2})
    assert rep.alphas["kd_stft"] == [1.0, 1.0]
    assert any("alpha = 1" in n for n in rep.notes)
    with pytest.raises(EegloopError, match="--ablation teacher: no teacher"):
        evaluate(es, proto, methods=["kd_stft"], split="block", ablation="teacher")
    with pytest.raises(EegloopError, match="none of the methods distils"):
        evaluate(es, proto, methods=["lda_windowed"], split="block", teacher=_teacher, ablation="teacher")


def test_paired_sign_flip_is_exact():
    assert paired_sign_flip([0.1, 0.2, 0.3]) == pytest.approx(2 / 8)  # all signs agree: the two extremes of 8
    assert paired_sign_flip([0.1, -0.1]) == 1.0
    assert paired_sign_flip([0.05] * 20) < 1e-3  # sampled flips beyond 16 pairs
