"""BIDS export, read back with MNE-BIDS and compared with the database."""
from __future__ import annotations

import csv

import numpy as np


def test_export_bids_reads_back_like_the_database(tmp_path, display, short_protocol):
    import mne
    from mne_bids import BIDSPath, read_raw_bids

    from eegloop.bids import export_bids
    from eegloop.cli import main
    from eegloop.database import Database
    from eegloop.session import record_session

    proto = short_protocol(paradigm={"block_s": 1.0, "images_per_class": 10})
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    rec = record_session(proto, "S07", db, simulate=True, progress=None)
    out = tmp_path / "bids"
    res = export_bids(db, "S07", out)
    runs = db.get_runs(rec.session_id)
    assert len(res.runs) == len(runs) >= 2 and not res.skipped
    stim = db.get_events(rec.session_id, "stim_on")
    assert res.n_events == len(stim)
    task = "".join(ch for ch in proto.name if ch.isalnum())
    for run in runs:
        bp = BIDSPath(subject="S07", session=f"{rec.session_id:04d}", task=task, run=run.index, datatype="eeg",
                      root=out)
        raw = read_raw_bids(bp, verbose="error")
        mine = mne.io.read_raw_brainvision(db.abspath(run.raw_path), verbose="error")
        assert raw.ch_names == mine.ch_names and raw.info["sfreq"] == mine.info["sfreq"]
        assert np.allclose(raw.get_data(), mine.get_data())  # the same samples, in volts
        shown = [e.payload for e in stim if e.payload.get("run") == run.index]
        assert sorted(raw.annotations.description) == sorted(p["class"] for p in shown)
        with open(bp.copy().update(suffix="events", extension=".tsv").fpath, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert [r["trial_type"] for r in rows] == [p["class"] for p in sorted(shown, key=lambda p: p["trial"])]
        assert [r["stim_file"] for r in rows] == [f"{p['class']}/{p['image']}"
                                                  for p in sorted(shown, key=lambda p: p["trial"])]
        # the sample column points at each marker's sample in the raw file
        onsets = {round(o, 3) for o in mine.annotations.onset}
        assert all(round(int(r["sample"]) / raw.info["sfreq"], 3) in onsets for r in rows)
    assert (out / "participants.tsv").read_text().count("sub-S07") == 1
    assert (out / "dataset_description.json").is_file()
    # the command line: bad subject is one line and exit 2
    rc = main(["export", "bids", "--subject", "nobody", "--out", str(tmp_path / "b2"),
               "--db", f"sqlite:///{tmp_path / 'e.db'}"])
    assert rc == 2
    # an --out that cannot hold a dataset: one line, exit 2, before any work
    (tmp_path / "afile").write_text("")
    rc = main(["export", "bids", "--subject", "S07", "--out", str(tmp_path / "afile" / "x"),
               "--db", f"sqlite:///{tmp_path / 'e.db'}", "--data", str(tmp_path)])
    assert rc == 2
