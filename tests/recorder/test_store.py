"""The block store and the epocher without LSL: one transaction per block, honest accounting, bounded queues."""
from __future__ import annotations

import numpy as np
import pytest

from eegloop.database import Database
from eegloop.protocol import protocol_from_dict
from eegloop.recorder.epocher import Epocher, check_epoch, epoch_window
from eegloop.recorder.recorder import EpochQueue
from eegloop.types import BlockRecord, Epoch, RejectedEpoch


def _proto(tmp_path):
    return protocol_from_dict({"stimuli": {"folder": str(tmp_path)}, "amplifier": {"channels": 2, "sfreq": 100},
                               "epochs": {"tmin": 0.0, "tmax": 0.2, "margin_s": 0.1},
                               "preprocessing": {"bandpass_hz": [1, 40], "notch_hz": None}})


def _block(block=1, shown=3, kept=3, rejected=0, ended=True, planned=None, reason=None):
    rec = BlockRecord(run=1, block=block, ended=ended, n_planned=planned, reason=reason)
    rec.events.append(({"event": "block_start", "run": 1, "block": block}, 1.0))
    for t in range(1, shown + 1):
        trial = (block - 1) * 10 + t
        rec.events.append(({"event": "stim_on", "run": 1, "block": block, "trial": trial, "class": "ab"[t % 2]},
                           1.0 + t))
        if t <= kept:
            rec.epochs.append(Epoch(np.full((2, 40), t, np.float32), "ab"[t % 2], 100.0, -0.1, ["A", "B"], 1, block,
                                    trial))
        elif t <= kept + rejected:
            rec.rejected.append(RejectedEpoch("ab"[t % 2], 1, block, "gap", trial, 1.0 + t, "test"))
        rec.timings.append(dict(trial=trial, intended_onset_lsl=1.0 + t, actual_onset_lsl=1.0 + t, intended_frames=6,
                                actual_frames=6, duration_s=0.1, dropped_frames=0))
    if ended:
        rec.events.append(({"event": "block_end", "run": 1, "block": block}, 9.0))
    return rec


def test_accounting_rules():
    assert _block().accounting() == ("done", None)
    assert _block(kept=2, rejected=1).accounting() == ("done", None)  # rejected with a reason count
    assert _block(kept=2).accounting() == ("incomplete", "1 of 3 epochs missing")
    assert _block(ended=False).accounting()[0] == "incomplete"
    assert _block(planned=5).accounting() == ("incomplete", "stopped after 3 of 5 images")
    assert _block(planned=5, reason="aborted by the operator").accounting() == ("incomplete", "aborted by the operator")
    stopped = _block(kept=2)
    stopped.rejected.append(RejectedEpoch("b", 1, 1, "stopped", 3))
    assert stopped.accounting()[0] == "incomplete"  # a hole left by a stop is recorded again, not kept


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_block_is_one_transaction_and_replaces(tmp_path, backend, request):
    url = f"sqlite:///{tmp_path / 'e.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    db = Database(url, data_dir=tmp_path)
    proto = _proto(tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", proto)
    run = db.add_run(sid, 1)
    bid, status, reason = db.store_block(sid, run, _block(kept=1, planned=5, reason="aborted by the operator"))
    assert status == "incomplete" and reason == "aborted by the operator"
    assert db.count_epochs(sid) == 1 and len(db.get_trial_timings(sid)) == 3
    assert db.get_epochs(sid, done_only=True) == []  # training never sees an incomplete block
    # a failing transaction leaves nothing half-written: an epoch of the wrong shape breaks nothing before it
    bad = _block(block=2)
    bad.epochs[1].data = None  # encode_array fails inside the transaction
    with pytest.raises(Exception):
        db.store_block(sid, run, bad)
    assert [b.index for b in db.get_blocks(sid)] == [1] and db.count_epochs(sid) == 1
    # --resume: the same block recorded again replaces every row of the first attempt
    _, status, _ = db.store_block(sid, run, _block(kept=2, rejected=1))
    assert status == "done"
    (b,) = db.get_blocks(sid)
    assert (b.status, b.n_stimuli, b.n_epochs, b.n_rejected, b.reason) == ("done", 3, 2, 1, None)
    assert len(db.get_events(sid, "stim_on")) == 3 and len(db.get_trial_timings(sid)) == 3
    assert [e.trial for e in db.get_epochs(sid, done_only=True)] == [1, 2]
    assert [(r.trial, r.reason) for r in db.get_rejected(sid)] == [(3, "gap")]
    assert db.rejected_by_reason(sid) == {"gap": 1}
    assert all(e.event_id is not None for e in db.get_epochs(sid))


def test_check_epoch_and_window():
    win = epoch_window(_proto(".").epochs, 100.0)
    assert (win.start, win.length, win.tmin) == (-10, 40, -0.1)
    t = np.arange(40) / 100
    x = np.zeros((2, 40), np.float32)
    assert check_epoch(x, t, 100.0) is None
    t2 = t.copy()
    t2[20:] += 9.0
    assert check_epoch(x, t2, 100.0)[0] == "gap"
    t3 = t.copy()
    t3[20:] += 0.016  # 1.6 periods
    assert check_epoch(x, t3, 100.0)[0] == "gap"
    x[1, 5] = np.nan
    assert check_epoch(x, t, 100.0)[0] == "non-finite"


def test_epocher_rejects_and_accounts(tmp_path):
    proto = _proto(tmp_path)
    ep = Epocher(proto.epochs, 100.0, 2, [0, 1], [], ["A", "B"], buffer_s=5.0)
    t = 100.0 + np.arange(300) / 100
    x = np.random.default_rng(0).standard_normal((2, 300)).astype(np.float32)
    x[0, 150] = np.inf
    ep.add_marker({"event": "block_start", "run": 1, "block": 1, "trials": 3}, 100.1, 1)
    for k, onset in enumerate((100.5, 101.5, 102.5), start=1):
        ep.add_marker({"event": "stim_on", "run": 1, "block": 1, "trial": k, "class": "a"}, onset, 1)
    ep.add_marker({"event": "block_end", "run": 1, "block": 1}, 102.9, 1)
    ep.append(x, t)
    assert ep.finished_blocks() == []  # nothing cut yet
    got = ep.cut_ready()
    assert [e.trial for e in got] == [1, 3]  # trial 2 holds the inf
    (rec,) = ep.finished_blocks()
    assert [e.trial for e in rec.epochs] == [1, 3] and [(r.trial, r.reason) for r in rec.rejected] == [(2, "non-finite")]
    assert rec.accounting() == ("done", None)


def test_epoch_queue_is_bounded():
    q = EpochQueue(maxsize=3)
    eps = [Epoch(np.zeros((1, 2)), "a", 1.0, 0.0, ["A"], 1, 1, k) for k in range(10)]
    for e in eps:
        q.offer(e)
    assert q.qsize() == 3 and q.dropped == 7
    assert [q.get().trial for _ in range(3)] == [7, 8, 9]  # the newest are kept
