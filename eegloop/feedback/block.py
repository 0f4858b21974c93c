"""The feedback block as the visit runs it (:class:`~eegloop.phases.feedback.FeedbackPhase`): the trials planned
(class-balanced, seeded, the held-out cues), each shown trial logged (database, bus, one progress line), and the
block's numbers (:class:`FeedbackResult`). The decoding and the images, in the worker process, are
:mod:`eegloop.feedback.loop`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..database import FeedbackSummary, SessionStatus
from ..errors import EegloopError

__all__ = ["EMBEDDING_MODES", "FeedbackResult", "PlannedTrial", "choose_trials", "load_encoder_for", "TrialLog",
           "feedback_result"]

#: feedback modes driven by the EEG encoder's embedding rather than the classifier's probabilities
EMBEDDING_MODES = ("retrieve", "embedding")


@dataclass
class FeedbackResult:
    session_id: int
    model_id: int
    mode: str
    trials: int
    correct: int
    missing: int
    latency_ms: dict = field(default_factory=dict)  # stage -> {"median", "p95"}
    warmup_s: float = 0.0
    frame_rate_hz: float = 0.0
    n_classes: int = 0
    rows: list = field(default_factory=list)
    scored: int | None = None  # embedding modes: trials whose nearest image's class could be judged (else all)
    candidates: int = 0  # embedding modes: candidate images ranked each trial


@dataclass(frozen=True)
class PlannedTrial:
    """One feedback trial: its number, class, the images shown and each image's own marker trial number."""

    trial: int
    class_id: str
    images: tuple  # Stimulus, one per epoch (one in the cue format)
    image_trials: tuple  # the stim_on marker's trial number of each image (epochs are numbered by these)


def choose_trials(stimuli, n: int, seed: int, trial_offset: int, cues: dict | None = None,
                  per_trial: int = 1) -> list[PlannedTrial]:
    """Class-balanced feedback trials, seeded, no class twice in a row where possible.

    With ``cues`` (:func:`~eegloop.stimuli.cue_images`) every image shown is one of its class's held-out images;
    ``per_trial`` images each (the rsvp format), distinct while the class has enough."""
    rng = np.random.default_rng(seed + 17)
    classes = list(stimuli.classes)
    by = {c: (cues or {}).get(c) or v for c, v in stimuli.by_class().items()}
    seq = []
    while len(seq) < n:
        order = list(rng.permutation(classes))
        if seq and order[0] == seq[-1] and len(order) > 1:
            order[0], order[1] = order[1], order[0]
        seq += order
    out = []
    for i, c in enumerate(seq[:n]):
        pool = by[c]
        pick = (rng.permutation(len(pool))[:per_trial] if per_trial <= len(pool)
                else rng.integers(len(pool), size=per_trial))
        trial = trial_offset + i + 1
        out.append(PlannedTrial(trial, c, tuple(pool[j] for j in pick),
                                tuple((trial - 1) * per_trial + j + 1 for j in range(per_trial))))
    return out


def load_encoder_for(db, subject: str, mode: str):
    """The subject's latest EEG encoder, or one line saying how to train one."""
    from ..decoder import load_encoder
    from ..errors import DatabaseError

    db.get_subject(subject)  # an unknown subject is its own one-line error
    try:
        return load_encoder(db, subject)
    except DatabaseError:
        raise EegloopError(f"feedback mode {mode} needs an EEG encoder and subject {subject!r} has none: run the "
                           f"session's quick-train with feedback.mode {mode} (or encoder.enabled: true), or: eegloop "
                           f"train --subject {subject} --encoder") from None


class TrialLog:
    """Each shown trial (:class:`~eegloop.roles.messages.FeedbackShown`) into the database, onto the bus (the
    console) and one progress line; :meth:`add` returns the trial's row (what :func:`feedback_result` sums).

    Latencies, from the moment the (last) epoch was complete: ``decode_ms``, ``retrieve_ms`` (embedding modes),
    ``image_ready_ms``, ``to_screen_ms``; and ``onset_to_screen_ms``, from the flip that showed the (last) image to
    the flip that showed its feedback. In the embedding modes the retrieval (nearest image, its similarity and
    class folder, the top 5) is stored with the latencies under ``retrieval``, and the line shows the running
    accuracy over the trials that can be judged."""

    def __init__(self, db, session_id: int, model_id: int, mode: str, n_trials: int, say, images_per_trial: int = 1,
                 plan: Optional[list] = None, trained: Optional[frozenset] = None):
        self.db, self.session_id, self.model_id, self.mode = db, session_id, model_id, mode
        self.n_trials, self.say, self.images_per_trial = n_trials, say, images_per_trial
        self.correct = self.scored = 0
        # each trial's images and whether the model saw any of them (:mod:`.cues`)
        self.cues = {pt.trial: [st.sha256 for st in pt.images] for pt in (plan or [])}
        self.trained = trained

    def add(self, shown) -> dict:
        from ..bus import BUS, FeedbackTrial

        img = shown.image
        if img is None:
            return dict(trial=shown.trial, true_class=shown.true_class, missing=True)
        t0 = img.epoch_complete_lsl
        lat = {"epoch_complete_lsl": t0, "probs_lsl": img.probs_lsl, "image_ready_lsl": img.ready_lsl,
               "on_screen_lsl": shown.on_screen_lsl, "decode_ms": (img.probs_lsl - t0) * 1000,
               "image_ready_ms": (max(img.ready_lsl, img.probs_lsl) - t0) * 1000,
               "to_screen_ms": (shown.on_screen_lsl - t0) * 1000,
               # what the subject lives: from the (last) image's onset on screen to its feedback image
               "onset_lsl": shown.onset_lsl, "onset_to_screen_ms": (shown.on_screen_lsl - shown.onset_lsl) * 1000}
        ret = img.retrieval
        if ret is not None:  # decode: the embedding; retrieve: the candidates ranked
            lat.update(embedding_lsl=img.embedding_lsl, decode_ms=(img.embedding_lsl - t0) * 1000,
                       retrieve_ms=(img.probs_lsl - t0) * 1000)
        if self.images_per_trial > 1:
            lat["epochs"] = self.images_per_trial
        from .cues import cues_trained

        probs, pred, cls = img.probabilities, img.predicted, shown.true_class
        shas = self.cues.get(shown.trial, [])
        was_trained = cues_trained(shas, self.trained)
        stored = dict(lat, retrieval={**ret, "cue": shown.cue, "scored": bool(img.scored)}) if ret is not None else lat
        stored = dict(stored, cue_sha256=shas, cue_trained=was_trained)
        db = self.db
        db.add_feedback_trial(self.session_id, model_id=self.model_id, trial=shown.trial, mode=self.mode,
                              probabilities=probs, predicted_class=pred, true_class=cls,
                              image_path=db.relpath(img.path) if img.path else None, seed=img.seed, latencies=stored)
        k = shown.index
        BUS.publish(FeedbackTrial(k + 1, self.n_trials, shown.trial, cls, pred, float(probs[pred]), img.path,
                                  {x: round(float(v), 2) for x, v in lat.items() if x.endswith("_ms")}, len(probs)))
        ok = pred == cls
        if img.scored:
            self.scored += 1
            self.correct += ok
        mark = "✓" if ok else "✗" if img.scored else "·"
        if ret is None:
            self.say(f"feedback {k + 1}/{self.n_trials}: shown {cls}, decoded {pred} (p={probs[pred]:.2f}) "
                     f"{mark}  decode {lat['decode_ms']:.1f} ms, image {lat['image_ready_ms']:.1f} ms,"
                     f" on screen {lat['to_screen_ms']:.1f} ms")
        else:
            b = img.nearest
            what = (f"retrieved {b['name']}" if self.mode == "retrieve" else f"generated; nearest image {b['name']}")
            kind = "" if b["trained"] else (", unlabelled" if b["class"] is None else ", never trained")
            self.say(f"feedback {k + 1}/{self.n_trials}: shown {cls}, {what} ({pred}{kind}, similarity "
                     f"{b['similarity']:.2f}) {mark}  decode {lat['decode_ms']:.1f} ms, retrieve "
                     f"{lat['retrieve_ms']:.1f} ms, image {lat['image_ready_ms']:.1f} ms, on screen "
                     f"{lat['to_screen_ms']:.1f} ms; running {self.correct}/{self.scored}")
        return dict(trial=shown.trial, true_class=cls, predicted=pred, probabilities=probs, image_path=img.path,
                    seed=img.seed, latencies=lat, missing=False, retrieval=ret, scored=bool(img.scored),
                    cue=shown.cue, cue_sha256=shas, cue_trained=was_trained)


def feedback_result(db, session_id, model_id, mode, fb, rows, warmup_s, frame_rate, n_classes,
                    candidates: int = 0) -> FeedbackResult:
    """The block's numbers (medians and 95th percentiles of each latency), stored with the session."""
    done = [r for r in rows if not r["missing"]]
    embedding = mode in EMBEDDING_MODES

    def stat(key):
        v = np.array([r["latencies"][key] for r in done]) if done else np.array([np.nan])
        return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}

    res = FeedbackResult(session_id=session_id, model_id=model_id, mode=mode, trials=len(done),
                         correct=sum(r["predicted"] == r["true_class"] for r in done),
                         missing=len(rows) - len(done),
                         latency_ms={k: stat(k) for k in ("decode_ms",) + (("retrieve_ms",) if embedding else ())
                                     + ("image_ready_ms", "to_screen_ms", "onset_to_screen_ms")},
                         warmup_s=warmup_s, frame_rate_hz=frame_rate, n_classes=n_classes, rows=rows,
                         scored=sum(bool(r["scored"]) for r in done) if embedding else None, candidates=candidates)
    extra = {"scored": res.scored, "candidates": candidates, "encoder_id": model_id} if embedding else {}
    db.set_session_status(session_id, SessionStatus.FEEDBACK_DONE,
                          feedback=FeedbackSummary(mode=mode, format=fb.format, images_per_trial=fb.images_per_trial,
                                                   trials=res.trials, correct=res.correct,
                                                   latency_ms=res.latency_ms, model_id=model_id, **extra))
    return res
