"""Migration 0004 (group consent, group models) on a database with data, and the facade's consent and group-model
methods, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from eegloop.database import Database
from eegloop.errors import DatabaseError


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'eegloop.db'}"
    return request.getfixturevalue("fresh_postgres_db")


def _counts(db) -> tuple:
    with db.engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("subjects", "sessions", "models"))


def test_upgrade_and_downgrade_keep_every_subject_session_and_model(url, tmp_path):
    """SQLite with foreign keys on: copying and dropping `subjects` (Alembic's batch mode) would cascade to every
    session and model; 0004 adds its columns in place."""
    old = Database(url, data_dir=tmp_path, upgrade=False)
    old.upgrade("0003")
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO subjects (id, code, created_at) VALUES (1, 'S1', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO sessions (subject_id, kind, protocol_name, protocol_yaml, protocol_sha256, "
                          "status, started_at, software_version, info) VALUES (1, 'recorded', 'p', '', '', "
                          "'recorded', CURRENT_TIMESTAMP, '0', '{}')"))
        conn.execute(text("INSERT INTO models (subject_id, session_ids, kind, checkpoint_path, config, metrics, "
                          "created_at) VALUES (1, '[]', 'riemann', 'models/m.skops', '{}', '{}', CURRENT_TIMESTAMP)"))
    old.close()
    db = Database(url, data_dir=tmp_path)
    assert db.revision() == db.head_revision() == "0004"
    assert _counts(db) == (1, 1, 1)
    c = db.subject_consent("S1")
    assert (c.code, c.group, c.changed_at, c.word) == ("S1", False, None, "no")
    assert db.latest_model("S1").kind == "riemann" and db.list_group_models() == []
    db.set_subject_consent("S1", True)
    from alembic import command

    cfg = db._alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert db.revision() == "0003" and _counts(db) == (1, 1, 1)
    db.close()


def test_consent_and_group_models_through_the_facade(url, tmp_path):
    db = Database(url, data_dir=tmp_path)
    from eegloop.database.trained_models import GroupMember

    for code in ("S1", "S2"):
        db.add_subject(code)
    before, after = db.set_subject_consent("S1", True)
    assert (before.group, after.group) == (False, True) and after.changed_at is not None
    assert db.set_subject_consent("S1", True)[1].changed_at == after.changed_at  # the same state: unchanged
    with pytest.raises(DatabaseError, match="unknown subject 'S9'"):
        db.set_subject_consent("S9", True)
    members = [GroupMember("S1", [], 10), GroupMember("S2", [], 12)]
    with pytest.raises(DatabaseError, match="no group consent from S2"):  # checked again when it is stored
        db.add_group_model("G", "riemann", tmp_path / "g.skops", {}, {}, members)
    assert db.list_group_models() == []
    db.set_subject_consent("S2", True)
    mid = db.add_group_model("G", "riemann", tmp_path / "g.skops", {"alignment": "riemann"}, {}, members)
    with pytest.raises(DatabaseError, match="already exists"):
        db.add_group_model("G", "riemann", tmp_path / "h.skops", {}, {}, members)
    rec = db.get_group_model("G")
    assert (rec.id, rec.subjects, [m.n_epochs for m in rec.members]) == (mid, ["S1", "S2"], [10, 12])
    assert all(m.consent_at is not None for m in rec.members)
    assert [r.name for r in db.list_group_models("S2")] == ["G"]
    with pytest.raises(DatabaseError, match="has no trained model"):  # a group model is no subject's own model
        db.latest_model("S1")
    db.delete_group_model(mid)
    assert db.list_group_models("S1") == [] and not db.group_model_exists("G")
    db.close()
