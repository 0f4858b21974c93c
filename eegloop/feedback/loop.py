"""The closed loop: stimulus -> epoch -> decode -> image of the decoded class on screen.

Each feedback trial shows a stimulus (a ``stim_on`` marker with
``"feedback": true``), takes its epoch from the recorder the moment its last
sample is in, decodes it with the subject's latest model, gets an image of the
decoded class (generated live in a worker thread, from a pre-generated bank, or
a held-out stimulus image), shows it at the next flip, and logs the trial with
every stage's LSL time. The display keeps flipping at its frame rate while it
waits: nothing in the loop blocks on the generator.

Two trial formats (``feedback.format``): ``cue`` shows one held-out image and
then its feedback; ``rsvp`` shows ``feedback.rsvp_images`` held-out images of
the trial's class back to back at the training pace (``paradigm.image_s``), so
the decoder sees epochs like the ones it was trained on (each image followed by
the next, not by a blank wait), and decides on the class with the highest
summed log-probability over the burst — evidence accumulation, as RSVP BCIs do.
Each image of a burst is its own ``stim_on`` marker and epoch (its own trial
number, with ``feedback_trial`` naming the trial it belongs to).

Latencies, from the moment the (last) epoch was complete: ``decode_ms`` (probabilities
ready), ``image_ready_ms`` (image available), ``to_screen_ms`` (the flip that
showed it).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..lsl import configure_lsl, local_clock
from ..protocol import Protocol

__all__ = ["FeedbackResult", "run_feedback"]


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


@dataclass(frozen=True)
class PlannedTrial:
    """One feedback trial: its number, class, the images shown and each image's own marker trial number."""

    trial: int
    class_id: str
    images: tuple  # Stimulus, one per epoch (one in the cue format)
    image_trials: tuple  # the stim_on marker's trial number of each image (epochs are numbered by these)


def _choose_trials(stimuli, n: int, seed: int, trial_offset: int, cues: dict | None = None,
                   per_trial: int = 1) -> list[PlannedTrial]:
    """Class-balanced feedback trials, seeded, no class twice in a row where possible.

    With ``cues`` (:func:`cue_images`) every image shown is one of its class's held-out images;
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


def run_feedback(protocol: Protocol, subject: str, db, simulate: bool = False, session_id: int | None = None,
                 mode: str | None = None, trials: int | None = None, progress: Callable[[str], None] | None = print,
                 trial_offset: int = 0, run_index: int | None = None, presenter=None) -> FeedbackResult:
    """Run one feedback block with the subject's latest model.

    Parameters
    ----------
    mode : str | None
        ``live``, ``bank`` or ``stimulus`` (default: ``feedback.mode``).
    session_id : int | None
        Add the block to this session (default: a new session of kind ``feedback``).
    presenter : Presenter | None
        An open window to reuse (a whole visit keeps one window).
    """
    from ..decoder import load_decoder
    from ..stimuli import load_stimuli

    from ..bus import BUS

    say = BUS.tee(progress)
    fb = protocol.feedback
    mode = mode or fb.mode
    n_trials = trials or fb.trials
    amp = protocol.amplifier
    configure_lsl(amp.lsl_scope)
    stimuli = load_stimuli(protocol)
    decoder, model_id = load_decoder(db, subject)
    missing_cls = [c for c in stimuli.classes if c not in decoder.classes]
    if missing_cls:
        raise EegloopError(f"the model of {subject!r} was trained without class {missing_cls[0]}; retrain first")
    db.get_or_add_subject(subject)
    created = session_id is None
    if created:
        session_id = db.create_session(subject, protocol, kind="feedback")
    from ..database.claim import SessionClaim

    try:
        with SessionClaim(db, session_id):
            return _feedback(protocol, subject, db, simulate, session_id, mode, n_trials, say, progress,
                             trial_offset, run_index, presenter, stimuli, decoder, model_id)
    except BaseException:
        # a feedback session that never got a trial (no amplifier, no generator, ...) is not left behind
        if created and not db.get_feedback_trials(session_id) and db.count_epochs(session_id) == 0:
            db.delete_session(session_id)
        raise


def _feedback(protocol, subject, db, simulate, session_id, mode, n_trials, say, progress, trial_offset, run_index,
              presenter, stimuli, decoder, model_id):
    from ..paradigm.presentation import Aborted, Presenter
    from ..rig import Rig
    from .generator import DiffusionGenerator, GeneratorWorker, ImageBank, StimulusPicker

    fb = protocol.feedback
    amp = protocol.amplifier
    img_dir = db.data_dir / "images" / f"sub-{subject}" / f"ses-{session_id:04d}"
    from .._files import private_dir

    private_dir(img_dir)  # images/...: 0700 when eegloop creates it

    # the generator comes first: a missing model fails before anything starts
    gen = worker = bank = picker = None
    warm = 0.0
    if mode in ("live", "bank"):
        gen = DiffusionGenerator(fb, stimuli.classes)
        warm = gen.warmup()
        say(f"generator {fb.generator} on {gen.device} ({gen.dtype}): warm-up {warm:.2f} s")
        if mode == "bank":
            bank = ImageBank(gen, list(stimuli.classes), fb.bank_per_class, fb.seed, img_dir / "bank",
                             progress=progress is not None)
        else:
            worker = GeneratorWorker(gen.generate)
    else:
        picker = StimulusPicker(stimuli)
        say("feedback mode: stimulus (no generator: a stimulus image of the decoded class is shown)")

    own_window = presenter is None
    rig = Rig(protocol, simulate, outlet=presenter.outlet if presenter is not None else None).start()
    outlet = rig.outlet
    runs = db.get_runs(session_id)
    run_index = run_index or (max((r.index for r in runs), default=0) + 1)
    raw_dir = db.data_dir / "raw" / f"sub-{subject}" / f"ses-{session_id:04d}"
    from ..database import CLAIM_OWNER

    try:
        rec = rig.connect(db=db, session_id=session_id, raw_dir=raw_dir, owner=CLAIM_OWNER,
                          raw_prefix=f"sub-{subject}_ses-{session_id:04d}_task-feedback_run")
    except BaseException:
        rig.close()
        raise
    online = rec.subscribe(maxsize=256)  # bounded: a stalled decoder never grows memory
    rec.start()
    pres = presenter or Presenter(protocol, outlet)
    from ..bus import BUS, CONTROLS, FeedbackTrial, Phase

    unhook_abort = CONTROLS.on_abort(pres.request_abort)  # the console's abort button
    rows = []
    block = 10_000 + run_index  # feedback blocks are numbered apart from the recording's
    BUS.publish(Phase("feedback", f"{n_trials} trials, mode {mode}", session_id=session_id))
    try:
        if own_window:
            pres.open()
        rec.begin_run(run_index)
        from psychopy import visual

        from ..stimuli import cue_images

        per_trial = fb.images_per_trial
        plan = _choose_trials(stimuli, n_trials, fb.seed, trial_offset, cue_images(stimuli, fb.cue_share), per_trial)
        owner = {it: pt.trial for pt in plan for it in pt.image_trials}  # an image's epoch -> its feedback trial
        evidence: dict[int, list] = {}
        decoded: "queue.Queue" = queue.Queue()
        stop = threading.Event()

        def decode_loop():
            # epoch -> probabilities (-> summed over the burst) -> image request, off the display thread
            while not stop.is_set():
                try:
                    ep = online.get(timeout=0.05)
                except queue.Empty:
                    continue
                if ep.trial not in owner:
                    continue
                t_trial = owner[ep.trial]
                p = decoder.predict(ep)
                if per_trial > 1:
                    got_ps = evidence.setdefault(t_trial, [])
                    got_ps.append(p)
                    if len(got_ps) < per_trial:
                        continue
                    logp = {c: float(sum(np.log(max(q[c], 1e-12)) for q in got_ps)) for c in p}
                    top = max(logp.values())
                    z = sum(np.exp(v - top) for v in logp.values())
                    p = {c: float(np.exp(v - top) / z) for c, v in logp.items()}  # the burst's posterior
                t_p = local_clock()
                pr = max(p, key=p.get)
                img = None
                if bank is not None:
                    img = bank.get(pr)
                elif picker is not None:
                    img = picker.get(pr)
                else:
                    worker.submit(t_trial, pr, fb.seed + t_trial)
                decoded.put((t_trial, ep, p, t_p, img))

        decoder_thread = threading.Thread(target=decode_loop, name="eegloop-decode", daemon=True)
        decoder_thread.start()
        n_img = pres.frames_per_image
        n_show = max(1, int(round(fb.display_s * pres.frame_rate)))
        timeout = protocol.epochs.tmax + protocol.epochs.margin_s + 3.0
        px = protocol.paradigm.screen.image_size_px
        # every cue is loaded before the block and every bank image uploaded once: no disk access
        # or texture upload sits between an epoch and its feedback image
        cues = [[visual.ImageStim(pres.win, image=str(st.path), size=(px, px), units="pix") for st in pt.images]
                for pt in plan]
        shown_stims: dict[int, object] = {}
        if bank is not None:
            for imgs in bank.images.values():
                for gi in imgs:
                    shown_stims[id(gi.image)] = visual.ImageStim(pres.win, image=gi.image, size=(px, px), units="pix")
        pres.push_on_flip("block_start", run=run_index, block=block, feedback=True, mode=mode)
        pres.flip()
        for k, pt in enumerate(plan):
            trial, cls = pt.trial, pt.class_id
            # the cue (or the burst): stimulus images back to back, each marked like any stimulus
            for cue, stim, image_trial in zip(cues[k], pt.images, pt.image_trials):
                for f in range(n_img):
                    cue.draw()
                    pres.fixation.draw()
                    if f == 0:
                        pres.push_on_flip("stim_on", run=run_index, block=block, trial=image_trial,
                                          **{"class": cls}, image=stim.path.name, feedback=True,
                                          feedback_trial=trial)
                    pres.flip()
            # wait for the epoch (decoded in a worker the moment it is complete); keep flipping
            t_wait = time.monotonic()
            epoch = probs = t_probs = got = None
            while True:
                pres.wait_for_frame_or(lambda: not decoded.empty() or (
                    worker is not None and not worker.results.empty()))
                pres.fixation.draw()
                while not decoded.empty():
                    d_trial, d_epoch, d_probs, d_t, d_got = decoded.get_nowait()
                    if d_trial == trial:
                        epoch, probs, t_probs, got = d_epoch, d_probs, d_t, d_got
                if worker is not None and probs is not None and got is None and not worker.results.empty():
                    _key, res = worker.results.get_nowait()
                    if isinstance(res, Exception):
                        raise EegloopError(f"generation failed: {res}")
                    got = res
                if got is not None:
                    break
                if time.monotonic() - t_wait > timeout + (60 if worker is not None else 0):
                    break
                pres.flip()
                pres._check_keys()
            if epoch is None or got is None:
                logger.warning("feedback trial %d: no %s in time; skipped", trial, "epoch" if epoch is None else "image")
                rows.append(dict(trial=trial, true_class=cls, missing=True))
                continue
            # show the image of the decoded class at the next flip
            pred = max(probs, key=probs.get)
            if got.source == "generated":
                got.path = str(img_dir / f"trial-{trial:04d}_{pred}.png")
                got.image.save(got.path)
            fbim = shown_stims.get(id(got.image)) or visual.ImageStim(pres.win, image=got.image, size=(px, px),
                                                                      units="pix")
            fbim.draw()
            pres.push_on_flip("fb_image_on", trial=trial, predicted=pred, **{"class": cls}, source=got.source)
            t_on = pres.flip()
            for _ in range(n_show - 1):
                fbim.draw()
                pres.flip()
            pres.fixation.draw()
            pres.flip()
            t0 = epoch.ready_lsl
            lat = {"epoch_complete_lsl": t0, "probs_lsl": t_probs, "image_ready_lsl": got.ready_lsl,
                   "on_screen_lsl": t_on, "decode_ms": (t_probs - t0) * 1000,
                   "image_ready_ms": (max(got.ready_lsl, t_probs) - t0) * 1000, "to_screen_ms": (t_on - t0) * 1000}
            if per_trial > 1:
                lat["epochs"] = per_trial
            row = dict(trial=trial, true_class=cls, predicted=pred, probabilities=probs, image_path=got.path,
                       seed=got.seed, latencies=lat, missing=False)
            rows.append(row)
            db.add_feedback_trial(session_id, model_id=model_id, trial=trial, mode=mode, probabilities=probs,
                                  predicted_class=pred, true_class=cls,
                                  image_path=db.relpath(got.path) if got.path else None, seed=got.seed,
                                  latencies=lat)
            BUS.publish(FeedbackTrial(k + 1, n_trials, trial, cls, pred, float(probs[pred]), got.path,
                                      {x: round(float(v), 2) for x, v in lat.items() if x.endswith("_ms")},
                                      len(probs)))
            say(f"feedback {k + 1}/{n_trials}: shown {cls}, decoded {pred} (p={probs[pred]:.2f}) "
                f"{'✓' if pred == cls else '✗'}  decode {lat['decode_ms']:.1f} ms, image {lat['image_ready_ms']:.1f} ms,"
                f" on screen {lat['to_screen_ms']:.1f} ms")
        pres.push_on_flip("block_end", run=run_index, block=block, feedback=True)
        pres.flip()
    except Aborted:
        say("feedback aborted by the operator; trials so far are kept")
    finally:
        unhook_abort()
        # each step runs even if one before it raises: the recording is always flushed
        try:
            if "stop" in locals():
                stop.set()
                decoder_thread.join(2)
            if own_window:
                pres.close()
        finally:
            try:
                rec.stop()
            finally:
                rig.close()  # the simulator and an outlet of its own (the recorder is stopped already)
                if worker is not None:
                    worker.close()
    done = [r for r in rows if not r["missing"]]

    def stat(key):
        v = np.array([r["latencies"][key] for r in done]) if done else np.array([np.nan])
        return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}

    per_trial = fb.images_per_trial
    res = FeedbackResult(session_id=session_id, model_id=model_id, mode=mode, trials=len(done),
                         correct=sum(r["predicted"] == r["true_class"] for r in done),
                         missing=len(rows) - len(done),
                         latency_ms={k: stat(k) for k in ("decode_ms", "image_ready_ms", "to_screen_ms")},
                         warmup_s=warm, frame_rate_hz=pres.frame_rate, n_classes=len(decoder.classes),
                         rows=rows)
    db.set_session_status(session_id, "feedback-done",
                          feedback={"mode": mode, "format": fb.format, "images_per_trial": per_trial,
                                    "trials": res.trials, "correct": res.correct,
                                    "latency_ms": res.latency_ms, "model_id": model_id})
    return res
