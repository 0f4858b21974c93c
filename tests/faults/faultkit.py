"""Helpers of the fault tests: the invariants every fault must leave intact."""
from __future__ import annotations

import os
import sys
from collections import Counter


def accounting(db, sid: int) -> dict:
    """Check the invariants every fault must leave intact; return the per-block statuses.

    - every block: stored epochs + rejected epochs = stimuli shown (its stim_on events), and the block
      row's counts are those of the rows really stored;
    - a block is ``done`` only with all its planned images shown and every epoch accounted for;
    - no trial is stored twice.
    """
    from eegloop.database.models import BlockRow, EpochRow, EventRow, RejectedEpochRow
    from sqlalchemy import func, select

    out = {}
    with db.session() as s:
        blocks = s.scalars(select(BlockRow).join(BlockRow.run).where(BlockRow.run.has(session_id=sid))).all()
        for b in blocks:
            n_ep = s.scalar(select(func.count(EpochRow.id)).where(EpochRow.block_id == b.id))
            n_rej = s.scalar(select(func.count(RejectedEpochRow.id)).where(RejectedEpochRow.block_id == b.id))
            n_stim = s.scalar(select(func.count(EventRow.id)).where(EventRow.block_id == b.id,
                                                                      EventRow.kind == "stim_on"))
            assert (b.n_epochs, b.n_rejected, b.n_stimuli) == (n_ep, n_rej, n_stim), b.index
            assert n_ep + n_rej == n_stim, f"block {b.index}: {n_ep} epochs + {n_rej} rejected != {n_stim} shown"
            if b.status == "done":
                assert b.reason is None
            else:
                assert b.status == "incomplete" and b.reason, (b.index, b.status, b.reason)
            out[b.index] = b.status
        trials = s.scalars(select(EventRow.trial).where(EventRow.session_id == sid, EventRow.kind == "stim_on")).all()
        dup = [t for t, n in Counter(trials).items() if n > 1]
        assert not dup, f"trials stored twice: {dup[:5]}"
        epoch_trials = s.scalars(select(EpochRow.trial).where(EpochRow.session_id == sid)).all()
        assert len(epoch_trials) == len(set(epoch_trials))
    return out


def raw_files_readable(db, sid: int) -> int:
    """Every raw file of the session opens in MNE; returns the total number of samples."""
    import mne

    n = 0
    for r in db.get_runs(sid):
        parts = list((r.info or {}).get("raw_parts", [])) + ([r.raw_path] if r.raw_path else [])
        for p in parts:
            raw = mne.io.read_raw_brainvision(db.abspath(p), preload=True, verbose=False)
            n += raw.n_times
    return n


def eegloop_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "eegloop", *args]


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env
