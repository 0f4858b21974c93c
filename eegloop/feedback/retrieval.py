"""Feedback from the EEG encoder's CLIP embedding: nearest-image retrieval (modes ``retrieve`` and ``embedding``).

The candidates are the images of ``feedback.retrieve_folder`` (any depth; an image's class is the name of the
folder it sits in, none for images at the folder's top) or, without one, the protocol's stimulus images. Their
CLIP embeddings, with the CLIP whose space the encoder predicts (``clip_model``/``clip_pretrained``), are
computed once before the block and cached by content (:func:`eegloop.embeddings.image_embeddings`, under the
database's ``cache/clip``). Each feedback epoch's embedding is then ranked against all of them
(:meth:`OnlineEncoder.rank <eegloop.decoder.encoder.OnlineEncoder.rank>`: cosine similarity with the candidates
centred on the training images' mean, as in training): the nearest image is the ``retrieve`` feedback, and its
class the trial's decision in both modes.

Class "probabilities" of a trial are a softmax, at the encoder's learned temperature, of each class's best
similarity (the nearest image of each class): what the report and the console show beside the decision.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..lsl import local_clock

__all__ = ["Candidate", "CandidateSet", "Hit", "Retrieval", "Retriever", "UNLABELLED", "clip_space_embedding"]

#: the class recorded for a retrieved image that sits at the top of ``retrieve_folder`` (no class folder)
UNLABELLED = "(unlabelled)"


@dataclass(frozen=True)
class Candidate:
    """One candidate image: its file, content hash, class folder name (None: none) and whether the encoder was
    trained on that class."""

    path: Path
    sha256: str
    class_id: Optional[str]
    trained: bool

    @property
    def label(self) -> str:
        """The class name for decisions and logs (:data:`UNLABELLED` when the image has no class folder)."""
        return self.class_id if self.class_id is not None else UNLABELLED


@dataclass(frozen=True)
class Hit:
    """A ranked candidate: its rank (0: nearest), similarity and the candidate."""

    rank: int
    similarity: float
    candidate: Candidate

    def to_json(self) -> dict:
        c = self.candidate
        return {"rank": self.rank, "path": str(c.path), "sha256": c.sha256, "class": c.class_id,
                "trained": c.trained, "similarity": round(self.similarity, 5)}


@dataclass
class Retrieval:
    """One trial's retrieval: the nearest images, each class's best similarity and the class probabilities."""

    hits: list  # Hit, best first (top_k of them)
    class_scores: dict  # label -> best similarity among its images
    probabilities: dict  # label -> softmax of class_scores at the encoder's temperature
    ready_lsl: float

    @property
    def best(self) -> Hit:
        return self.hits[0]

    @property
    def predicted(self) -> str:
        """The nearest image's class (what counts against the cue's class)."""
        return self.best.candidate.label

    @property
    def scored(self) -> bool:
        """Whether the nearest image's class is one the encoder was trained on (logged with each trial; the
        trial is judged whenever the cue's class is among the candidates, a never-trained nearest image being a
        miss)."""
        return self.best.candidate.trained

    def to_json(self) -> dict:
        b = self.best
        return {"path": str(b.candidate.path), "sha256": b.candidate.sha256, "class": b.candidate.class_id,
                "trained": b.candidate.trained, "similarity": round(b.similarity, 5),
                "top": [h.to_json() for h in self.hits]}


@dataclass
class CandidateSet:
    """The candidate images and their CLIP embeddings (rows of ``embeddings``, unit length)."""

    candidates: tuple
    embeddings: np.ndarray
    source: str  # "stimuli" or the folder
    seconds: float = 0.0
    labels: list = field(default_factory=list)

    def __post_init__(self):
        self.labels = sorted({c.label for c in self.candidates})

    def __len__(self) -> int:
        return len(self.candidates)

    @property
    def classes(self) -> list:
        """The labelled classes among the candidates."""
        return sorted({c.class_id for c in self.candidates if c.class_id is not None})

    @classmethod
    def from_stimuli(cls, stimuli, trained: Sequence[str], clip_model: str, clip_pretrained: Optional[str],
                     cache_dir=None) -> "CandidateSet":
        """The protocol's stimulus images as candidates (their class ids as classes)."""
        cands = [Candidate(Path(s.path), s.sha256, s.class_id, s.class_id in set(trained)) for s in stimuli.images]
        return cls._embed(cands, "stimuli", clip_model, clip_pretrained, cache_dir)

    @classmethod
    def from_folder(cls, folder, extensions: Sequence[str], trained: Sequence[str], clip_model: str,
                    clip_pretrained: Optional[str], cache_dir=None) -> "CandidateSet":
        """Every image under ``folder`` (any depth); an image's class is the name of the folder it is in."""
        from ..stimuli import file_sha256

        root = Path(folder).expanduser()
        if not root.is_dir():
            raise EegloopError(f"retrieve folder '{root}' not found (feedback.retrieve_folder): point it at a folder "
                               "of candidate images (sub-folders name their classes), or null for the stimuli")
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise EegloopError(f"retrieve folder '{root}' has no images ({', '.join(sorted(exts))}; "
                               "feedback.retrieve_folder)")
        trained = set(trained)
        cands = []
        for p in files:
            cid = p.parent.name[:128] if p.parent != root else None  # the database keeps 128 characters
            cands.append(Candidate(p, file_sha256(p), cid, cid in trained))
        return cls._embed(cands, str(root), clip_model, clip_pretrained, cache_dir)

    @classmethod
    def _embed(cls, cands: list, source: str, clip_model: str, clip_pretrained: Optional[str],
               cache_dir) -> "CandidateSet":
        from ..embeddings import image_embeddings

        if not cands:
            raise EegloopError(f"no candidate images for retrieval ({source})")
        t0 = local_clock()
        z = image_embeddings([(c.path, c.sha256) for c in cands], clip_model, clip_pretrained, cache_dir=cache_dir)
        emb = np.stack([z[c.sha256] for c in cands]).astype(np.float32)
        out = cls(tuple(cands), emb, source, local_clock() - t0)
        logger.info("retrieval candidates: %d images of %d classes from %s (%.2f s)", len(out), len(out.classes),
                    source, out.seconds)
        return out


class Retriever:
    """Ranks the candidates for an encoder output; :meth:`query` gives a trial's :class:`Retrieval`.

    Parameters
    ----------
    encoder : OnlineEncoder
        Its :meth:`rank` (centred cosine similarity) and temperature.
    candidates : CandidateSet
    top_k : int
        How many nearest images each retrieval keeps (logged per trial).
    """

    def __init__(self, encoder, candidates: CandidateSet, top_k: int = 5):
        if candidates.embeddings.shape[1] != encoder.dim:
            raise EegloopError(f"the candidates' CLIP embeddings have {candidates.embeddings.shape[1]} dimensions, "
                               f"the encoder predicts {encoder.dim} (teacher.model {encoder.clip_model!r})")
        self.encoder, self.candidates, self.top_k = encoder, candidates, int(top_k)
        t = ((encoder.meta or {}).get("metrics") or {}).get("temperature")
        self.temperature = float(t) if t else 0.07
        labels = np.array([c.label for c in candidates.candidates], dtype=object)
        self._groups = {lab: np.flatnonzero(labels == lab) for lab in candidates.labels}

    def query(self, z: np.ndarray) -> Retrieval:
        """The nearest candidates of embedding ``z`` (the encoder's output)."""
        sims = np.asarray(self.encoder.rank(np.asarray(z, np.float32), self.candidates.embeddings), np.float64)
        k = min(self.top_k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        hits = [Hit(i, float(sims[j]), self.candidates.candidates[j]) for i, j in enumerate(top)]
        scores = {lab: float(sims[idx].max()) for lab, idx in self._groups.items()}
        v = np.array(list(scores.values())) / self.temperature
        p = np.exp(v - v.max())
        p /= p.sum()
        return Retrieval(hits, scores, {lab: float(q) for lab, q in zip(scores, p)}, local_clock())

    def load(self, retrieval: Retrieval):
        """The nearest image, read from its file, as the feedback image (source ``retrieved``)."""
        from PIL import Image

        from .generator import GeneratedImage

        c = retrieval.best.candidate
        with Image.open(c.path) as im:
            img = im.convert("RGB").copy()
        return GeneratedImage(c.label, img, 0, "", local_clock(), "retrieved", str(c.path))


def clip_space_embedding(z: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The encoder's output as an (uncentred) unit CLIP image embedding, for an image generator.

    The encoder predicts the direction of ``embedding - center`` (its training targets were centred on the
    training images' mean embedding ``center``). Unit embeddings ``e`` with mean ``center`` lie on average at
    ``sqrt(1 - |center|²)`` from it, so ``center + sqrt(1 - |center|²) z``, back to unit length, is the
    embedding the prediction stands for.
    """
    z = np.asarray(z, np.float64)
    c = np.asarray(center, np.float64)
    z = z / max(np.linalg.norm(z), 1e-12)
    s = np.sqrt(max(1.0 - float(c @ c), 1e-6))
    e = c + s * z
    return (e / max(np.linalg.norm(e), 1e-12)).astype(np.float32)
