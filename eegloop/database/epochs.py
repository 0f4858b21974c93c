"""Epochs: stored compressed (float32, zlib) with a checksum, loaded back as :class:`~eegloop.types.EpochSet`."""
from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from sqlalchemy import func, select

from ..errors import DatabaseError
from ..types import Epoch, EpochSet
from .engine import Repository
from .models import BlockRow, EpochRow, EventRow, StimulusRow
from .sessions import Sessions

__all__ = ["Epochs", "encode_array", "decode_array", "epoch_rows", "DONE_STATUSES"]

DONE_STATUSES = ("done", "imported")  # 'imported': blocks of databases from before revision 0002


def encode_array(a: np.ndarray) -> tuple[bytes, str]:
    """float32 C-order bytes compressed with zlib, and the SHA-256 of the raw bytes."""
    raw = np.ascontiguousarray(a, dtype=np.float32).tobytes()
    return zlib.compress(raw, 1), hashlib.sha256(raw).hexdigest()


def decode_array(blob: bytes, shape: tuple[int, ...], sha256: str) -> np.ndarray:
    raw = zlib.decompress(blob)
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise DatabaseError("epoch data does not match its checksum (the database file is damaged)")
    return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()


def epoch_rows(session_id: int, epochs: Sequence[Epoch], block_id: int | None = None) -> list[EpochRow]:
    """The rows of ``epochs`` (of ``block_id``), data compressed and checksummed."""
    rows = []
    for e in epochs:
        blob, digest = encode_array(e.data)
        rows.append(EpochRow(
            session_id=session_id, event_id=e.event_id, block_id=block_id, run_index=e.run, block_index=e.block,
            trial=e.trial, label=e.label, onset_lsl=e.onset_lsl, tmin=e.tmin, sfreq=e.sfreq,
            n_channels=e.data.shape[0], n_times=e.data.shape[1], channel_names=list(e.channel_names),
            data=blob, sha256=digest))
    return rows


def _epoch(r: EpochRow, data: np.ndarray) -> Epoch:
    return Epoch(data=data, label=r.label,
                 sfreq=r.sfreq, tmin=r.tmin, channel_names=list(r.channel_names), run=r.run_index,
                 block=r.block_index, trial=r.trial, onset_lsl=r.onset_lsl, event_id=r.event_id)


class Epochs(Repository):
    """Storing, counting and loading epochs."""

    def add(self, session_id: int, epochs: Sequence[Epoch], block_id: int | None = None) -> list[int]:
        """Store epochs (compressed float32 + checksum) in one transaction (blocks use :meth:`store_block`)."""
        with self.session() as s:
            rows = epoch_rows(session_id, epochs, block_id)
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def count(self, session_id: int) -> int:
        with self.session() as s:
            return s.scalar(select(func.count(EpochRow.id)).where(EpochRow.session_id == session_id))

    def labels(self, session_ids: Sequence[int], below_block: int | None = None) -> set[str]:
        """The class labels of the sessions' training epochs (those of blocks whose accounting is complete, as
        :meth:`load` reads them; ``below_block``: only blocks numbered below it), read without loading any epoch."""
        if not session_ids:
            return set()
        with self.session() as s:
            q = (select(EpochRow.label).distinct().join(BlockRow, BlockRow.id == EpochRow.block_id)
                 .where(EpochRow.session_id.in_(list(session_ids)), BlockRow.status.in_(DONE_STATUSES)))
            if below_block is not None:
                q = q.where(EpochRow.block_index < below_block)
            return set(s.scalars(q))

    def get(self, session_id: int, done_only: bool = False) -> list[Epoch]:
        """A session's stored epochs; ``done_only``: only those of blocks whose accounting is complete
        (what training and evaluation use)."""
        with self.session() as s:
            q = select(EpochRow).where(EpochRow.session_id == session_id).order_by(EpochRow.id)
            if done_only:
                q = q.join(BlockRow, BlockRow.id == EpochRow.block_id).where(BlockRow.status.in_(DONE_STATUSES))
            rows = list(s.scalars(q))
            blobs = [(r.data, (r.n_channels, r.n_times), r.sha256) for r in rows]
        # decompressing and checking is most of loading (5 of 7 s for 2000 x 128 x 1000 epochs on 2 cores);
        # zlib and hashlib release the GIL, so the cores share it
        if len(blobs) > 64 and (os.cpu_count() or 1) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(os.cpu_count()) as pool:
                arrays = list(pool.map(lambda b: decode_array(*b), blobs))
        else:
            arrays = [decode_array(*b) for b in blobs]
        return [_epoch(r, a) for r, a in zip(rows, arrays)]

    def load(self, subject: str, session_ids: Sequence[int] | None = None) -> EpochSet:
        """All epochs of a subject (or of the given sessions) as one :class:`EpochSet`."""
        sessions = Sessions(self.store).all(subject)
        if session_ids:
            known = {x.id for x in sessions}
            bad = [i for i in session_ids if i not in known]
            if bad:
                raise DatabaseError(f"--sessions: session {bad[0]} does not belong to subject {subject!r}")
            sessions = [x for x in sessions if x.id in set(session_ids)]
        epochs, sess, classes = [], [], {}
        with self.session() as s:
            sha_by_name = {(r.class_id, Path(r.path).name): r.sha256 for r in s.scalars(select(StimulusRow))}
        for info in sessions:
            es = self.get(info.id, done_only=True)
            with self.session() as s:
                images = {r.id: (r.payload or {}).get("image") for r in s.scalars(
                    select(EventRow).where(EventRow.session_id == info.id, EventRow.kind == "stim_on"))}
            for e in es:
                name = images.get(e.event_id)
                if name:
                    e.image = sha_by_name.get((e.label, name))
            epochs += es
            sess += [info.id] * len(es)
            classes.update(info.protocol.stimuli.classes)  # none from a stored protocol this version cannot read
        if not epochs:
            raise DatabaseError(f"subject {subject!r} has no epochs yet (record or import a session first)")
        present = set(e.label for e in epochs)
        ordered = {c: n for c, n in classes.items() if c in present}
        ordered.update({c: c for c in sorted(present) if c not in ordered})
        return EpochSet.from_epochs(epochs, sessions=sess, classes=ordered,
                                   montage=sessions[0].protocol.amplifier.montage)  # default if unreadable
