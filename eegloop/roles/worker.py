"""The worker process: online decoding and image generation for the feedback block.

It loads the subject's decoder (or EEG encoder) and the image source (a diffusion generator warmed up, a bank
generated before the block, held-out stimuli, or the retrieval candidates), takes each epoch the acquisition
process cuts, decodes it the moment it arrives, gets the image of what it decoded and sends it to the presenter
over their own queue — the pixels of a generated image, the file of any other (the presenter preloads a bank's
files) — with the decoding's numbers and LSL times. Generated images are saved with the session afterwards.

Python-heavy work (diffusers, torch) here never holds the presenter's interpreter.
"""
from __future__ import annotations

import queue
from pathlib import Path
from typing import Optional

import numpy as np

from .._logging import logger
from .._worker import Worker
from ..errors import EegloopError
from .child import Role
from .messages import (FeedbackImage, FeedbackReady, LoadModel, ModelLoaded, PrepareFeedback, Say, StartDecoding,
                       StopDecoding, WorkerFailed)

__all__ = ["WorkerRole"]


class WorkerRole(Role):
    """Parameters: the protocol, the database (URL and data folder), the queue epochs arrive on (from the
    acquisition process) and the queue images go to (the presenter's)."""

    name = "worker"

    def __init__(self, link, protocol, db_url: str, data_dir: str, epochs, images):
        super().__init__(link)
        from ..database import Database
        from ..decoder import load_decoder  # noqa: F401 - torch and the decoder imported now, while the visit records

        self.protocol = protocol
        self.db = Database(db_url, data_dir=data_dir, create=False)
        self.epochs, self.images = epochs, images
        self.decoder = self.encoder = None
        self.model_id: Optional[int] = None
        self.mode = None
        self.source = None
        self.decode = None
        self.classes_of: dict = {}
        self._decoding: Optional[Worker] = None

    def say(self, text: str) -> None:
        self.link.emit(Say(str(text)))

    def on_LoadModel(self, cmd: LoadModel) -> ModelLoaded:
        """The subject's latest decoder (or EEG encoder), checked against the stimuli and the online epochs."""
        from ..decoder import check_epoch_length, load_decoder
        from ..feedback.loop import EMBEDDING_MODES, load_encoder_for
        from ..recorder.epocher import epoch_window
        from ..stimuli import load_stimuli

        proto, amp = self.protocol, self.protocol.amplifier
        self.mode = cmd.mode
        stimuli = load_stimuli(proto)
        if cmd.mode in EMBEDDING_MODES:
            self.encoder, self.model_id = load_encoder_for(self.db, cmd.subject, cmd.mode)
            classes = list((self.encoder.meta or {}).get("classes") or {})
        else:
            self.decoder, self.model_id = load_decoder(self.db, cmd.subject)
            missing = [c for c in stimuli.classes if c not in self.decoder.classes]
            if missing:
                raise EegloopError(f"the model of {cmd.subject!r} was trained without class {missing[0]}; retrain "
                                   "first")
            classes = list(self.decoder.classes)
        # before anything is shown: the online epochs must be cut like the training ones
        check_epoch_length((self.decoder or self.encoder).meta,
                           np.zeros(epoch_window(proto.epochs, amp.sfreq).length))
        from ..feedback.cues import trained_images

        trained = trained_images((self.decoder or self.encoder).meta or {})
        return ModelLoaded(self.model_id, classes, sorted(trained) if trained is not None else None)

    def on_PrepareFeedback(self, cmd: PrepareFeedback) -> FeedbackReady:
        from ..feedback.loop import DecodeWorker, ImageSource
        from ..stimuli import load_stimuli

        fb = self.protocol.feedback
        stimuli = load_stimuli(self.protocol)
        self.img_dir = Path(cmd.img_dir)
        self.source = ImageSource(self.mode, self.protocol, stimuli, self.img_dir, self.say,
                                  progress=cmd.show_progress, encoder=self.encoder,
                                  cache_dir=self.db.data_dir / "cache" / "clip")
        self.decode = DecodeWorker(self.decoder, cmd.plan, fb.images_per_trial, self.source, encoder=self.encoder)
        self.classes_of = {pt.trial: pt.class_id for pt in cmd.plan}
        r = self.source.retriever
        n_classes = len(r.candidates.labels) if r is not None else len(self.decoder.classes)
        return FeedbackReady(self.model_id, self.source.warmup_s, n_classes, len(r.candidates) if r is not None else 0,
                             [gi.path for gi in self.source.preloaded()], self.source.live)

    def on_StartDecoding(self, _cmd: StartDecoding) -> None:
        self._decoding = Worker.of(self._loop, "eegloop-decode").start()

    def on_StopDecoding(self, _cmd: StopDecoding) -> None:
        if self._decoding is not None:
            self._decoding.stop(5)
            self._decoding = None

    def _loop(self, worker: Worker) -> None:
        """Each epoch decoded the moment it arrives; a live image sent once generated."""
        try:
            self._decode_loop(worker)
        except BaseException as exc:  # the thread must not end silently: the presenter would wait for nothing
            import traceback

            logger.debug("%s", traceback.format_exc())
            self.link.emit(WorkerFailed(f"the worker's decoding stopped: {type(exc).__name__}: {exc}"))

    def _decode_loop(self, worker: Worker) -> None:
        waiting: dict = {}  # trial -> Decoded whose image is being generated
        while not worker.stopping:
            try:
                ep = self.epochs.get(timeout=0.004 if waiting else 0.05)
            except queue.Empty:
                ep = None
            except (EOFError, OSError):
                return
            if ep is not None:
                try:
                    d = self.decode.step(ep)
                except Exception as exc:  # the trial times out on screen and is logged as skipped; the block goes on
                    logger.error("feedback epoch of image %s: decoding failed: %s", ep.trial, exc)
                    d = None
                if d is not None:
                    if d.image is None:
                        waiting[d.trial] = d
                    else:
                        self._send(d)
            for trial in list(waiting):
                try:
                    img = self.source.poll(trial)
                except EegloopError as exc:
                    d = waiting.pop(trial)
                    self.images.put(FeedbackImage(trial, d.probs, "", d.t_probs, d.epoch.ready_lsl, error=str(exc)))
                    continue
                if img is not None:
                    d = waiting.pop(trial)
                    d.image = img
                    self._send(d)

    def _send(self, d) -> None:
        """The trial's image and numbers to the presenter; a generated image then saved with the session."""
        from ..feedback.loop import safe_name

        ret, img = d.retrieval, d.image
        pred = ret.predicted if ret is not None else max(d.probs, key=d.probs.get)
        generated = img.source == "generated"
        path = str(self.img_dir / f"trial-{d.trial:04d}_{safe_name(pred)}.png") if generated else img.path
        nearest = None
        if ret is not None:
            b = ret.best
            nearest = {"name": b.candidate.path.name, "similarity": float(b.similarity),
                       "class": b.candidate.class_id, "trained": bool(b.candidate.trained)}
        cls = self.classes_of.get(d.trial)
        msg = FeedbackImage(
            trial=d.trial, probabilities=d.probs, predicted=pred, probs_lsl=d.t_probs,
            epoch_complete_lsl=d.epoch.ready_lsl, source=img.source, path=path,
            pixels=np.asarray(img.image.convert("RGB")) if generated else None,
            seed=img.seed if img.source != "retrieved" else None, ready_lsl=img.ready_lsl,
            embedding_lsl=d.t_embedding, retrieval=ret.to_json() if ret is not None else None, nearest=nearest,
            scored=ret is None or cls in self.source.retriever.candidates.labels)
        self.images.put(msg)
        if generated:
            try:
                from .._files import private_file

                private_file(path, create=True)  # 0600 before the first byte, as the feedback loop's images
                img.image.save(path)
            except OSError as exc:
                logger.error("saving the feedback image %s: %s", path, exc)

    def close(self) -> None:
        if self._decoding is not None:
            self._decoding.stop(5)
        if self.source is not None:
            self.source.close()
        self.db.engine.dispose()
