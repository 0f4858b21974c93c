"""Feedback from the EEG encoder's embedding: nearest-image retrieval and Stable unCLIP generation.

One short simulated recording (the subject responds to the images' tiny-random-CLIP embeddings) and one real
encoder trained on it serve every test here; the generator is a tiny random Stable unCLIP pipeline built and
saved here, loaded back through ``from_pretrained``.
"""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from eegloop.embeddings import TINY_CLIP
from eegloop.errors import EegloopError, ModelNotAvailableError
from eegloop.protocol import FeedbackConfig

CLASSES = {"circle": "red circle", "square": "blue square"}


def _protocol(tmp, **feedback):
    from eegloop.protocol import protocol_from_dict

    tag = uuid.uuid4().hex[:8]
    return protocol_from_dict({
        "name": "emb",
        "stimuli": {"folder": str(tmp / "stim"), "synthesize": True, "synth_size_px": 64, "classes": CLASSES},
        "paradigm": {"block_s": 1.0, "image_s": 0.1, "pause_s": 0.1, "images_per_class": 10, "runs": 2,
                     "order": "interleaved", "wait_for_space": False, "instructions": "",
                     "screen": {"fullscreen": False, "size": [320, 240], "image_size_px": 128}},
        "amplifier": {"stream_name": f"eeg-{tag}", "marker_stream_name": f"mk-{tag}", "channels": 8, "sfreq": 250,
                      "simulate": {"seed": 2, "snr": 0.6, "embedding_signal": 1.0}},
        "epochs": {"tmin": 0.0, "tmax": 0.3, "margin_s": 0.1},
        "teacher": {"enabled": False, "model": TINY_CLIP, "pretrained": None},
        "encoder": {"max_epochs": 12, "patience": 12, "budget_s": 6, "hidden": 64},
        "feedback": {"trials": 3, "display_s": 0.1, **feedback},
        "signal_check": {"before_visit": False},
    }, source=str(tmp / "emb.yaml"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, display):
    """A recorded simulated session of subject S1 and its EEG encoder (no classifier: these modes need none)."""
    from eegloop.database import Database
    from eegloop.decoder import load_encoder, train_encoder
    from eegloop.session import record_session

    tmp = tmp_path_factory.mktemp("emb")
    proto = _protocol(tmp)
    db = Database(f"sqlite:///{tmp / 'e.db'}", data_dir=tmp)
    rec = record_session(proto, "S1", db, simulate=True, progress=None)
    train_encoder(db, "S1", protocol=proto)
    encoder, model_id = load_encoder(db, "S1")
    return tmp, proto, db, rec, encoder, model_id


@pytest.fixture(scope="module")
def candidates_dir(trained):
    """Candidates of the two trained classes, of a never-trained one (star) and one image with no class folder."""
    from eegloop.stimuli import synthesize_stimuli

    tmp = trained[0]
    root = tmp / "candidates"
    synthesize_stimuli(root, {"circle": "red circle", "square": "blue square", "star": "yellow star"}, 3,
                       size=64, seed=11)
    (root / "nested").mkdir()
    (root / "star").rename(root / "nested" / "star")  # any depth: the class is the folder the image sits in
    from PIL import Image

    with Image.open(root / "square" / "square_000.png") as im:  # an image of its own, at the top
        im.transpose(Image.Transpose.ROTATE_90).save(root / "loose.png")
    return root


@pytest.fixture(scope="module")
def tiny_unclip(tmp_path_factory):
    from eegloop.feedback.tiny import build_tiny_unclip_pipeline

    return build_tiny_unclip_pipeline(tmp_path_factory.mktemp("tiny-unclip"), embed_dim=64)


@pytest.mark.slow
def test_retrieve_source_finds_the_nearest_image(trained, candidates_dir):
    """The retrieve source on a folder with a never-trained class and an unlabelled image: an encoder output equal
    to an image's centred embedding retrieves that very image; classes, ranks and probabilities follow."""
    from eegloop.feedback.loop import ImageSource
    from eegloop.feedback.retrieval import UNLABELLED
    from eegloop.stimuli import load_stimuli

    tmp, proto, db, _, encoder, _ = trained
    proto = proto.replace(feedback=FeedbackConfig(retrieve_folder=str(candidates_dir)))
    cache = tmp / "cache-unit"
    lines = []
    src = ImageSource("retrieve", proto, load_stimuli(proto), tmp / "img-unit", lines.append, encoder=encoder,
                      cache_dir=cache)
    cands = src.retriever.candidates
    assert len(cands) == 10 and cands.classes == ["circle", "square", "star"]
    assert UNLABELLED in cands.labels
    by_class = {c.label: c for c in cands.candidates}
    assert by_class["star"].trained is False and by_class["circle"].trained is True
    assert by_class["star"].path.parent.name == "star" and by_class[UNLABELLED].class_id is None
    assert len(list(cache.rglob("*.npy"))) == 10  # embedded once, cached by content
    assert any("never trained" in line for line in lines)

    for i in (0, 3, 4, 7):  # trained classes, the unlabelled image, a never-trained class
        want = cands.candidates[i]
        z = cands.embeddings[i] - encoder.center
        z = (z / np.linalg.norm(z)).astype(np.float32)
        r = src.retriever.query(z)
        assert r.best.candidate.sha256 == want.sha256 and r.best.similarity == pytest.approx(1.0, abs=1e-5)
        assert len(r.hits) == 5 and [h.rank for h in r.hits] == list(range(5))
        sims = [h.similarity for h in r.hits]
        assert sims == sorted(sims, reverse=True)
        assert r.predicted == want.label and r.scored == want.trained
        assert set(r.probabilities) == set(cands.labels) and abs(sum(r.probabilities.values()) - 1) < 1e-6
        assert max(r.probabilities, key=r.probabilities.get) == want.label
        assert r.class_scores[want.label] == pytest.approx(1.0, abs=1e-5)
        img = src.request(1, r.predicted, retrieval=r, embedding=z)  # retrieve: the image at once
        assert img.source == "retrieved" and img.path == str(want.path) and img.image.size == (64, 64)
        j = r.to_json()
        assert j["sha256"] == want.sha256 and j["class"] == want.class_id and len(j["top"]) == 5
    src.close()

    # the stimuli themselves when there is no folder; the class labels are the stimulus classes
    src = ImageSource("retrieve", trained[1], load_stimuli(trained[1]), tmp / "img-unit", lines.append,
                      encoder=encoder, cache_dir=cache)
    assert src.retriever.candidates.classes == ["circle", "square"] and len(src.retriever.candidates) == 20
    src.close()


def test_tiny_unclip_generates_from_an_embedding(tiny_unclip, trained):
    """The tiny Stable unCLIP loads through from_pretrained and makes a seeded image from an embedding, directly and
    through the embedding source's worker thread; wrong sizes and missing models are one line."""
    from eegloop.feedback.generator import EmbeddingGenerator
    from eegloop.feedback.loop import ImageSource
    from eegloop.stimuli import load_stimuli

    cfg = FeedbackConfig(embedding_generator=str(tiny_unclip), size_px=64)
    gen = EmbeddingGenerator(cfg, 64, TINY_CLIP)
    assert gen.expected_dim == 64
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    a, b = gen.generate(e1, 3, "circle"), gen.generate(e1, 3)
    assert a.image.size == (64, 64) and a.source == "generated" and a.class_id == "circle"
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))  # seeded
    assert not np.array_equal(np.asarray(a.image), np.asarray(gen.generate(e2, 3).image))

    with pytest.raises(EegloopError) as exc:
        EmbeddingGenerator(cfg, 32, "ViT-B-32")
    msg = str(exc.value)
    assert "teacher.model" in msg and "feedback.embedding_generator" in msg and "\n" not in msg
    t0 = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as exc:
        EmbeddingGenerator(FeedbackConfig(embedding_generator="stabilityai/stable-diffusion-2-1-unclip"), 64)
    assert time.monotonic() - t0 < 20 and "\n" not in str(exc.value)
    assert "feedback.embedding_generator" in str(exc.value)
    with pytest.raises(ModelNotAvailableError, match="not found"):
        EmbeddingGenerator(FeedbackConfig(embedding_generator="/nonexistent/unclip"), 64)
    with pytest.raises(ModelNotAvailableError, match="feedback.embedding_generator"):
        EmbeddingGenerator(FeedbackConfig(), 64)

    # mode embedding: the request returns at once, the image comes from the worker thread
    tmp, proto, db, _, encoder, _ = trained
    proto = proto.replace(feedback=cfg)
    src = ImageSource("embedding", proto, load_stimuli(proto), tmp / "img-gen", lambda _m: None, encoder=encoder,
                      cache_dir=tmp / "cache-unit")
    try:
        assert src.live and src.warmup_s > 0
        z = encoder.encode(db.load_epochs("S1").data[0])
        r = src.retriever.query(z)
        t0 = time.perf_counter()
        assert src.request(7, r.predicted, retrieval=r, embedding=z) is None
        assert time.perf_counter() - t0 < 0.05
        deadline = time.monotonic() + 60
        got = None
        while got is None and time.monotonic() < deadline:
            got = src.poll(7)
            time.sleep(0.01)
        assert got is not None and got.image.size == (64, 64) and got.class_id == r.predicted
    finally:
        src.close()


@pytest.mark.slow
def test_retrieve_feedback_block(trained, candidates_dir):
    """The real feedback block in retrieve mode on the simulator: each trial shows the nearest candidate image and
    logs the stages' latencies, the image, its similarity and class folder, and the top 5."""
    from eegloop.feedback.loop import run_feedback

    tmp, proto, db, rec, encoder, model_id = trained
    proto = proto.replace(feedback=FeedbackConfig(trials=3, display_s=0.1, mode="retrieve",
                                                  retrieve_folder=str(candidates_dir)))
    lines = []
    res = run_feedback(proto, "S1", db, simulate=True, session_id=rec.session_id, progress=lines.append,
                       trial_offset=100)
    assert res.mode == "retrieve" and res.trials == 3 and res.missing == 0 and res.model_id == model_id
    assert res.candidates == 10 and res.n_classes == 4 and 0 <= res.correct <= res.scored <= 3
    assert set(res.latency_ms) >= {"decode_ms", "retrieve_ms", "image_ready_ms", "to_screen_ms",
                                   "onset_to_screen_ms"}
    rows = db.get_feedback_trials(rec.session_id)
    assert [r.trial for r in rows] == [101, 102, 103]
    files = {str(p) for p in candidates_dir.rglob("*.png")}
    for r in rows:
        assert r.mode == "retrieve" and r.model_id == model_id and r.true_class in CLASSES
        lat = r.latencies
        assert 0 <= lat["decode_ms"] <= lat["retrieve_ms"] <= lat["image_ready_ms"] <= lat["to_screen_ms"]
        assert lat["decode_ms"] < 500 and lat["onset_to_screen_ms"] > lat["to_screen_ms"]
        ret = lat["retrieval"]
        assert ret["path"] in files and db.abspath(r.image_path).resolve() == db.abspath(ret["path"]).resolve()
        assert len(ret["top"]) == 5 and ret["top"][0]["sha256"] == ret["sha256"]
        assert [h["similarity"] for h in ret["top"]] == sorted((h["similarity"] for h in ret["top"]), reverse=True)
        assert r.predicted_class == (ret["class"] or "(unlabelled)")
        assert abs(sum(r.probabilities.values()) - 1) < 1e-5 and r.predicted_class in r.probabilities
    shown = [e.payload for e in db.get_events(rec.session_id, "fb_image_on")]
    assert len(shown) == 3 and all(p["source"] == "retrieved" and "similarity" in p for p in shown)
    assert any(line.startswith("feedback mode: retrieve") for line in lines)
    assert sum("running" in line for line in lines) == 3
    info = db.get_session(rec.session_id).info["feedback"]
    assert info["mode"] == "retrieve" and info["candidates"] == 10
    assert all(r.latencies["retrieval"]["cue"].endswith(".png") for r in rows)
    # the report shows each trial's stimulus beside its five nearest candidates
    from eegloop.report import write_report

    page = write_report(db, rec.session_id, tmp / "report").read_text()
    assert "five nearest candidates" in page and "nearest images of the shown class" in page
    section = page.split("five nearest candidates", 1)[1]
    assert section.count("<img src='data:image/png;base64,") >= 3 * 6  # cue + top 5, three trials


def test_feedback_without_encoder_is_one_line(tmp_path):
    from eegloop.database import Database
    from eegloop.feedback.loop import run_feedback

    proto = _protocol(tmp_path, mode="retrieve")
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.get_or_add_subject("S2")
    with pytest.raises(EegloopError) as exc:
        run_feedback(proto, "S2", db, simulate=True, progress=None)
    msg = str(exc.value)
    assert "eegloop train --subject S2 --encoder" in msg and "quick-train" in msg and "\n" not in msg
