"""Feedback cues the decoder never saw, and whether a feedback accuracy is an honest online estimate.

A model stores the sha256 of every stimulus image it was trained on (``trained_images`` in its JSON). The
feedback block picks its cues among the images that are not in that set — ``feedback.cue_share``'s held-out
images first, else any image of the class the model never saw — and marks each trial whose images the model
was trained on (a class with no unseen image left, or a model saved before the set was kept). A feedback
accuracy is honest only when every scored trial's images were unseen; :func:`cue_honesty` says so in words.

These functions take plain data (a set of sha256, the stimulus set, trial rows) so the trial loop only calls
them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from .._logging import logger

__all__ = ["trained_images", "cue_pools", "cues_trained", "mark_cue", "CueHonesty", "cue_honesty"]


def trained_images(meta: dict) -> Optional[frozenset]:
    """The sha256 of every image a model (decoder or encoder) was trained on; None when it did not keep them
    (a model saved before eegloop stored them: whether a cue is unseen cannot be known)."""
    shas = meta.get("trained_images")
    return None if shas is None else frozenset(s for s in shas if s)


def cue_pools(stimuli, cue_share: float, trained: Optional[frozenset],
              say: Optional[Callable[[str], None]] = None) -> dict:
    """Class id -> the images the feedback trials of that class may show.

    ``feedback.cue_share``'s held-out images (:func:`eegloop.stimuli.cue_images`) that the model never saw; where
    there are none (another cue share at training, ``cue_share: 0``), any image of the class the model never saw;
    where the model saw every image of the class, all of them (each such trial is marked by :func:`mark_cue`, and
    ``say`` is told). Without ``trained`` (an old model) the held-out images, else the class's images.
    """
    from ..stimuli import cue_images

    held = cue_images(stimuli, cue_share)
    out = {}
    seen_only = []
    for c, imgs in stimuli.by_class().items():
        pool = list(held.get(c) or imgs)
        if trained is not None:
            unseen = [s for s in pool if s.sha256 not in trained] or [s for s in imgs if s.sha256 not in trained]
            if unseen:
                pool = unseen
            else:
                seen_only.append(c)
        out[c] = pool
    if seen_only:
        msg = (f"the model was trained on every image of class {', '.join(seen_only[:5])}"
               + (f" and {len(seen_only) - 5} more" if len(seen_only) > 5 else "")
               + ": those trials show trained images, marked so, and the accuracy is not an honest online estimate "
               "(keep cues out of training: feedback.cue_share > 0, then retrain)")
        logger.warning("%s", msg)
        if say is not None:
            say(msg)
    return out


def cues_trained(shas: Iterable[str], trained: Optional[frozenset]) -> Optional[bool]:
    """Whether the model was trained on any of a trial's images (None: not known)."""
    shas = [s for s in shas]
    if trained is None or not shas or not all(shas):
        return None
    return any(s in trained for s in shas)


def mark_cue(row: dict, trained: Optional[frozenset]) -> dict:
    """Set ``row["cue_trained"]`` from ``row["cue_sha256"]`` (the trial's images); returns the row."""
    row["cue_trained"] = cues_trained(row.get("cue_sha256") or [], trained)
    return row


@dataclass(frozen=True)
class CueHonesty:
    """How many scored feedback trials showed images the model never saw."""

    scored: int
    unseen: int  # scored trials whose every image the model never saw
    trained: int  # scored trials showing an image the model was trained on
    unknown: int  # scored trials with no record of it (older model or trial)
    correct_unseen: int = 0

    @property
    def honest(self) -> bool:
        return self.scored > 0 and self.unseen == self.scored

    def describe(self) -> str:
        if self.honest:
            return (f"every one of the {self.scored} scored trials showed images the decoder never saw: an honest "
                    "online estimate")
        parts = []
        if self.trained:
            parts.append(f"{self.trained} showed images the decoder was trained on")
        if self.unknown:
            parts.append(f"{self.unknown} cannot be checked (the model or the trial predates the record of trained "
                         "images)")
        line = f"of {self.scored} scored trials, " + " and ".join(parts) + ": not an honest online estimate"
        if self.unseen:
            line += f"; on the {self.unseen} trials with unseen images: {self.correct_unseen}/{self.unseen} correct"
        return line

    def to_json(self) -> dict:
        return {"scored": self.scored, "unseen": self.unseen, "trained": self.trained, "unknown": self.unknown,
                "correct_unseen": self.correct_unseen, "honest": self.honest}


def cue_honesty(trials: Iterable[tuple[Optional[bool], bool]]) -> CueHonesty:
    """From (cue_trained, correct) of each scored trial: how honest their accuracy is."""
    scored = unseen = trained = unknown = correct_unseen = 0
    for was_trained, correct in trials:
        scored += 1
        if was_trained is None:
            unknown += 1
        elif was_trained:
            trained += 1
        else:
            unseen += 1
            correct_unseen += bool(correct)
    return CueHonesty(scored, unseen, trained, unknown, correct_unseen)
