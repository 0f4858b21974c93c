"""Database: migrations from empty, round-trip of every table, on SQLite and PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from eegloop.database import Database
from eegloop.errors import DatabaseError
from eegloop.protocol import load_protocol
from eegloop.stimuli import synthesize_stimuli
from eegloop.types import Epoch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'eegloop.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_db")
    d = Database(url, data_dir=tmp_path)
    yield d
    d.close()


def test_migrations_from_empty_match_the_models(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from eegloop.database.models import Base

    assert db.revision() == db.head_revision()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert {"subjects", "sessions", "runs", "blocks", "stimuli", "events", "epochs", "models",
            "feedback_trials", "trial_timings"} <= set(db.table_names())


def test_upgrade_is_idempotent(db):
    rev = db.revision()
    assert Database(db.url, data_dir=db.data_dir).revision() == rev


def test_sqlite_pragmas(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with d.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_round_trip_every_table(db, tmp_path):
    proto = load_protocol(REPO / "protocols" / "demo.yaml")
    subj = db.add_subject("S01")
    assert db.get_subject("S01").id == subj.id
    with pytest.raises(DatabaseError, match="already exists"):
        db.add_subject("S01")
    with pytest.raises(DatabaseError, match="pseudonymous code"):
        db.add_subject("John Smith")

    sid = db.create_session("S01", proto, info={"note": "round trip"})
    info = db.get_session(sid)
    assert info.protocol_sha256 == proto.sha256 and info.subject == "S01"
    assert load_protocol_from_text(info.protocol_yaml) == proto.to_dict()

    raw = tmp_path / "raw" / "run1.vhdr"
    run_id = db.add_run(sid, 1, raw_path=raw)
    assert db.get_runs(sid)[0].raw_path == "raw/run1.vhdr"
    db.update_run(run_id, samples_received=1000, samples_expected=1000, lost_samples=0, status="done")
    block_id = db.add_block(run_id, 1, classes=["circle", "square"], started_lsl=1.0, ended_lsl=6.0,
                            status="done")

    st = synthesize_stimuli(tmp_path / "stim", {"circle": "red circle", "square": "blue square"}, 2, size=16)
    ids = db.add_stimuli(st)
    assert db.add_stimuli(st) == ids  # reused, not duplicated
    stim_row = db.get_stimuli()[0]
    assert stim_row.sha256 == st.images[0].sha256 and stim_row.class_name == "red circle"

    payload = {"event": "stim_on", "run": 1, "block": 1, "trial": 1, "class": "circle", "image": "circle_000.png"}
    (ev,) = db.add_events(sid, [dict(kind="stim_on", lsl_time=12.5, run_id=run_id, block_id=block_id,
                                     stimulus_id=ids[str(st.images[0].path)], trial=1, class_id="circle",
                                     payload=payload)])
    assert db.get_events(sid)[0].payload == payload
    db.add_trial_timings([dict(event_id=ev, intended_onset_lsl=12.5, actual_onset_lsl=12.501, intended_frames=30,
                               actual_frames=30, duration_s=0.5, dropped_frames=0)])
    assert db.get_trial_timings(sid)[0].actual_frames == 30

    rng = np.random.default_rng(0)
    data = rng.standard_normal((128, 500)).astype(np.float32) * 1e3
    names = [f"E{i}" for i in range(128)]
    ep = Epoch(data=data, label="circle", sfreq=1000.0, tmin=-0.25, channel_names=names, run=1, block=1,
               trial=1, onset_lsl=12.5, event_id=ev)
    db.add_epochs(sid, [ep], block_id=block_id)
    back = db.get_epochs(sid)[0]
    assert back.data.tobytes() == data.tobytes()  # bytes identical
    assert (back.label, back.sfreq, back.tmin, back.channel_names, back.event_id) == \
        ("circle", 1000.0, -0.25, names, ev)
    es = db.load_epochs("S01")
    assert es.data.shape == (1, 128, 500) and es.classes["circle"] == "red circle"

    mid = db.add_model("S01", [sid], tmp_path / "models" / "m1.safetensors", config={"n_chans": 128},
                       metrics={"top1": 0.5})
    m = db.latest_model("S01")
    assert (m.id, m.checkpoint_path, m.metrics, m.session_ids) == (mid, "models/m1.safetensors",
                                                                   {"top1": 0.5}, [sid])

    db.add_feedback_trial(sid, model_id=mid, event_id=ev, trial=1, mode="bank",
                          probabilities={"circle": 0.7, "square": 0.3}, predicted_class="circle",
                          true_class="circle", image_path="images/1.png", seed=3,
                          latencies={"decode_ms": 2.0, "image_ready_ms": 3.0, "to_screen_ms": 16.0})
    ft = db.get_feedback_trials(sid)[0]
    assert ft.probabilities == {"circle": 0.7, "square": 0.3} and ft.latencies["to_screen_ms"] == 16.0

    db.set_session_status(sid, "completed", ended=True)
    assert db.get_session(sid).status == "completed" and db.get_session(sid).ended_at is not None
    assert [s.code for s in db.list_subjects()] == ["S01"] and db.list_subjects()[0].n_sessions == 1


def load_protocol_from_text(text_: str) -> dict:
    import yaml

    return yaml.safe_load(text_)


def test_damaged_epoch_is_detected(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'x.db'}")
    d.add_subject("S02")
    sid = d.create_session("S02", load_protocol(REPO / "protocols" / "demo.yaml"))
    d.add_epochs(sid, [Epoch(np.ones((2, 4)), "a", 100.0, 0.0, ["a", "b"], 1, 1)])
    with d.engine.begin() as conn:
        blob = conn.execute(text("SELECT data FROM epochs")).scalar()
        import zlib
        bad = zlib.compress(zlib.decompress(blob)[:-4] + b"\x00\x00\x00\x40")
        conn.execute(text("UPDATE epochs SET data = :b"), {"b": bad})
    with pytest.raises(DatabaseError, match="checksum"):
        d.get_epochs(sid)
    # many epochs are decoded on every core: one damaged among them is still the same error
    sid = d.create_session("S02", load_protocol(REPO / "protocols" / "demo.yaml"))
    d.add_epochs(sid, [Epoch(np.full((2, 4), k, float), "a", 100.0, 0.0, ["a", "b"], 1, 1, trial=k)
                       for k in range(100)])
    got = d.get_epochs(sid)
    assert [e.trial for e in got] == list(range(100)) and all((e.data == e.trial).all() for e in got)
    with d.engine.begin() as conn:
        conn.execute(text("UPDATE epochs SET data = :b WHERE session_id = :s AND trial = 57"), {"b": bad, "s": sid})
    with pytest.raises(DatabaseError, match="checksum"):
        d.get_epochs(sid)


def test_foreign_keys_enforced(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'x.db'}")
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        d.add_run(999, 1)


def test_bad_url_is_a_clear_error():
    with pytest.raises(DatabaseError, match="cannot use database URL"):
        Database("nosuchdb://x")
