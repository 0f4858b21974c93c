"""Image generators for feedback: diffusers text-to-image, image-embedding-to-image, or held-out stimuli.

:class:`DiffusionGenerator` loads ``feedback.generator`` with
``AutoPipelineForText2Image.from_pretrained`` from a local folder or a hub id
that is already in the local cache (never a download: ``local_files_only``),
with fp16 on CUDA and fp32 on the CPU unless ``feedback.dtype`` says
otherwise. Defaults suit a one-step turbo model (``stabilityai/sd-turbo``: 1
step, guidance 0, 512 px). A missing model raises
:class:`~eegloop.errors.ModelNotAvailableError` with one line.

:class:`EmbeddingGenerator` (mode ``embedding``) loads a Stable unCLIP pipeline
(``StableUnCLIPImg2ImgPipeline``) from ``feedback.embedding_generator`` the same
way and makes an image from a CLIP image embedding (the EEG encoder's output)
instead of a prompt.

:class:`GeneratorWorker` runs generation in a thread so the display loop never
waits on it; :class:`ImageBank` pre-generates ``bank_per_class`` images per
class; :class:`StimulusPicker` (mode ``stimulus``) shows a stimulus image of the
decoded class instead of generating one.
"""
from __future__ import annotations

import os
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .._worker import Worker
from ..errors import EegloopError, ModelNotAvailableError
from ..lsl import local_clock
from ..protocol import FeedbackConfig

__all__ = ["DiffusionGenerator", "EmbeddingGenerator", "GeneratorWorker", "ImageBank", "StimulusPicker",
           "GeneratedImage", "generator_available"]


@dataclass
class GeneratedImage:
    class_id: str
    image: "object"  # PIL.Image
    seed: int
    prompt: str
    ready_lsl: float
    source: str  # "generated", "bank", "stimulus", "retrieved"
    path: Optional[str] = None


def generator_available(model: str) -> bool:
    """True when ``model`` is a local folder or a hub id present in the local cache."""
    if Path(model).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "model_index.json"), str)
    except Exception:
        return False


def _device_dtype(cfg: FeedbackConfig, device: str | None):
    """(device, torch dtype) of a generator: ``cuda`` when available; ``feedback.dtype`` auto is fp16 there, else
    fp32."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.dtype == "auto":
        return device, (torch.float16 if device == "cuda" else torch.float32)
    return device, getattr(torch, cfg.dtype)


def _pipeline_source(src: str, what: str, field: str, kind: str) -> str:
    """What ``from_pretrained`` gets for ``src``: its folder when one exists, else the hub id (local cache only);
    a path that names no folder is one line."""
    local = Path(src).expanduser()
    if (local.is_absolute() or src.startswith(".")) and not local.is_dir():
        raise ModelNotAvailableError(f"{what} '{src}' not found ({field}): point it at a {kind} (save_pretrained "
                                     "layout)")
    return str(local) if local.is_dir() else src


class DiffusionGenerator:
    """Text-to-image with a diffusers pipeline; prompt from the protocol's template.

    Parameters
    ----------
    cfg : FeedbackConfig
        generator, steps, guidance, size_px, dtype, prompt, seed.
    class_names : dict
        Class id -> display name used in the prompt.
    device : str | None
        ``cuda`` when available, else ``cpu``.
    """

    def __init__(self, cfg: FeedbackConfig, class_names: dict[str, str], device: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from diffusers import AutoPipelineForText2Image

        self.cfg = cfg
        self.class_names = dict(class_names)
        self.device, dtype = _device_dtype(cfg, device)
        src = cfg.generator
        where = _pipeline_source(src, "generator folder", "feedback.generator", "diffusers model folder")
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(where, dtype=dtype,
                                                             local_files_only=True, safety_checker=None,
                                                             requires_safety_checker=False)
        except (OSError, ValueError, EnvironmentError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotAvailableError(
                f"generator '{src}' is not available locally ({first[:140]}); download it once on a connected "
                f"machine (e.g. huggingface-cli download {src}) or set feedback.generator to a local folder; "
                "or use feedback.mode: stimulus") from None
        self.pipe = pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.dtype = dtype

    def prompt_for(self, class_id: str) -> str:
        return self.cfg.prompt.replace("{class}", self.class_names.get(class_id, class_id))

    def generate(self, class_id: str, seed: int) -> GeneratedImage:
        import torch

        prompt = self.prompt_for(class_id)
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.inference_mode():
            img = self.pipe(prompt, num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.guidance,
                            height=self.cfg.size_px, width=self.cfg.size_px, generator=g).images[0]
        if self.device == "cuda":
            torch.cuda.synchronize()
        return GeneratedImage(class_id, img, int(seed), prompt, local_clock(), "generated")

    def warmup(self) -> float:
        """One generation before the loop (kernels, caches); returns its seconds."""
        t0 = local_clock()
        self.generate(next(iter(self.class_names)), 0)
        return local_clock() - t0


class EmbeddingGenerator:
    """An image from a CLIP image embedding with a Stable unCLIP pipeline (mode ``embedding``).

    ``StableUnCLIPImg2ImgPipeline.from_pretrained(feedback.embedding_generator, local_files_only=True)``: a local
    folder (``save_pretrained`` layout) or a hub id already in the local cache, never a download. The pipeline is
    called with ``image_embeds=`` (its own image encoder is not used), an empty prompt, ``noise_level`` 0 and the
    protocol's ``steps``, ``guidance``, ``size_px`` and ``dtype``.

    Parameters
    ----------
    cfg : FeedbackConfig
        embedding_generator, steps, guidance, size_px, dtype.
    embed_dim : int
        The size of the embeddings it will be given (the EEG encoder's); a pipeline expecting another size is
        refused with one line.
    clip_model : str
        The encoder's CLIP (``teacher.model``), named in that error.
    device : str | None
        ``cuda`` when available, else ``cpu``.
    """

    def __init__(self, cfg: FeedbackConfig, embed_dim: int, clip_model: str = "", device: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from diffusers import StableUnCLIPImg2ImgPipeline

        src = cfg.embedding_generator
        if not src:
            raise ModelNotAvailableError("feedback.mode embedding needs feedback.embedding_generator: a Stable unCLIP "
                                         "diffusers folder or cached hub id (e.g. stabilityai/stable-diffusion-2-1-"
                                         "unclip-small); or use feedback.mode: retrieve")
        self.cfg = cfg
        self.device, dtype = _device_dtype(cfg, device)
        where = _pipeline_source(src, "embedding generator folder", "feedback.embedding_generator",
                                 "Stable unCLIP diffusers folder")
        try:
            pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(where, dtype=dtype,
                                                               local_files_only=True)
        except (OSError, ValueError, TypeError, AttributeError, EnvironmentError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotAvailableError(
                f"embedding generator '{src}' is not available locally as a Stable unCLIP pipeline ({first[:140]}); "
                f"download it once on a connected machine (e.g. huggingface-cli download {src}) or set "
                "feedback.embedding_generator to a local folder; or use feedback.mode: retrieve") from None
        self.expected_dim = int(pipe.image_normalizer.mean.shape[-1])
        if self.expected_dim != int(embed_dim):
            raise EegloopError(
                f"embedding generator '{src}' (feedback.embedding_generator) takes {self.expected_dim}-dimensional "
                f"image embeddings, the EEG encoder predicts {int(embed_dim)} (teacher.model {clip_model!r}): train "
                "the encoder with the CLIP of the generator's image encoder, or choose a generator made for it")
        with torch.no_grad():  # the embeddings' typical length (the normaliser holds their mean and std)
            self.norm = float(torch.sqrt((pipe.image_normalizer.mean.float() ** 2).sum()
                                         + (pipe.image_normalizer.std.float() ** 2).sum()))
        self.pipe = pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.dtype = dtype
        self.embed_dim = int(embed_dim)

    def generate(self, embedding, seed: int, class_id: str = "") -> GeneratedImage:
        """An image from ``embedding`` (a CLIP image embedding; scaled to the pipeline's typical length).

        ``class_id`` only labels the result (the nearest candidate's class, for the log)."""
        import numpy as np
        import torch

        e = np.asarray(embedding, np.float32).reshape(1, -1)
        if e.shape[1] != self.expected_dim:
            raise EegloopError(f"embedding of size {e.shape[1]}; the generator takes {self.expected_dim}")
        e = e / max(float(np.linalg.norm(e)), 1e-12) * self.norm
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.inference_mode():
            img = self.pipe(image_embeds=torch.as_tensor(e, device=self.device, dtype=self.dtype), prompt="",
                            num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.guidance, noise_level=0,
                            height=self.cfg.size_px, width=self.cfg.size_px, generator=g).images[0]
        if self.device == "cuda":
            torch.cuda.synchronize()
        return GeneratedImage(class_id, img, int(seed), "", local_clock(), "generated")

    def warmup(self) -> float:
        """One generation before the loop (kernels, caches); returns its seconds."""
        import numpy as np

        t0 = local_clock()
        self.generate(np.ones(self.expected_dim, np.float32), 0)
        return local_clock() - t0


class GeneratorWorker(Worker):
    """Generation in a background thread: requests in, finished images out, the display never waits.

    ``generate(what, seed)`` gets what :meth:`submit` was given: a class id (text-to-image) or an embedding
    request (mode ``embedding``)."""

    thread_name = "eegloop-generator"

    def __init__(self, generate: Callable[[object, int], GeneratedImage]):
        super().__init__()
        self._generate = generate
        self.requests: "queue.Queue" = queue.Queue()
        self.results: "queue.Queue" = queue.Queue()
        self.start()

    def run(self) -> None:
        while True:
            req = self.requests.get()
            if req is None:
                return
            key, what, seed = req
            try:
                self.results.put((key, self._generate(what, seed)))
            except Exception as exc:  # reported to the loop, which logs it and shows nothing
                self.results.put((key, exc))

    def submit(self, key, what, seed: int) -> None:
        self.requests.put((key, what, seed))

    def close(self) -> None:
        self.requests.put(None)
        self.join(30)


class ImageBank:
    """``bank_per_class`` images per class generated before the feedback block."""

    def __init__(self, generator: DiffusionGenerator, classes: list[str], per_class: int, seed: int = 0,
                 out_dir: Path | None = None, progress: bool = True):
        from tqdm.auto import tqdm

        self.images: dict[str, list[GeneratedImage]] = {c: [] for c in classes}
        self._next = {c: 0 for c in classes}
        bar = tqdm(total=len(classes) * per_class, desc="generating image bank", unit="img", disable=not progress)
        for ci, c in enumerate(classes):
            for k in range(per_class):
                gi = generator.generate(c, seed + 1000 * ci + k)
                gi.source = "bank"
                if out_dir is not None:
                    from .._files import private_dir, private_file

                    private_dir(out_dir)  # the session's images: 0700/0600 whatever the umask
                    gi.path = str(private_file(out_dir / f"bank_{c}_{k:02d}.png", create=True))
                    gi.image.save(gi.path)
                self.images[c].append(gi)
                bar.update(1)
        bar.close()

    def get(self, class_id: str) -> GeneratedImage:
        imgs = self.images[class_id]
        gi = imgs[self._next[class_id] % len(imgs)]
        self._next[class_id] += 1
        return GeneratedImage(gi.class_id, gi.image, gi.seed, gi.prompt, local_clock(), "bank", gi.path)


class StimulusPicker:
    """Mode ``stimulus``: a held-out stimulus image of the decoded class (no generator)."""

    def __init__(self, stimuli, exclude: set[str] = frozenset()):
        self.by_class = {c: [s for s in v if s.sha256 not in exclude] or v for c, v in stimuli.by_class().items()}
        self._next = {c: 0 for c in self.by_class}

    def get(self, class_id: str) -> GeneratedImage:
        from PIL import Image

        imgs = self.by_class[class_id]
        s = imgs[self._next[class_id] % len(imgs)]
        self._next[class_id] += 1
        with Image.open(s.path) as im:
            img = im.convert("RGB").copy()
        return GeneratedImage(class_id, img, 0, "", local_clock(), "stimulus", str(s.path))
