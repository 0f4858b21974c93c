"""Real files, real markers: values that are not stimuli (the empty marker among them) are ignored on request
and counted; unknown values are listed with their counts. Needs no shared data: the XDF is written here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eegloop.database import Database
from eegloop.protocol import protocol_from_dict
from eegloop.recorder.importers import DataImportError, import_recordings, parse_events

REPO = Path(__file__).resolve().parents[2]


def xdf_protocol(channels, sfreq):
    return protocol_from_dict({"stimuli": {"folder": "x"}, "paradigm": {"block_s": 20, "image_s": 1},
                               "amplifier": {"channels": channels, "sfreq": sfreq},
                               "epochs": {"tmin": 0.0, "tmax": 0.5, "margin_s": 0.1},
                               "preprocessing": {"bandpass_hz": [0.5, 40], "notch_hz": None,
                                                 "stft_window_ms": 200, "stft_hop_ms": 100}})


def test_xdf_with_empty_and_non_stimulus_markers(tmp_path):
    """A LabRecorder-shaped XDF (8 ch, 250 Hz, markers '101'/'201', a 'start' and one empty marker): unknown
    values are listed with their counts; mapped to ignore they are kept as events, counted, never epoched."""
    import subprocess
    import sys

    import yaml
    from xdfkit import write_xdf

    rng = np.random.default_rng(3)
    sf, n_s = 250.0, 60
    marks = [(101.0, "start"), (101.5, "")]
    for k in range(40):
        marks.append((102.0 + 1.2 * k, "101" if k % 4 else "201"))
    path = write_xdf(tmp_path / "p300.xdf", (rng.standard_normal((8, int(sf * n_s))) * 10).astype(np.float32),
                     sf, 100.0, sorted(marks))
    proto = xdf_protocol(8, 250)
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    with pytest.raises(DataImportError) as e:
        import_recordings(db, "p", proto, [path], events=parse_events("101=nontarget,201=target"))
    msg = str(e.value)
    assert "unknown marker values 'start' (1x), '' (1x)" in msg or "unknown marker values '' (1x), 'start' (1x)" in msg
    assert "VALUE=ignore" in msg
    assert db.list_subjects() == []  # nothing stored
    # the command line form, with the empty marker ignored through the YAML form
    (tmp_path / "events.yaml").write_text(yaml.safe_dump({101: "nontarget", 201: "target", "start": "ignore",
                                                          "": "ignore"}))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(proto.to_dict()))
    r = subprocess.run([sys.executable, "-m", "eegloop", "import", str(path), "--subject", "p300", "--events",
                        str(tmp_path / "events.yaml"), "--protocol", str(tmp_path / "p.yaml")],
                       env={**__import__("os").environ, "EEGLOOP_DATA": str(tmp_path / "d")},
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "ignored markers (not stimuli): 2 (" in r.stdout and "'start' 1x" in r.stdout and "'' 1x" in r.stdout
    db2 = Database(f"sqlite:///{tmp_path / 'd' / 'eegloop.db'}", data_dir=tmp_path / "d")
    es = db2.load_epochs("p300")
    assert len(es) == 40 and sorted(set(es.labels)) == ["nontarget", "target"]
    assert (es.labels == "target").sum() == 10
    sid = db2.list_sessions("p300")[0].id
    kept = [ev.payload["value"] for ev in db2.get_events(sid) if ev.kind == "marker"]
    assert sorted(kept) == ["", "start"]  # ignored markers stay in the record as events
    # the comma form ignores too; an empty value with a real class is refused, naming the way out
    assert parse_events("101=nontarget,start=ignore,=ignore") == {"101": "nontarget", "start": "ignore",
                                                                  "": "ignore"}
    with pytest.raises(Exception, match="an empty marker can only be ignored"):
        parse_events("=target")
