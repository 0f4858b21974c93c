"""Which model weights a protocol needs, whether they are in the local caches, and fetching them.

eegloop never downloads at run time (``HF_HUB_OFFLINE`` is set where models load). A lab fetches the
weights once, on a machine with internet, with ``eegloop models download`` — into the same caches
open_clip and diffusers read (Hugging Face's, ``$HF_HOME``) — and ``eegloop models list`` shows, per
protocol, what is needed and what is there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .embeddings import clip_weights
from .errors import EegloopError
from .progress import Reporter, verbose

__all__ = ["ModelNeed", "needs", "cached_repos", "download"]


@dataclass(frozen=True)
class ModelNeed:
    """One set of weights a protocol uses."""

    role: str  # "clip" (the teacher) or "generator" (feedback)
    name: str  # what the protocol says
    source: str  # where it comes from: a local path or a hub repository
    available: bool
    note: str = ""

    def line(self) -> str:
        return f"{self.role:<10} {self.name:<40} {'available' if self.available else 'MISSING: ' + self.note}"


def _clip_need(model: str, pretrained: Optional[str]) -> ModelNeed:
    name = f"{model} ({pretrained})" if pretrained else model
    w = clip_weights(model, pretrained)
    return ModelNeed("clip", name, w.source, w.available, w.note)


def _generator_need(model: str) -> ModelNeed:
    from .feedback.generator import generator_available

    local = Path(model).expanduser()
    if local.is_dir() or model.startswith(("/", ".", "~")):
        return ModelNeed("generator", model, str(local), local.is_dir(), "" if local.is_dir() else "folder not found")
    ok = generator_available(model)
    return ModelNeed("generator", model, model, ok, "" if ok else "not downloaded")


def needs(protocol) -> list[ModelNeed]:
    """The weights ``protocol`` uses (the teacher only when ``teacher.enabled``; the text-to-image generator for
    feedback modes live and bank, the image-embedding one for mode embedding)."""
    out = []
    fb = protocol.feedback
    if protocol.teacher.enabled or protocol.encoder.enabled or fb.mode in ("retrieve", "embedding"):
        # the teacher, and the EEG encoder's targets and retrieval candidates, use the same CLIP
        out.append(_clip_need(protocol.teacher.model, protocol.teacher.pretrained))
    if fb.mode in ("live", "bank"):
        out.append(_generator_need(fb.generator))
    elif fb.mode == "embedding" and fb.embedding_generator:
        out.append(_generator_need(fb.embedding_generator))
    return out


def cached_repos() -> list[tuple[str, int]]:
    """(repository, bytes) of every model in the Hugging Face cache (empty when there is none)."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache folder yet, or an unreadable one: nothing cached
        return []
    return sorted((r.repo_id, int(r.size_on_disk)) for r in info.repos if r.repo_type == "model")


@verbose
def download(protocol, what: str = "all", progress: Optional[Callable[[str], None]] = None,
             verbose: bool | str | int | None = None) -> list[ModelNeed]:
    """Fetch the protocol's missing weights into the usual caches (needs internet); returns them after.

    Raises :class:`EegloopError` with one line when the hub cannot be reached (offline, or
    ``HF_HUB_OFFLINE`` set), saying what is missing.
    """
    say = Reporter(progress, bus=False)  # to progress= when given, else the eegloop.progress logger
    todo = [n for n in needs(protocol) if what in ("all", n.role) and not n.available]
    for n in todo:
        if n.source.startswith(("/", ".", "~")) or n.note.endswith("not found"):
            raise EegloopError(f"models download: {n.role} {n.name!r} is a local path ({n.source}) that does not "
                               "exist: copy the weights there; nothing to download")
    if not todo:
        say("every model the protocol needs is already here")
        return needs(protocol)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    for n in todo:
        say(f"downloading {n.role} {n.name} from {n.source} ...")
        try:
            if n.role == "generator":
                snapshot_download(n.source)  # its own progress bars
            else:  # only the weights file, where open_clip itself will look for it
                from open_clip.pretrained import download_pretrained, get_pretrained_cfg

                model, _, tag = n.name.partition(" (")
                download_pretrained(get_pretrained_cfg(model, tag.rstrip(")")))
        except (OfflineModeIsEnabled, LocalEntryNotFoundError, OSError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EegloopError(f"models download: cannot fetch {n.role} {n.name!r} ({first[:150]}); this machine "
                               "is offline or HF_HUB_OFFLINE is set: run the download on a connected machine and "
                               "copy its Hugging Face cache ($HF_HOME)") from None
    return needs(protocol)
