"""Revision 0002 on a populated 0001 database; claims fence every write; a run's end is one transaction."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from eegloop.database import Database, SessionClaimedError, encode_array
from eegloop.protocol import protocol_from_dict
from eegloop.types import BlockRecord, Epoch


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'eegloop.db'}"
    return request.getfixturevalue("fresh_postgres_db")


def _proto(tmp_path):
    return protocol_from_dict({"stimuli": {"folder": str(tmp_path)}, "amplifier": {"channels": 2, "sfreq": 100},
                               "epochs": {"tmin": 0.0, "tmax": 0.2, "margin_s": 0.1},
                               "preprocessing": {"bandpass_hz": [1, 40], "notch_hz": None}})


def test_upgrade_a_populated_0001_database(url, tmp_path):
    """Epochs recorded before 0002 find their block (through their event, or their numbers) and still train."""
    db = Database(url, data_dir=tmp_path, upgrade=False)
    db.upgrade("0001")
    blob, digest = encode_array(np.ones((2, 4), np.float32))
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO subjects (id, code, created_at) VALUES (1, 'S1', CURRENT_TIMESTAMP)"))
        c.execute(text("INSERT INTO sessions (id, subject_id, kind, protocol_name, protocol_yaml, protocol_sha256, "
                       "status, started_at, software_version, info) VALUES (1, 1, 'recorded', 'p', 'name: p', 'x', "
                       "'recorded', CURRENT_TIMESTAMP, '0.1', '{}')"))
        c.execute(text('INSERT INTO runs (id, session_id, "index", status, info) VALUES (1, 1, 1, \'done\', \'{}\')'))
        c.execute(text('INSERT INTO blocks (id, run_id, "index", status, classes) VALUES (1, 1, 1, \'done\', \'[]\')'))
        c.execute(text('INSERT INTO blocks (id, run_id, "index", status, classes) VALUES (2, 1, 2, \'aborted\', '
                       '\'[]\')'))
        c.execute(text("INSERT INTO events (id, session_id, run_id, block_id, kind, lsl_time, trial, class_id, payload)"
                       " VALUES (1, 1, 1, 1, 'stim_on', 1.0, 1, 'a', '{}')"))
        for eid, (event, block, trial, label) in enumerate([(1, 1, 1, "a"), (None, 1, 2, "b"), (None, 2, 3, "a")],
                                                           start=1):
            c.execute(text("INSERT INTO epochs (id, session_id, event_id, run_index, block_index, trial, label, tmin, "
                           "sfreq, n_channels, n_times, channel_names, data, sha256) VALUES (:id, 1, :ev, 1, :b, :t, "
                           ":l, 0.0, 100.0, 2, 4, '[\"A\", \"B\"]', :data, :sha)"),
                      dict(id=eid, ev=event, b=block, t=trial, l=label, data=blob, sha=digest))
    assert db.upgrade() == db.head_revision()
    with db.engine.connect() as c:
        got = dict(c.execute(text("SELECT trial, block_id FROM epochs")).all())
    assert got == {1: 1, 2: 1, 3: 2}  # by event, then by (run, block) numbers
    es = db.load_epochs("S1")
    assert sorted(es.labels.tolist()) == ["a", "b"]  # the old 'aborted' block's epoch is not trained on


def test_store_is_fenced_by_the_claim(url, tmp_path):
    db = Database(url, data_dir=tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", _proto(tmp_path))
    run = db.add_run(sid, 1)
    rec = BlockRecord(run=1, block=1, ended=True)
    rec.events.append(({"event": "stim_on", "trial": 1, "class": "a"}, 1.0))
    rec.epochs.append(Epoch(np.zeros((2, 4), np.float32), "a", 100.0, 0.0, ["A", "B"], 1, 1, 1))
    db.claim_session(sid, owner="host:1:a", ttl_s=10)
    assert db.store_block(sid, run, rec, owner="host:1:a")[1] == "done"
    with pytest.raises(SessionClaimedError, match="no longer holds its claim"):
        db.store_block(sid, run, rec, owner="host:2:b")
    with pytest.raises(SessionClaimedError, match=r"being recorded by another process \(host host, pid 1"):
        db.claim_session(sid, owner="host:2:b", ttl_s=10)
    # the first owner's heartbeat stops; once its claim expired, the second takes over and the first is fenced out
    with db.session() as s:
        s.execute(text("UPDATE sessions SET claim_heartbeat = claim_heartbeat - 100"))
    db.claim_session(sid, owner="host:2:b", ttl_s=10)
    with pytest.raises(SessionClaimedError):
        db.store_block(sid, run, rec, owner="host:1:a")
    assert not db.renew_claim(sid, owner="host:1:a")
    assert len(db.get_blocks(sid)) == 1 and db.count_epochs(sid) == 1


def test_finish_run_is_one_transaction(url, tmp_path):
    db = Database(url, data_dir=tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", _proto(tmp_path))
    run = db.add_run(sid, 1, status="recording")
    loose = [({"event": "run_start", "run": 1}, 1.0), ({"event": "run_end", "run": 1}, 9.0)]
    with pytest.raises(Exception):
        db.finish_run(sid, run, loose, "done", {"gaps": 0}, samples_received=object())
    assert db.get_events(sid) == [] and db.get_runs(sid)[0].status == "recording"  # nothing half-written
    db.finish_run(sid, run, loose, "done", {"gaps": 0}, samples_received=10)
    assert [e.kind for e in db.get_events(sid)] == ["run_start", "run_end"]
    r = db.get_runs(sid)[0]
    assert (r.status, r.samples_received, r.info["gaps"]) == ("done", 10, 0)


def test_lost_claim_is_reported_by_the_heartbeat(tmp_path, monkeypatch):
    from eegloop.database import CLAIM_OWNER
    from eegloop.database.claim import SessionClaim

    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", _proto(tmp_path))
    with SessionClaim(db, sid, ttl_s=1.0) as claim:
        assert SessionClaim.lost(db, sid) is None
        with db.session() as s:  # another process took the session over
            s.execute(text("UPDATE sessions SET claim_owner = 'elsewhere:9:z'"))
        claim.join(3)
        err = SessionClaim.lost(db, sid)
        assert isinstance(err, SessionClaimedError) and "lost its claim" in str(err)
    assert CLAIM_OWNER != "elsewhere:9:z"
