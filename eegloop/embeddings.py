"""CLIP image embeddings of the stimuli: one place that loads open_clip and caches features.

The CLIP teacher (:mod:`eegloop.decoder.teacher`), the EEG encoder's contrastive targets
(:mod:`eegloop.decoder.encoder`), the embedding-driven simulated subject
(:mod:`eegloop.recorder.simulator`) and the ``retrieve``/``embedding`` feedback modes all need the same
thing: the L2-normalised CLIP image embedding of a stimulus file, computed once and cached by the file's
sha256 (``<cache>/<model key>/<sha256>.npy``).

Weights are never downloaded at run time. ``model`` is an open_clip model name whose ``pretrained`` tag is
already cached locally, ``local-dir:PATH`` (``open_clip_config.json`` + ``open_clip_model.safetensors``),
or :data:`TINY_CLIP` — a tiny open_clip ViT with random weights drawn from a fixed seed, built here in a
fraction of a second. The tiny one exists so that a simulated subject and its decoder share an embedding
space on a machine without weights (the demo, tests, benchmarks); its embeddings mean nothing about real
images, and eegloop says so wherever it is used.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ._logging import logger
from .errors import ModelNotAvailableError

__all__ = ["TINY_CLIP", "load_clip", "image_embeddings", "embedding_key", "default_cache_dir", "clip_available",
           "stimulus_embeddings", "clip_weights", "ClipWeights"]

#: ``teacher.model`` value for the built-in tiny random CLIP (simulation and tests only)
TINY_CLIP = "tiny-random-clip"
_TINY_CFG = {"embed_dim": 64,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def default_cache_dir() -> Path:
    """``$EEGLOOP_CACHE_DIR/clip-features`` or ``~/.cache/eegloop/clip-features``."""
    base = os.environ.get("EEGLOOP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "eegloop")
    return Path(base) / "clip-features"


def embedding_key(model: str, pretrained: Optional[str]) -> str:
    """The cache folder name of a model's features (the tiny model's also depends on torch's generator)."""
    extra = ""
    if model == TINY_CLIP:
        import torch

        extra = f"|torch {torch.__version__.split('+')[0]}"
    return hashlib.sha256(f"{model}|{pretrained}{extra}".encode()).hexdigest()[:16]


def _tiny_clip(device: str = "cpu"):
    import open_clip
    import torch
    from open_clip.transform import image_transform

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20240915)
        clip = open_clip.CLIP(**_TINY_CFG)
    clip.eval().to(device)
    return clip, image_transform(_TINY_CFG["vision_cfg"]["image_size"], is_train=False)


def load_clip(model: str, pretrained: Optional[str], device: str = "cpu"):
    """Load an open_clip model and its image transform from local files only (or build the tiny one)."""
    if model == TINY_CLIP:
        return _tiny_clip(device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    pre = pretrained
    if pre and (pre.startswith(("/", ".", "~")) or Path(pre).suffix in (".safetensors", ".bin", ".pt", ".pth")):
        p = Path(pre).expanduser()
        if not p.is_file():
            raise ModelNotAvailableError(f"CLIP teacher weights '{p}' not found (teacher.pretrained): put the "
                                         "checkpoint there or point teacher.pretrained at it")
        pre = str(p)
    if model.startswith("local-dir:") and not Path(model[len("local-dir:"):]).expanduser().is_dir():
        raise ModelNotAvailableError(f"CLIP teacher folder '{model[len('local-dir:'):]}' not found (teacher.model)")
    try:
        clip, _, transform = open_clip.create_model_and_transforms(model, pretrained=pre, device=device)
    except (RuntimeError, OSError, ValueError, FileNotFoundError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotAvailableError(
            f"CLIP teacher '{model}' (pretrained '{pretrained}') is not available offline ({first[:160]}); "
            "download it once on a connected machine and set teacher.pretrained to the checkpoint file, or "
            "teacher.model to 'local-dir:FOLDER'; or set teacher.enabled: false to train without distillation"
        ) from None
    clip.eval()
    return clip, transform


def clip_available(model: str, pretrained: Optional[str]) -> bool:
    """Whether :func:`load_clip` would find the weights (the tiny model always is)."""
    return clip_weights(model, pretrained).available


@dataclass(frozen=True)
class ClipWeights:
    """Where a CLIP model's weights come from (a local path, a hub repository, a URL) and whether they are here."""

    source: str
    available: bool
    note: str = ""


def clip_weights(model: str, pretrained: Optional[str]) -> ClipWeights:
    """Where :func:`load_clip` would find ``model``'s weights, and whether they are on this machine (the tiny model
    always is); what ``eegloop models list`` reports (:mod:`eegloop.models_cache`)."""
    if model == TINY_CLIP:  # built here from a seed: nothing to fetch (and nothing it says about real images)
        return ClipWeights("built-in, random weights (simulation only)", True)
    if model.startswith("local-dir:"):
        d = Path(model[len("local-dir:"):]).expanduser()
        return ClipWeights(str(d), d.is_dir(), "" if d.is_dir() else "folder not found")
    if pretrained and (pretrained.startswith(("/", ".", "~")) or Path(pretrained).suffix in
                       (".safetensors", ".bin", ".pt", ".pth")):
        p = Path(pretrained).expanduser()
        return ClipWeights(str(p), p.is_file(), "" if p.is_file() else "file not found")
    try:
        from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, get_pretrained_cfg
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return ClipWeights("?", False, "open_clip not installed")
    cfg = get_pretrained_cfg(model, pretrained or "") if pretrained else {}
    repo = (cfg.get("hf_hub") or "").strip("/")
    if not repo:
        url = cfg.get("url") or ""
        if not url:
            return ClipWeights("?", False, "open_clip knows no such model/tag")
        hit = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip" / Path(url).name).is_file()
        return ClipWeights(url, hit, "" if hit else "not downloaded")
    from huggingface_hub import try_to_load_from_cache

    hit = any(isinstance(try_to_load_from_cache(repo, f), str) for f in (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME))
    return ClipWeights(repo, hit, "" if hit else "not downloaded")


def image_embeddings(images: Sequence[tuple[str | Path, str]], model: str, pretrained: Optional[str],
                     cache_dir: str | Path | None = None, device: str = "cpu", batch: int = 32) -> dict:
    """L2-normalised CLIP image embeddings of ``images`` = [(path, sha256)], as {sha256: float32 vector}.

    Features are read from / written to ``cache_dir/<embedding_key>/<sha256>.npy`` (default
    :func:`default_cache_dir`); the model is only loaded when some image is not cached.
    """
    import torch

    cdir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / embedding_key(model, pretrained)
    feats: dict[str, np.ndarray] = {}
    todo = []
    for path, sha in images:
        f = cdir / f"{sha}.npy"
        if sha in feats:
            continue
        if f.is_file():
            try:
                v = np.load(f, allow_pickle=False)
                if v.ndim == 1 and np.isfinite(v).all():
                    feats[sha] = v.astype(np.float32)
                    continue
            except (OSError, ValueError):
                pass  # a damaged cache entry: computed again
        todo.append((path, sha))
    todo = list(dict((sha, (p, sha)) for p, sha in todo).values())
    if todo:
        clip, transform = load_clip(model, pretrained, device)
        logger.info("CLIP (%s) features of %d images (%d cached)", model, len(todo), len(feats))
        with torch.no_grad():
            for i in range(0, len(todo), batch):
                part = todo[i:i + batch]
                x = torch.stack([_read(p, transform) for p, _ in part]).to(device)
                z = clip.encode_image(x).float()
                z = (z / z.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float32)
                for (_, sha), v in zip(part, z):
                    feats[sha] = v
                    try:
                        from ._files import private_dir, private_file

                        private_dir(cdir)  # in the data folder: 0700, its files 0600
                        tmp = private_file(cdir / f".{sha}.{os.getpid()}.npy", create=True)
                        np.save(tmp, v)
                        os.replace(tmp, cdir / f"{sha}.npy")
                    except OSError as exc:  # a read-only cache costs time, not correctness
                        logger.debug("CLIP feature cache not written: %s", exc)
    return feats


def _read(path, transform):
    """One image through the CLIP transform; an unreadable file is one line naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return transform(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        from .errors import EegloopError

        raise EegloopError(f"{path}: not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from None


def stimulus_embeddings(protocol, cache_dir: str | Path | None = None) -> dict:
    """{(class id, file name): embedding} of the protocol's stimulus set, with the teacher's CLIP.

    What the embedding-driven simulated subject responds to. When the teacher's weights are not on this
    machine the tiny random CLIP stands in (logged), so a simulation always runs; the decoder then needs the
    same model (``teacher.model: tiny-random-clip``) to learn anything.
    """
    from .stimuli import load_stimuli

    stim = load_stimuli(protocol, check_design=False)
    model, pre = protocol.teacher.model, protocol.teacher.pretrained
    if not clip_available(model, pre):
        logger.warning("simulated subject: CLIP %r is not on this machine; its responses follow the tiny random "
                       "CLIP (%s) instead", model, TINY_CLIP)
        model, pre = TINY_CLIP, None
    z = image_embeddings([(s.path, s.sha256) for s in stim.images], model, pre, cache_dir)
    return {(s.class_id, Path(s.path).name): z[s.sha256] for s in stim.images}
