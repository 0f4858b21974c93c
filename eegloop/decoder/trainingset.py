"""The epochs a subject's models are trained on: the student's (:mod:`.quicktrain`) and the encoder's
(:mod:`.encodertrain`) alike.

The subject's sessions and the protocol stored with the latest, their recording blocks only (not the feedback
block's trials), without the images the caller keeps out of training (the visit passes the feedback cues, so
that the online accuracy is an honest estimate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import EegloopError
from ..protocol import Protocol, stored_protocol
from ..types import FEEDBACK_BLOCK_BASE, EpochSet

__all__ = ["subject_protocol", "TrainingEpochs", "load_training_epochs"]


def subject_protocol(db, subject: str, session_ids: Sequence[int] | None = None) -> tuple[Protocol, list[int]]:
    """The protocol stored with the subject's latest (selected) session, and the session ids used."""
    sessions = db.list_sessions(subject)
    if session_ids:
        sessions = [s for s in sessions if s.id in set(session_ids)]
    if not sessions:
        raise EegloopError(f"subject {subject!r} has no sessions" + (f" among {list(session_ids)}" if session_ids else ""))
    last = sessions[-1]
    return stored_protocol(last.protocol_yaml, f"session {last.id}'s protocol"), [s.id for s in sessions]


@dataclass
class TrainingEpochs:
    """A subject's training epochs and where they come from."""

    es: EpochSet
    protocol: Protocol  # the caller's, else the one stored with the latest session
    session_ids: list
    n_excluded: int  # epochs left out: of the excluded images (and, with ``need_images``, of no known image)


def load_training_epochs(db, subject: str, session_ids: Sequence[int] | None = None,
                         protocol: Optional[Protocol] = None, exclude_images: Iterable[str] = (),
                         need_images: bool = False) -> TrainingEpochs:
    """The subject's recording-block epochs, without those showing ``exclude_images`` (sha256).

    Parameters
    ----------
    protocol : Protocol | None
        The protocol to train with (None: the one stored with the subject's latest session).
    exclude_images : iterable of str
        sha256 of stimulus images kept out of training (the feedback cues).
    need_images : bool
        Also leave out epochs without a known stimulus image (the encoder's targets are the images').
    """
    proto_db, sids = subject_protocol(db, subject, session_ids)
    protocol = protocol or proto_db
    es = db.load_epochs(subject, sids)
    es = es.subset(np.flatnonzero(es.blocks < FEEDBACK_BLOCK_BASE))  # recording blocks only, not feedback trials
    held = set(exclude_images or ())
    n_out = 0
    if held or need_images:
        keep = np.array([(bool(im) or not need_images) and im not in held for im in es.images], dtype=bool)
        n_out = int((~keep).sum())
        es = es.subset(np.flatnonzero(keep))
    return TrainingEpochs(es, protocol, sids, n_out)
