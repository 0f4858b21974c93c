"""Bring your own recordings: every shared example imports or fails clearly; replay records back the same epochs.

The import tests that need no shared data are in test_import_types.py."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from eegloop.lsl import configure_lsl

configure_lsl("machine")

from eegloop.database import Database  # noqa: E402
from eegloop.protocol import load_protocol, protocol_from_dict  # noqa: E402
from eegloop.recorder.importers import (DataImportError, cut_epochs, import_recordings, parse_events,  # noqa: E402
                                        read_recording)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data not beside the checkout")
N170 = "1=house,2=face"
CH = ["TP9", "AF7", "AF8", "TP10"]


def xdf_protocol(channels, sfreq, **epochs):
    return protocol_from_dict({"stimuli": {"folder": "x"}, "paradigm": {"block_s": 20, "image_s": 1},
                               "amplifier": {"channels": channels, "sfreq": sfreq},
                               "epochs": {"tmin": 0.0, "tmax": 0.5, "margin_s": 0.1, **epochs},
                               "preprocessing": {"bandpass_hz": [0.5, min(40, sfreq / 2 - 1)], "notch_hz": None,
                                                 "stft_window_ms": 200, "stft_hop_ms": 100}})


@pytest.mark.parametrize("csv", sorted(str(p.relative_to(DATA)) for p in (DATA / "n170").rglob("*.csv")))
def test_every_n170_csv_imports(tmp_path, csv):
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    proto = load_protocol(REPO / "protocols" / "n170.yaml")
    sid = import_recordings(db, "s", proto, [DATA / csv], "csv", parse_events(N170), CH)
    es = db.load_epochs("s")
    blocks = db.get_blocks(sid)
    assert all(b.status == "done" and b.n_epochs + b.n_rejected == b.n_stimuli for b in blocks)
    assert len(es) > 150 and set(es.labels) == {"house", "face"}
    assert es.data.shape[1:] == (4, int(round(0.9 * 256)) + 2 * 128)
    info = db.get_session(sid)
    assert info.kind == "imported" and info.status == "imported"
    assert len(db.get_blocks(sid)) >= 5  # contiguous 20 s stretches: block-wise folds exist


def test_xdf_clock_resets_imports_with_its_markers(tmp_path):
    rec = read_recording(DATA / "xdf" / "clock_resets.xdf")
    assert rec.data.shape[0] == 8 and rec.sfreq == 100
    values = sorted({v for _, v in rec.markers})
    events = {v: ("a" if k % 2 else "b") for k, v in enumerate(values)}
    proto = xdf_protocol(8, 100)
    blocks, _ = cut_epochs(rec, proto, events, run=1)
    eps = [e for b in blocks for e in b.epochs]
    gap = np.diff(rec.times).max()
    assert gap > 100  # the stream jumps by minutes: pyxdf's clock-reset handling keeps both segments
    assert 100 < len(eps) <= len(rec.markers)
    for e in eps:  # every epoch is contiguous signal around its marker, none spans the jump
        t = rec.times
        i = int(np.argmin(np.abs(t - e.onset_lsl)))
        a = i + int(round(-0.1 * 100))
        assert np.array_equal(e.data, rec.data[:, a:a + e.data.shape[1]])
        assert np.diff(t[a:a + e.data.shape[1]]).max() < 1.5 / 100
    # every stimulus is accounted for: a valid epoch, or a rejected one with its reason (the clock reset, the edges)
    rejected = [r for b in blocks for r in b.rejected]
    assert len(eps) + len(rejected) == sum(b.n_stimuli for b in blocks)
    assert {r.reason for r in rejected} <= {"gap", "edge"}
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    sid = import_recordings(db, "x", proto, [DATA / "xdf" / "clock_resets.xdf"], events=events)
    assert len(db.load_epochs("x")) == len(eps)
    assert sum(db.rejected_by_reason(sid).values()) == len(rejected)
    assert all(b.status == "done" and b.n_epochs + b.n_rejected == b.n_stimuli for b in db.get_blocks(sid))


@pytest.mark.parametrize("name,needle", [
    ("empty_streams.xdf", "has no samples"),
    ("minimal.xdf", "unknown marker value"),
])
def test_xdf_edge_cases_fail_clearly(tmp_path, name, needle):
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    proto = xdf_protocol(3, 10, tmax=0.3, margin_s=0.0)
    with pytest.raises(DataImportError) as exc:
        import_recordings(db, "x", proto, [DATA / "xdf" / name])
    assert needle in str(exc.value) and name in str(exc.value) and "\n" not in str(exc.value)
    assert db.list_subjects() == []  # nothing written


def test_minimal_xdf_too_short_for_an_epoch():
    rec = read_recording(DATA / "xdf" / "minimal.xdf")
    events = {v: "a" for _, v in rec.markers}
    with pytest.raises(DataImportError, match="no complete epoch"):
        cut_epochs(rec, xdf_protocol(3, 10, tmax=0.5, margin_s=0.5), events, run=1)


@pytest.mark.slow
def test_replay_records_back_the_imported_epochs(tmp_path):
    from eegloop.recorder.player import Player
    from eegloop.recorder.recorder import Recorder

    proto = load_protocol(REPO / "protocols" / "n170.yaml")
    tag = uuid.uuid4().hex[:6]
    proto = protocol_from_dict({**proto.to_dict(), "amplifier": {**proto.to_dict()["amplifier"],
                                                                "stream_name": f"rp-{tag}",
                                                                "marker_stream_name": f"rpm-{tag}"}})
    f = sorted((DATA / "n170" / "subject2" / "session1").glob("*.csv"))[0]
    rec = read_recording(f, "csv", CH)
    n = int(25 * rec.sfreq)  # the first 25 s, replayed 5x faster
    from eegloop.recorder.importers import Recording

    part = Recording(rec.data[:, :n], rec.times[:n], rec.sfreq, rec.ch_names,
                     [m for m in rec.markers if m[0] < rec.times[n - 1]], rec.source)
    blocks, _ = cut_epochs(part, proto, parse_events(N170), 1)
    imported = [e for b in blocks for e in b.epochs]
    player = Player(part, f"rp-{tag}", f"rpm-{tag}", parse_events(N170), speed=5.0, sfreq=256.0,
                    block_s=proto.paradigm.block_s)
    player.start(wait_for_consumers=10)
    recorder = Recorder(proto).connect(timeout=5)
    online = recorder.subscribe(maxsize=10_000)
    recorder.start()
    player.wait()
    time.sleep(0.5)
    stats = recorder.stop()
    got = []
    while not online.empty():
        got.append(online.get())
    assert online.dropped == 0
    assert stats.lost_samples == 0
    assert len(got) == len(imported)
    by_label = {}
    for e in imported:
        by_label.setdefault(e.label, []).append(e.data)
    for e in got:
        assert any(np.array_equal(e.data, d) for d in by_label[e.label]), "a replayed epoch differs from the import"


def test_same_file_twice_is_refused_unless_forced(tmp_path):
    """Two copies of one recording would land in different folds and inflate every score."""
    proto = load_protocol(REPO / "protocols" / "n170.yaml")
    f = sorted((DATA / "n170" / "subject2" / "session1").glob("*.csv"))[0]
    copy = tmp_path / "renamed.csv"
    copy.write_bytes(f.read_bytes())
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    sid = import_recordings(db, "s", proto, [f], "csv", parse_events(N170), CH)
    n = db.count_epochs(sid)
    with pytest.raises(DataImportError, match=rf"already imported as session {sid} .*--force"):
        import_recordings(db, "s", proto, [copy], "csv", parse_events(N170), CH)
    with pytest.raises(DataImportError, match="given twice"):
        import_recordings(db, "t", proto, [f, copy], "csv", parse_events(N170), CH)
    assert [s.id for s in db.list_sessions()] == [sid]
    sid2 = import_recordings(db, "s", proto, [copy], "csv", parse_events(N170), CH, force=True)
    assert db.count_epochs(sid2) == n
