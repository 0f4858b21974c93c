"""BIDS export of imported sessions, from their source files (issue 25), read back with MNE-BIDS."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "recorder"))
from xdfkit import write_xdf  # noqa: E402

from eegloop.protocol import protocol_from_dict  # noqa: E402


def _protocol(channels, sfreq):
    return protocol_from_dict({"stimuli": {"folder": "x", "classes": {"house": "house", "face": "face"}},
                               "paradigm": {"block_s": 20, "image_s": 1.0, "pause_s": 0, "images_per_class": 20,
                                            "runs": 2},
                               "amplifier": {"channels": channels, "sfreq": sfreq},
                               "epochs": {"tmin": -0.1, "tmax": 0.5, "margin_s": 0.2}})


def _csv(path, seed):
    sf, n = 256.0, 256 * 30
    rng = np.random.default_rng(seed)
    t = 1000 + np.arange(n) / sf
    x = rng.standard_normal((5, n)) * 10
    mk = np.zeros(n)
    at = np.arange(256, n - 512, 256)
    mk[at] = np.tile([1, 2], len(at))[:len(at)]
    with open(path, "w") as fh:
        fh.write("timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0\n")
        np.savetxt(fh, np.column_stack([t, x.T, mk]), delimiter=",", fmt="%.6f")
    return x


def test_imported_sessions_export_from_their_source_files(tmp_path):
    from mne_bids import BIDSPath, read_raw_bids

    from eegloop.bids import export_bids
    from eegloop.database import Database
    from eegloop.recorder.importers import import_recordings, parse_events

    db = Database(None, data_dir=tmp_path / "data")
    # a Muse CSV with an auxiliary column typed misc, two files (two runs)
    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    xs = [_csv(f, k) for k, f in enumerate(files)]
    sid = import_recordings(db, "lab1", _protocol(4, 256), files, "csv", parse_events("1=house,2=face"),
                            channel_types={"Right AUX": "misc"})
    # a LabRecorder file: electrodes in volts, an EOG, a photodiode
    sf = 250.0
    rng = np.random.default_rng(5)
    xx = rng.standard_normal((4, int(sf * 30))).astype(np.float32) * 1e-5
    marks = [(200.0 + t, "1" if k % 2 else "2") for k, t in enumerate(np.arange(1, 28, 0.7))]
    xdf = write_xdf(tmp_path / "lab.xdf", xx, sf, 200.0, marks, ["C3", "C4", "VEOG", "Diode"],
                    ["V", "V", "V", "V"], ["EEG", "EEG", "EOG", "misc"])
    sid2 = import_recordings(db, "lab1", _protocol(2, 250), [xdf], "xdf", parse_events("1=house,2=face"))

    out = tmp_path / "bids"
    res = export_bids(db, "lab1", out)
    assert not res.skipped and [(s, r) for s, r, *_ in res.runs] == [(sid, 1), (sid, 2), (sid2, 1)]
    for (s, run_index, task, n_events, _f), x in zip(res.runs, xs + [None]):
        bp = BIDSPath(subject="lab1", session=f"{s:04d}", task=task, run=run_index, datatype="eeg", root=out)
        raw = read_raw_bids(bp, verbose="error")
        run = next(r for r in db.get_runs(s) if r.index == run_index)
        shown = sorted((e.payload for e in db.get_events(s, "stim_on") if e.payload.get("run") == run_index),
                       key=lambda p: p["trial"])
        assert n_events == len(shown) > 10
        with open(bp.copy().update(suffix="events", extension=".tsv").fpath, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert [r["trial_type"] for r in rows] == [p["class"] for p in shown]
        if x is not None:  # the CSV: µV in the file, volts in BIDS, the aux column typed misc
            assert raw.ch_names == ["TP9", "AF7", "AF8", "TP10", "Right AUX"]
            assert raw.get_channel_types() == ["eeg"] * 4 + ["misc"]
            np.testing.assert_allclose(raw.get_data()[:4], x[:4] * 1e-6, rtol=1e-5, atol=1e-11)
            # each event on the sample of its marker in the source file
            marked = np.arange(256, x.shape[1] - 512, 256)  # the rows _csv put a marker on
            assert [int(r["sample"]) for r in rows] == marked.tolist()
        else:
            assert raw.get_channel_types() == ["eeg", "eeg", "eog", "misc"]
            np.testing.assert_allclose(raw.get_data()[:3], xx[:3], rtol=1e-5, atol=1e-12)
        assert run.info["source"].endswith((".csv", ".xdf"))

    # the official validator on the export of imported recordings: no errors (issue 29), warnings README lists
    _validate(out)

    # a source file changed since: that session is skipped and named, the others exported
    files[1].write_text(files[1].read_text() + "\n")
    res = export_bids(db, "lab1", tmp_path / "bids2")
    assert [s for s, _ in res.skipped] == [sid] and "changed since it was imported" in res.skipped[0][1]
    assert [s for s, *_ in res.runs] == [sid2]


def _validate(out: Path) -> None:
    import json
    import subprocess

    from test_bids import REPO, _validator

    p = subprocess.run([*_validator(), str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert p.stdout.strip(), p.stderr[-2000:]
    issues = json.loads(p.stdout)["issues"]
    assert [(i["key"], i.get("reason")) for i in issues["errors"]] == []
    section = (REPO / "README.md").read_text(encoding="utf-8").split("<!-- bids-validator-warnings -->")[1]
    unlisted = [i["key"] for i in issues["warnings"] if f"`{i['key']}`" not in section]
    assert not unlisted, f"bids-validator warns {unlisted}: list them in README (bids-validator-warnings)"
