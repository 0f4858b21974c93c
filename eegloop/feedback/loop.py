"""The closed loop: stimulus -> epoch -> decode -> image of the decoded class on screen.

Each feedback trial shows a stimulus (a ``stim_on`` marker with
``"feedback": true``), takes its epoch from the recorder the moment its last
sample is in, decodes it with the subject's latest model, gets an image of the
decoded class (generated live in a worker thread, from a pre-generated bank, or
a held-out stimulus image), shows it at the next flip, and logs the trial with
every stage's LSL time. The display keeps flipping at its frame rate while it
waits: nothing in the loop blocks on the generator.

Two modes decode a CLIP image embedding instead of a class, with the subject's
EEG encoder (:func:`eegloop.decoder.load_encoder`): ``retrieve`` shows the
candidate image nearest to it (``feedback.retrieve_folder``'s images, of any
classes, or the stimuli: :mod:`.retrieval`), ``embedding`` an image generated
from it by a Stable unCLIP pipeline (:class:`.generator.EmbeddingGenerator`, in
the worker thread like ``live``). In both the nearest candidate's class is the
trial's decision; the nearest images (top 5 with their similarities and class
folders) are stored with the trial's latencies under ``retrieval``.

Two trial formats (``feedback.format``): ``cue`` shows one held-out image and
then its feedback; ``rsvp`` shows ``feedback.rsvp_images`` held-out images of
the trial's class back to back at the training pace (``paradigm.image_s``), so
the decoder sees epochs like the ones it was trained on (each image followed by
the next, not by a blank wait), and decides on the class with the highest
summed log-probability over the burst — evidence accumulation, as RSVP BCIs do.
Each image of a burst is its own ``stim_on`` marker and epoch (its own trial
number, with ``feedback_trial`` naming the trial it belongs to).

Latencies, from the moment the (last) epoch was complete: ``decode_ms`` (probabilities
ready; in the embedding modes the embedding), ``retrieve_ms`` (embedding modes: the
candidates ranked), ``image_ready_ms`` (image available), ``to_screen_ms`` (the flip that
showed it); and what the subject lives, ``onset_to_screen_ms``: from the flip that
showed the (last) image to the flip that showed its feedback (the epoch window,
the filter's right margin, decoding, the image and one refresh).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import EegloopError
from ..lsl import local_clock
from ..progress import verbose
from ..protocol import Protocol
from .block import (EMBEDDING_MODES, FeedbackResult, PlannedTrial, TrialLog, choose_trials, feedback_result,
                    load_encoder_for)

__all__ = ["FeedbackResult", "run_feedback", "ImageSource", "DecodeWorker", "Decoded", "EMBEDDING_MODES",
           "PlannedTrial", "choose_trials", "TrialLog", "feedback_result", "load_encoder_for", "safe_name"]


@verbose
def run_feedback(protocol: Protocol, subject: str, db, simulate: bool = False, session_id: int | None = None,
                 mode: str | None = None, trials: int | None = None, progress: Callable[[str], None] | None = None,
                 trial_offset: int = 0, verbose: bool | str | int | None = None) -> FeedbackResult:
    """Run one feedback block with the subject's latest model (presenter, acquisition, worker and, with
    ``simulate``, the virtual amplifier each in its own process).

    Parameters
    ----------
    mode : str | None
        ``live``, ``bank``, ``stimulus``, ``retrieve`` or ``embedding`` (default: ``feedback.mode``). The last
        two use the subject's latest EEG encoder instead of its classifier.
    session_id : int | None
        Add the block to this session (default: a new session of kind ``feedback``).
    trials : int | None
        How many trials (default ``feedback.trials``).
    progress : callable | None
        Receives the progress lines (one per trial) instead of the ``eegloop.progress`` logger
        (:mod:`eegloop.progress`); they are published on the bus either way.
    verbose : bool | str | int | None
        eegloop's log level for the call, progress lines included (``False``: silent but for problems; ``None``:
        as it is).
    """
    from ..progress import Reporter
    from ..session import Visit, VisitContext, phases_for

    ctx = VisitContext(protocol, subject, db, Reporter(progress), simulate=simulate, feedback_mode=mode,
                       feedback_trials=trials, trial_offset=trial_offset, session_id=session_id)
    Visit(ctx, phases_for("feedback")).run()
    return ctx.feedback


class ImageSource:
    """Where a feedback image comes from: ``bank`` (generated before the block), ``live`` (generated in a worker
    thread when the class is decoded), ``stimulus`` (a held-out stimulus image of the class, no generator),
    ``retrieve`` (the candidate image nearest to the decoded embedding) or ``embedding`` (generated from the
    decoded embedding in a worker thread).

    :meth:`request` asks for the image of a decoded class: bank, stimulus and retrieved images come back at once,
    a live or embedding one later through :meth:`poll`. The generator is built first, so a missing model fails
    before anything starts; the embedding modes then embed the candidate images (:attr:`retriever`), which needs
    ``encoder`` (an :class:`~eegloop.decoder.encoder.OnlineEncoder`) and caches under ``cache_dir``.
    """

    def __init__(self, mode: str, protocol: Protocol, stimuli, img_dir, say, progress: bool = True, encoder=None,
                 cache_dir=None):
        from .generator import DiffusionGenerator, EmbeddingGenerator, GeneratorWorker, ImageBank, StimulusPicker

        fb = protocol.feedback
        self.mode, self.seed = mode, fb.seed
        self.img_dir = img_dir
        self.warmup_s = 0.0
        self._bank = self._worker = self._picker = None
        self.retriever = None
        self._done: dict = {}  # live: trial -> finished image (or the exception)
        if mode in EMBEDDING_MODES:
            from .retrieval import CandidateSet, Retriever

            if encoder is None:
                raise EegloopError(f"feedback mode {mode} needs the subject's EEG encoder")
            self.center = np.asarray(encoder.center, np.float32)
            if mode == "embedding":
                gen = EmbeddingGenerator(fb, encoder.dim, encoder.clip_model)
                self.warmup_s = gen.warmup()
                say(f"embedding generator {fb.embedding_generator} on {gen.device} ({gen.dtype}): warm-up "
                    f"{self.warmup_s:.2f} s")
                self._worker = GeneratorWorker(lambda req, seed: gen.generate(req[0], seed, req[1]))
            trained = list((encoder.meta or {}).get("classes") or {})
            try:
                folder = protocol.resolve_path(fb.retrieve_folder)
                cands = (CandidateSet.from_folder(folder, protocol.stimuli.extensions, trained, encoder.clip_model,
                                                  encoder.clip_pretrained, cache_dir) if folder is not None else
                         CandidateSet.from_stimuli(stimuli, trained, encoder.clip_model, encoder.clip_pretrained,
                                                   cache_dir))
                self.retriever = Retriever(encoder, cands)
            except BaseException:
                self.close()
                raise
            never = [c for c in cands.classes if c not in trained]
            n_cls = len(cands.classes)
            say(f"feedback mode: {mode} (EEG encoder -> CLIP {encoder.clip_model} embedding; nearest of {len(cands)} "
                f"candidate images from {cands.source}, {n_cls} class{'' if n_cls == 1 else 'es'}"
                + (f", {len(never)} never trained" if never else "") + f"; embedded in {cands.seconds:.1f} s)")
        elif mode in ("live", "bank"):
            gen = DiffusionGenerator(fb, stimuli.classes)
            self.warmup_s = gen.warmup()
            say(f"generator {fb.generator} on {gen.device} ({gen.dtype}): warm-up {self.warmup_s:.2f} s")
            if mode == "bank":
                self._bank = ImageBank(gen, list(stimuli.classes), fb.bank_per_class, fb.seed, img_dir / "bank",
                                       progress=progress)
            else:
                self._worker = GeneratorWorker(gen.generate)
        else:
            self._picker = StimulusPicker(stimuli)
            say("feedback mode: stimulus (no generator: a stimulus image of the decoded class is shown)")

    @property
    def live(self) -> bool:
        return self._worker is not None

    def preloaded(self) -> list:
        """The images known before the block (the bank's), to upload to the window once."""
        return [gi for imgs in self._bank.images.values() for gi in imgs] if self._bank is not None else []

    def request(self, trial: int, class_id: str, retrieval=None, embedding=None):
        """The image for ``class_id`` now (bank, stimulus; retrieve: ``retrieval``'s nearest image), or None: a
        live one (embedding: generated from ``embedding``) is then on its way (:meth:`poll`)."""
        if self._bank is not None:
            return self._bank.get(class_id)
        if self._picker is not None:
            return self._picker.get(class_id)
        if self.retriever is not None and self.mode == "retrieve":
            return self.retriever.load(retrieval)
        if self.retriever is not None:
            from .retrieval import clip_space_embedding

            self._worker.submit(trial, (clip_space_embedding(embedding, self.center), class_id), self.seed + trial)
            return None
        self._worker.submit(trial, class_id, self.seed + trial)
        return None

    def poll(self, trial: int):
        """The live image of ``trial`` once generated (None before); a failed generation raises."""
        if self._worker is None:
            return None
        while not self._worker.results.empty():
            key, res = self._worker.results.get_nowait()
            self._done[key] = res
        res = self._done.pop(trial, None)
        if isinstance(res, Exception):
            raise EegloopError(f"generation failed: {res}")
        return res

    def keep(self, got, trial: int, class_id: str) -> None:
        """Save a generated image with the session (bank and stimulus images have their files already)."""
        if got.source == "generated":
            from .._files import private_file

            got.path = str(private_file(self.img_dir / f"trial-{trial:04d}_{class_id}.png", create=True))  # 0600
            got.image.save(got.path)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


@dataclass
class Decoded:
    """A feedback trial's decoding: its (last) epoch, class probabilities, when they were ready, and the image
    (None while a live one is being generated); in the embedding modes also the embedding, when it was ready,
    and the retrieval (:class:`~eegloop.feedback.retrieval.Retrieval`)."""

    trial: int
    epoch: object
    probs: dict
    t_probs: float
    image: object = None
    embedding: object = None
    t_embedding: float | None = None
    retrieval: object = None


class DecodeWorker:
    """Decodes each feedback epoch (in the worker process, the moment the acquisition process hands it over).

    Epochs of images outside the plan are ignored; in the ``rsvp`` format a trial's ``per_trial`` epochs are
    combined (summed log-probabilities, the burst's posterior) before its image is requested. With ``encoder``
    (the embedding modes) each epoch is embedded instead, a burst's embeddings averaged, and the source's
    retriever ranks the candidates.
    """

    def __init__(self, decoder, plan: list, per_trial: int, source: ImageSource, encoder=None):
        self.decoder, self.per_trial, self.source = decoder, per_trial, source
        self.encoder = encoder
        self.owner = {it: pt.trial for pt in plan for it in pt.image_trials}  # an image's epoch -> its trial
        self._evidence: dict[int, list] = {}

    def step(self, ep) -> Decoded | None:
        """The trial's :class:`Decoded` once its (last) epoch is in; None for an epoch outside the plan or before
        the end of a burst. Raises what decoding raised."""
        if ep.trial not in self.owner:
            return None
        trial = self.owner[ep.trial]
        return self._embedding(trial, ep) if self.encoder is not None else self._classes(trial, ep)

    def _classes(self, trial: int, ep) -> Decoded | None:
        p = self.decoder.predict(ep)
        if self.per_trial > 1:
            got_ps = self._evidence.setdefault(trial, [])
            got_ps.append(p)
            if len(got_ps) < self.per_trial:
                return None
            logp = {c: float(sum(np.log(max(q[c], 1e-12)) for q in got_ps)) for c in p}
            top = max(logp.values())
            z = sum(np.exp(v - top) for v in logp.values())
            p = {c: float(np.exp(v - top) / z) for c, v in logp.items()}  # the burst's posterior
        t_p = local_clock()
        return Decoded(trial, ep, p, t_p, self.source.request(trial, max(p, key=p.get)))

    def _embedding(self, trial: int, ep) -> Decoded | None:
        z = self.encoder.encode(ep)
        if self.per_trial > 1:  # a burst: the mean direction of its embeddings
            got = self._evidence.setdefault(trial, [])
            got.append(z)
            if len(got) < self.per_trial:
                return None
            z = np.sum(got, axis=0)
            z = (z / max(float(np.linalg.norm(z)), 1e-12)).astype(np.float32)
        t_z = local_clock()
        ret = self.source.retriever.query(z)
        img = self.source.request(trial, ret.predicted, retrieval=ret, embedding=z)
        return Decoded(trial, ep, ret.probabilities, ret.ready_lsl, img, embedding=z, t_embedding=t_z, retrieval=ret)


def safe_name(label: str) -> str:
    """A class label as part of a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)[:60] or "image"

