"""The database's typed records: SessionStatus stores the same texts, SessionDetails reads old and odd rows,
a typed summary is stored as the same JSON as the mapping it replaces, and a stored protocol is read back
through protocol_from_dict."""
from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import text

from eegloop.database import (
    Database,
    FeedbackSummary,
    RecordingSummary,
    SessionDetails,
    SessionStatus,
)
from eegloop.montage import DEFAULT_MONTAGE
from eegloop.protocol import load_protocol, protocol_from_dict, stored_protocol

REPO = Path(__file__).resolve().parents[2]


def _proto(tmp_path, **amplifier):
    d = load_protocol(REPO / "protocols" / "demo.yaml").to_dict()
    return protocol_from_dict({**d, "amplifier": {**d["amplifier"], **amplifier}})


def test_every_status_written_is_a_member():
    """Every session status text the package writes (set_session_status literals and the ones the database
    writes itself) is a SessionStatus value, so the enum is the one list of them."""
    written = set()
    for path in (REPO / "eegloop").rglob("*.py"):
        src = path.read_text()
        written |= set(re.findall(r'set_session_status\([^,]+,\s*"([a-z-]+)"', src))  # literal texts
        written |= {SessionStatus[m].value for m in re.findall(r"SessionStatus\.([A-Z_]+)", src)}
    assert written and written <= {s.value for s in SessionStatus}
    assert {"created", "recording", "recorded", "incomplete", "aborted", "failed", "trained", "feedback-done",
            "completed", "imported"} == {s.value for s in SessionStatus}


def test_status_behaves_as_its_text():
    st = SessionStatus.FEEDBACK_DONE
    assert st == "feedback-done" and str(st) == "feedback-done" and f"{st}" == "feedback-done"
    assert f"{st:>14}" == " feedback-done"
    assert {"feedback-done": 1}[st] == 1 and st in ("feedback-done",)
    assert json.dumps({"s": st}) == '{"s": "feedback-done"}'
    assert SessionStatus("recorded") is SessionStatus.RECORDED


def test_status_is_stored_as_the_same_text(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", _proto(tmp_path))
    for st in (SessionStatus.FEEDBACK_DONE, "aborted", "a-text-of-another-version"):
        db.set_session_status(sid, st)
        with db.engine.connect() as c:
            stored = c.execute(text("SELECT status FROM sessions WHERE id = :i"), {"i": sid}).scalar()
        assert stored == str(st) and type(stored) is str
        assert db.get_session(sid).status == str(st)
    db.close()


def test_typed_summary_is_stored_as_the_same_json(tmp_path):
    """A RecordingSummary is stored exactly as the mapping the visit wrote before (keys, order, values)."""
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.add_subject("S1")
    as_dict = {"runs_done": 2, "frame_rate_hz": 60.0, "paced": True, "samples_received": 1000, "lost_samples": 0,
               "epochs_rejected": {"flat": 1}, "online_dropped": 0, "scheduling": "fifo", "cpu_steal_pct_max": None}
    stored = []
    for value in (as_dict, RecordingSummary(**as_dict)):
        sid = db.create_session("S1", _proto(tmp_path))
        db.set_session_status(sid, SessionStatus.RECORDED, recording=value)
        with db.engine.connect() as c:
            stored.append(c.execute(text("SELECT info FROM sessions WHERE id = :i"), {"i": sid}).scalar())
    assert stored[0] == stored[1] and list(json.loads(stored[1])["recording"]) == list(as_dict)
    details = db.get_session(sid).details
    assert details.recording == RecordingSummary(**as_dict) and details.recording.to_json() == as_dict
    db.update_session_info(sid, failure="the amplifier stopped")
    assert db.get_session(sid).details.failure == "the amplifier stopped"
    db.close()


def test_details_read_old_and_odd_rows():
    assert SessionDetails.from_json(None) == SessionDetails() == SessionDetails.from_json({})
    assert SessionDetails.from_json([1, 2]).to_json() == {}
    odd = SessionDetails.from_json({"model_id": "seven", "train_seconds": True, "recording": "lost",
                                    "feedback": {"mode": "bank", "trials": 3.5, "surprise": 1}, "note": "kept"})
    assert odd.model_id is None and odd.train_seconds is None and odd.recording is None
    assert odd.feedback == FeedbackSummary(mode="bank", extra={"surprise": 1})
    assert odd.extra == {"note": "kept"}


def test_details_round_trip_what_the_visit_writes():
    info = {"channels": [{"name": "Fz", "type": "eeg"}], "signal_checks": [{"verdict": "pass"}],
            "recording": {"runs_done": 1, "frame_rate_hz": 60.0, "paced": False, "samples_received": 5,
                          "lost_samples": 0, "epochs_rejected": {}, "online_dropped": 0, "scheduling": "normal",
                          "cpu_steal_pct_max": 0.5},
            "model_id": 3, "train_seconds": 1.5, "encoder_id": 4, "evaluation": {"top1": 0.5},
            "feedback": {"mode": "retrieve", "format": "image", "images_per_trial": 1, "trials": 10, "correct": 4,
                         "latency_ms": {"decode_ms": {"median": 1.0, "p95": 2.0}}, "model_id": 4, "scored": 9,
                         "candidates": 50, "encoder_id": 4},
            "files": ["a.vhdr"], "events": {"S  1": "a"}, "format": "things-eeg2", "zero_shot_test_classes": ["b"],
            "note": "round trip"}
    d = SessionDetails.from_json(info)
    assert d.to_json() == info and d.feedback.candidates == 50 and d.recording.scheduling == "normal"
    bank = {"mode": "bank", "format": "image", "images_per_trial": 1, "trials": 2, "correct": 1, "latency_ms": {},
            "model_id": 1}  # no embedding keys: none are added back
    assert FeedbackSummary.from_json(bank).to_json() == bank


def test_stored_protocol_is_read_through_protocol_from_dict(tmp_path):
    p = _proto(tmp_path, montage="standard_1020")
    assert stored_protocol(p.to_yaml()) == protocol_from_dict(p.to_dict())
    assert stored_protocol(p.to_yaml(), tolerant=True) == protocol_from_dict(p.to_dict())
    assert stored_protocol(p.to_yaml(), tolerant=True).amplifier.montage == "standard_1020"
    assert stored_protocol(_proto(tmp_path, montage=None).to_yaml(), tolerant=True).amplifier.montage is None
    for unreadable in ("name: [unclosed", "name: p", "- a list"):  # not YAML; not a protocol of this version
        assert stored_protocol(unreadable, tolerant=True).stimuli.classes == {}
        assert stored_protocol(unreadable, tolerant=True).amplifier.montage == DEFAULT_MONTAGE


def test_session_info_gives_its_protocol_and_details(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.add_subject("S1")
    p = _proto(tmp_path)
    sid = db.create_session("S1", p, info={"model_id": 2})
    info = db.get_session(sid)
    assert info.protocol.stimuli.classes == p.stimuli.classes and info.protocol.sha256 == p.sha256
    assert info.details.model_id == 2 and info.info == {"model_id": 2}
    db.close()
