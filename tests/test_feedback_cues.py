"""Issue 25: feedback cues the decoder never saw, checked per trial, and the rsvp decision from every epoch.

The model keeps the sha256 of every image it was trained on; the feedback block shows others where the class has
any (whatever ``feedback.cue_share`` the feedback's protocol says), marks each trial that could not, and the report
calls the accuracy honest only when no scored trial showed a trained image.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from eegloop.feedback.cues import CueHonesty, cue_honesty, cue_pools, cues_trained, trained_images
from eegloop.stimuli import Stimulus, StimulusSet, feedback_cue_shas


def _set(per_class=10):
    from pathlib import Path

    classes = {"a": "A", "b": "B"}
    return StimulusSet(classes, tuple(Stimulus(Path(f"/x/{c}/{k}.png"), c, f"{c}{k:02d}" + "0" * 61)
                                      for c in classes for k in range(per_class)))


def test_cue_pools_prefer_unseen_images_and_say_when_there_are_none():
    st = _set()
    shas = {s.sha256 for s in st.images}
    a_imgs = [s.sha256 for s in st.by_class()["a"]]
    # trained on all of a but two, and on all of b
    trained = frozenset(shas - set(a_imgs[-2:]))
    said = []
    pools = cue_pools(st, 0.3, trained, said.append)
    assert [s.sha256 for s in pools["a"]] == a_imgs[-2:]  # not the held-out share: it was trained on
    assert len(pools["b"]) == 3 and "every image of class b" in said[0]  # the share, each trial marked
    assert cues_trained([s.sha256 for s in pools["a"]], trained) is False
    assert cues_trained([pools["b"][0].sha256], trained) is True
    assert cues_trained(["x"], None) is None  # an old model: not known
    # no record of the trained images: the held-out share, as before
    assert len(cue_pools(st, 0.3, None)["a"]) == 3
    assert trained_images({"trained_images": ["s1", ""]}) == frozenset({"s1"}) and trained_images({}) is None


def test_honesty_only_when_every_scored_trial_was_unseen():
    assert cue_honesty([(False, True), (False, False)]).honest
    h = cue_honesty([(False, True), (True, True), (None, False)])
    assert not h.honest and h == CueHonesty(3, 1, 1, 1, 1)
    text = h.describe()
    assert "not an honest online estimate" in text and "1 showed images the decoder was trained on" in text
    assert "1/1 correct" in text
    assert not cue_honesty([]).honest


@pytest.mark.slow(weight=2)
def test_feedback_cues_unseen_marked_and_the_rsvp_decision_uses_every_epoch(tmp_path, display, short_protocol):
    from eegloop.database import Database
    from eegloop.decoder import OnlineDecoder, quick_train
    from eegloop.feedback.loop import run_feedback
    from eegloop.report import feedback_honesty, write_report
    from eegloop.session import record_session

    # the Riemannian pipeline on a weak signal: its probabilities stay well inside (0, 1) (0.1-0.9 here; a network
    # saturates on some recordings, and collapses onto one class on no signal), so that a burst's posterior differs
    # from its first epoch's and a decoder deciding on the first epoch is caught
    proto = short_protocol(paradigm={"block_s": 1.0, "images_per_class": 10},
                           amplifier={"simulate": {"snr": 0.3}},
                           decoder={"model": "riemann"}, training={"max_epochs": 4},
                           feedback={"trials": 5, "mode": "stimulus", "format": "rsvp", "rsvp_images": 3,
                                     "display_s": 0.1, "cue_share": 0.3})
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    rec = record_session(proto, "S1", db, simulate=True, progress=None)
    sid = rec.session_id

    # 1. trained on every image (cue_share 0): every trial shows trained images, and says so
    every = dataclasses.replace(proto, feedback=dataclasses.replace(proto.feedback, cue_share=0.0))
    tm = quick_train(db, "S1", protocol=every, progress=False)
    meta = json.loads(tm.path.with_suffix(".json").read_text())
    shown = {e.payload["image"] for e in db.get_events(sid, "stim_on")}
    by_name = {r.path.split("/")[-1]: r.sha256 for r in db.get_stimuli()}
    assert set(meta["trained_images"]) == {by_name[n] for n in shown}  # the model keeps what it was trained on
    assert "trained_images" not in db.get_model(tm.model_id).config  # in the model's JSON, not in the database
    lines = []
    run_feedback(proto, "S1", db, simulate=True, session_id=sid, progress=lines.append, trials=2,
                 trial_offset=100)
    first = [t for t in db.get_feedback_trials(sid) if t.trial > 100]
    assert len(first) == 2 and all(t.latencies["cue_trained"] is True for t in first)
    assert any("trained on every image of class" in line for line in lines)
    assert not feedback_honesty(first).honest

    # 2. cues held out at training (0.3); the feedback's protocol asks for more (0.6): only unseen images are shown
    tm = quick_train(db, "S1", protocol=proto, progress=False, exclude_images=feedback_cue_shas(proto))
    trained = set(json.loads(tm.path.with_suffix(".json").read_text())["trained_images"])
    wide = dataclasses.replace(proto, feedback=dataclasses.replace(proto.feedback, cue_share=0.6))
    res = run_feedback(wide, "S1", db, simulate=True, session_id=sid, progress=None, trial_offset=200)
    assert res.trials == 5 and res.missing == 0
    second = [t for t in db.get_feedback_trials(sid) if t.trial > 200]
    for t in second:
        assert len(t.latencies["cue_sha256"]) == 3 and not set(t.latencies["cue_sha256"]) & trained
        assert t.latencies["cue_trained"] is False and t.latencies["epochs"] == 3
    assert feedback_honesty(second).honest
    # the rsvp format: each trial a burst of 3 images of one class, each its own marker and epoch
    stim_on = [e.payload for e in db.get_events(sid, "stim_on")
               if (e.payload or {}).get("feedback") and e.payload["feedback_trial"] > 200]
    assert len(stim_on) == 15 and sorted({p["feedback_trial"] for p in stim_on}) == [t.trial for t in second]
    for t in second:
        burst = [p for p in stim_on if p["feedback_trial"] == t.trial]
        assert len(burst) == 3 and {p["class"] for p in burst} == {t.true_class}
        assert sorted(p["trial"] for p in burst) == [(t.trial - 1) * 3 + j + 1 for j in range(3)]
    epochs_of = {e.trial for e in db.get_epochs(sid) if e.block >= 10_000}
    assert {p["trial"] for p in stim_on} <= epochs_of  # every image of every burst is an epoch
    page = write_report(db, sid).read_text()
    # the session's trials mix both blocks: the report does not call them honest
    assert "showed images the decoder was trained on: not an honest online estimate" in page

    # 3. the rsvp decision is the burst's posterior from every one of its epochs, not the first alone
    dec = OnlineDecoder(tm.path)
    fb_epochs = {e.trial: e for e in db.get_epochs(sid) if e.block >= 10_000}
    differs = 0
    for t in second:
        image_trials = [(t.trial - 1) * 3 + j + 1 for j in range(3)]
        ps = [dec.predict(np.asarray(fb_epochs[i].data)) for i in image_trials]
        logp = {c: sum(np.log(max(p[c], 1e-12)) for p in ps) for c in ps[0]}
        z = np.logaddexp.reduce(list(logp.values()))
        combined = {c: float(np.exp(v - z)) for c, v in logp.items()}
        for c in combined:
            assert t.probabilities[c] == pytest.approx(combined[c], abs=1e-5)
        differs += max(abs(ps[0][c] - combined[c]) for c in combined) > 1e-3  # 100x the tolerance above
        assert t.predicted_class == max(combined, key=combined.get)
    assert differs  # the first epoch alone would have stored other probabilities
