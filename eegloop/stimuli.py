"""Stimulus sets: images per class, from a folder, a CSV manifest, or drawn.

:func:`load_stimuli` reads the protocol's ``stimuli`` section into a
:class:`StimulusSet` and checks it against the design (enough images per
class). :func:`synthesize_stimuli` draws distinct procedural images per class
so that a demo needs no download.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ._logging import logger
from .errors import EegloopError, ProtocolError
from .protocol import Protocol

__all__ = ["Stimulus", "StimulusSet", "load_stimuli", "synthesize_stimuli", "SYNTH_CLASSES", "file_sha256", "cue_images"]

#: classes the procedural generator can draw: id -> display name (used in prompts)
SYNTH_CLASSES: dict[str, str] = {
    "circle": "red circle",
    "square": "blue square",
    "triangle": "green triangle",
    "star": "yellow star",
    "stripes": "striped pattern",
    "ring": "purple ring",
    "cross": "orange cross",
    "checker": "checkerboard",
    "dots": "dotted pattern",
    "wave": "wavy line",
    "diamond": "cyan diamond",
    "spiral": "spiral",
}


@dataclass(frozen=True)
class Stimulus:
    """One image: its path, class id and content hash."""

    path: Path
    class_id: str
    sha256: str


@dataclass(frozen=True)
class StimulusSet:
    """Images grouped by class, with display names for prompts."""

    classes: dict[str, str]  # id -> display name, in a fixed order
    images: tuple[Stimulus, ...]
    root: Path | None = None

    def by_class(self) -> dict[str, list[Stimulus]]:
        out: dict[str, list[Stimulus]] = {c: [] for c in self.classes}
        for s in self.images:
            out[s.class_id].append(s)
        return out

    def counts(self) -> dict[str, int]:
        return {c: len(v) for c, v in self.by_class().items()}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_stimuli(protocol: Protocol, check_design: bool = True, hash_files: bool = True) -> StimulusSet:
    """Read the protocol's stimulus set and check it fits the design.

    Parameters
    ----------
    protocol : Protocol
        The validated protocol.
    check_design : bool
        Check that every class has the images the design needs.
    hash_files : bool
        Compute each image's SHA-256 (content identity in the database).

    Raises
    ------
    ProtocolError
        Missing folder/manifest, unknown class, or a class with too few images.
    """
    cfg = protocol.stimuli
    where = protocol._where()
    exts = {e.lower() for e in cfg.extensions}
    found: dict[str, list[Path]] = {}
    if cfg.folder is not None:
        root = protocol.resolve_path(cfg.folder)
        if not root.is_dir():
            if cfg.synthesize:
                logger.info("drawing procedural stimuli into %s", root)
                synthesize_stimuli(root, protocol.stimuli.classes, protocol.paradigm.images_per_class,
                                   size=cfg.synth_size_px, seed=protocol.paradigm.seed)
            else:
                raise ProtocolError(f"{where}stimuli.folder: folder '{root}' does not exist (put the images there, "
                                    "one sub-folder per class)")
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(f for f in sub.iterdir() if f.is_file() and f.suffix.lower() in exts)
            if files:
                found[sub.name] = files
    else:
        manifest = protocol.resolve_path(cfg.manifest)
        if not manifest.is_file():
            raise ProtocolError(f"{where}stimuli.manifest: file '{manifest}' does not exist")
        root = manifest.parent
        with open(manifest, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"path", "class"} <= set(reader.fieldnames):
                raise ProtocolError(f"{where}stimuli.manifest: '{manifest}' needs the columns path,class")
            for i, row in enumerate(reader, start=2):
                p = Path(row["path"])
                p = p if p.is_absolute() else root / p
                if not p.is_file():
                    raise ProtocolError(f"{where}stimuli.manifest: line {i}: image '{p}' does not exist")
                found.setdefault(row["class"], []).append(p)
    if cfg.classes:
        missing = [c for c in cfg.classes if c not in found]
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise ProtocolError(f"{where}stimuli.classes: no images for class {shown} in '{root}'")
        classes = dict(cfg.classes)
    else:
        classes = {c: c for c in found}
    long = next((c for c in classes if len(c) > 128), None)
    if long is not None:  # the database stores class ids in 128 characters
        raise ProtocolError(f"{where}stimuli: class '{long[:40]}…' is longer than 128 characters; rename it")
    design = protocol.design(len(classes))
    if check_design:
        need = design.images_per_class
        short = {c: len(found[c]) for c in classes if len(found[c]) < need}
        if short:
            c, n = next(iter(short.items()))
            raise ProtocolError(
                f"{where}stimuli: class '{c}' has {n} images, the design needs {need} "
                f"(paradigm.images_per_class){f'; {len(short)} classes are short' if len(short) > 1 else ''}"
            )
    images = tuple(
        Stimulus(path=p, class_id=c, sha256=file_sha256(p) if hash_files else "")
        for c in classes for p in found[c]
    )
    return StimulusSet(classes=classes, images=images, root=root)


# ---------------------------------------------------------------------------
# procedural images
# ---------------------------------------------------------------------------
_PALETTE = {
    "circle": (220, 40, 40), "square": (40, 80, 220), "triangle": (40, 180, 60), "star": (235, 210, 40),
    "stripes": (200, 200, 200), "ring": (150, 50, 200), "cross": (245, 140, 30), "checker": (230, 230, 230),
    "dots": (240, 120, 180), "wave": (60, 200, 220), "diamond": (40, 220, 220), "spiral": (250, 250, 250),
}


def _shape_mask(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n - 0.5
    cx, cy = rng.uniform(-0.08, 0.08, 2)
    x, y = xx - cx, yy - cy
    rot = rng.uniform(-0.4, 0.4)
    xr, yr = x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)
    s = rng.uniform(0.28, 0.38)
    r = np.hypot(x, y)
    th = np.arctan2(yr, xr)
    if kind == "circle":
        return r < s
    if kind == "square":
        return (abs(xr) < s * 0.85) & (abs(yr) < s * 0.85)
    if kind == "triangle":
        return (yr < s * 0.6) & (yr > -s + 2 * abs(xr) * 1.1)
    if kind == "star":
        return r < s * (0.55 + 0.45 * np.cos(5 * th) ** 2)
    if kind == "stripes":
        f = rng.uniform(8, 12)
        return np.sin(2 * np.pi * f * xr) > 0
    if kind == "ring":
        return (r < s) & (r > s * 0.6)
    if kind == "cross":
        return ((abs(xr) < s * 0.3) & (abs(yr) < s)) | ((abs(yr) < s * 0.3) & (abs(xr) < s))
    if kind == "checker":
        f = rng.uniform(5, 7)
        return (np.floor(xr * f * 2) + np.floor(yr * f * 2)) % 2 == 0
    if kind == "dots":
        f = rng.uniform(5, 7)
        return np.hypot((xr * f) % 1 - 0.5, (yr * f) % 1 - 0.5) < 0.25
    if kind == "wave":
        return abs(yr - 0.12 * np.sin(2 * np.pi * rng.uniform(2, 3) * xr)) < 0.05
    if kind == "diamond":
        return abs(xr) + abs(yr) < s
    if kind == "spiral":
        return np.sin(th * 2 + r * rng.uniform(35, 45)) > 0.3
    raise ValueError(kind)


def synthesize_stimuli(out: str | Path, classes: dict[str, str] | int, per_class: int,
                       size: int = 256, seed: int = 0, created: Optional[list] = None) -> StimulusSet:
    """Draw distinct procedural images, one sub-folder per class.

    Parameters
    ----------
    out : path
        Folder to write into (created).
    classes : dict | int
        Class ids (keys of :data:`SYNTH_CLASSES`) -> display names, or a
        number of classes taken from :data:`SYNTH_CLASSES` in order.
    per_class : int
        Images per class.
    size : int
        Edge of each image in pixels.
    seed : int
        Images are a deterministic function of the seed.
    created : list | None
        The folders this call creates are appended (so that a caller can remove them if it fails,
        :func:`eegloop._files.new_folders`). Each image is written whole (a temporary sibling renamed into
        place): an image that existed is never left truncated.
    """
    from PIL import Image

    from ._files import atomic_path

    if isinstance(classes, int):
        if not 2 <= classes <= len(SYNTH_CLASSES):
            raise ProtocolError(f"--classes: must be between 2 and {len(SYNTH_CLASSES)}, got {classes}")
        classes = dict(list(SYNTH_CLASSES.items())[:classes])
    unknown = [c for c in classes if c not in SYNTH_CLASSES]
    if unknown:
        raise ProtocolError(f"stimuli.classes: cannot draw class '{unknown[0]}'; drawable: {', '.join(SYNTH_CLASSES)}")
    if not 1 <= per_class <= 100_000 or not 16 <= size <= 2048:
        raise ProtocolError(f"stimuli: 1 to 100000 images per class of 16 to 2048 pixels, got {per_class} of {size}")
    from ._files import FILE_MODE, private_dir

    out = Path(out)
    rng = np.random.default_rng(seed)
    images = []
    for cid in classes:
        # folders eegloop creates are 0700, its files 0600 (a data folder's demo); the CLI removes them on failure
        folder = private_dir(out / cid, created)
        colour = np.array(_PALETTE[cid], dtype=np.float32)
        for k in range(per_class):
            bg = rng.uniform(20, 90, 3).astype(np.float32)
            noise = rng.normal(0, 12, (size, size, 1)).astype(np.float32)
            mask = _shape_mask(cid, size, rng)[..., None]
            tint = colour * rng.uniform(0.8, 1.0)
            img = np.where(mask, tint, bg) + noise
            path = folder / f"{cid}_{k:03d}.png"
            with atomic_path(path, FILE_MODE) as tmp:
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp, format="PNG")
            images.append(Stimulus(path=path, class_id=cid, sha256=file_sha256(path)))
    return StimulusSet(classes=dict(classes), images=tuple(images), root=out)


def cue_images(stimuli, share: float) -> dict:
    """Class id -> the images kept out of quick-train to be the feedback cues (``feedback.cue_share``).

    Chosen by content (the smallest sha256 values of each class), so training and feedback, run in
    different processes or on different days, pick the same images. Empty when ``share`` is 0.
    """
    if share <= 0:
        return {}
    out = {}
    for c, imgs in stimuli.by_class().items():
        ranked = sorted(imgs, key=lambda s: s.sha256 or str(s.path))
        out[c] = ranked[:max(1, int(round(share * len(ranked))))]
    return out


def feedback_cue_shas(protocol: Protocol, stimuli=None) -> set:
    """sha256 of the images the feedback block will use as cues (``feedback.cue_share``, :func:`cue_images`):
    what the visit keeps out of quick-train, so that online accuracy is an honest estimate.

    ``stimuli`` is the protocol's set when already loaded. Empty when ``cue_share`` is 0, and (logged) when the
    images cannot be read (imported data without the image folder: nothing to hold out).
    """
    if protocol.feedback.cue_share <= 0:
        return set()
    if stimuli is None:
        try:
            stimuli = load_stimuli(protocol, check_design=False)
        except (EegloopError, OSError) as exc:
            logger.info("feedback cues not held out: %s", exc)
            return set()
    return {s.sha256 for imgs in cue_images(stimuli, protocol.feedback.cue_share).values() for s in imgs}
