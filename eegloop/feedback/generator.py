"""Image generators for feedback: diffusers text-to-image, or held-out stimuli.

:class:`DiffusionGenerator` loads ``feedback.generator`` with
``AutoPipelineForText2Image.from_pretrained`` from a local folder or a hub id
that is already in the local cache (never a download: ``local_files_only``),
with fp16 on CUDA and fp32 on the CPU unless ``feedback.dtype`` says
otherwise. Defaults suit a one-step turbo model (``stabilityai/sd-turbo``: 1
step, guidance 0, 512 px). A missing model raises
:class:`~eegloop.errors.ModelNotAvailableError` with one line.

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
from ..errors import ModelNotAvailableError
from ..lsl import local_clock
from ..protocol import FeedbackConfig

__all__ = ["DiffusionGenerator", "GeneratorWorker", "ImageBank", "StimulusPicker", "GeneratedImage",
           "generator_available"]


@dataclass
class GeneratedImage:
    class_id: str
    image: "object"  # PIL.Image
    seed: int
    prompt: str
    ready_lsl: float
    source: str  # "generated", "bank", "stimulus"
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
        import torch
        from diffusers import AutoPipelineForText2Image

        self.cfg = cfg
        self.class_names = dict(class_names)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if cfg.dtype == "auto":
            dtype = torch.float16 if self.device == "cuda" else torch.float32
        else:
            dtype = getattr(torch, cfg.dtype)
        src = cfg.generator
        local = Path(src).expanduser()
        if (local.is_absolute() or src.startswith(".")) and not local.is_dir():
            raise ModelNotAvailableError(f"generator folder '{src}' not found (feedback.generator): point it at a "
                                         "diffusers model folder (save_pretrained layout)")
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(str(local) if local.is_dir() else src, dtype=dtype,
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


class GeneratorWorker(Worker):
    """Generation in a background thread: requests in, finished images out, the display never waits."""

    thread_name = "eegloop-generator"

    def __init__(self, generate: Callable[[str, int], GeneratedImage]):
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
            key, class_id, seed = req
            try:
                self.results.put((key, self._generate(class_id, seed)))
            except Exception as exc:  # reported to the loop, which logs it and shows nothing
                self.results.put((key, exc))

    def submit(self, key, class_id: str, seed: int) -> None:
        self.requests.put((key, class_id, seed))

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
                    out_dir.mkdir(parents=True, exist_ok=True)
                    gi.path = str(out_dir / f"bank_{c}_{k:02d}.png")
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
