"""Real PsychoPy windows (under Xvfb when headless) with real LSL marker streams."""
from __future__ import annotations

import pytest

import json
import time

import numpy as np

from eegloop.lsl import configure_lsl

configure_lsl("machine")
import pylsl  # noqa: E402

from eegloop.database import Database  # noqa: E402
from eegloop.paradigm.markers import make_marker_outlet  # noqa: E402
from eegloop.paradigm.presentation import Presenter  # noqa: E402
from eegloop.paradigm.schedule import make_schedule  # noqa: E402
from eegloop.session import record_session  # noqa: E402
from eegloop.stimuli import load_stimuli  # noqa: E402


THREE = {"stimuli": {"classes": {"circle": "red circle", "square": "blue square", "triangle": "green triangle"}},
         "paradigm": {"images_per_class": 4, "pause_s": 0.2, "screen": {"image_size_px": 160}},
         "amplifier": {"simulate": {"onset_channel": True}},
         "epochs": {"tmax": 0.2, "margin_s": 0.05}}


@pytest.mark.realtime  # its figure is the machine's load's as much as the code's: run alone
def test_markers_timing_and_pixels(tmp_path, display, short_protocol):
    proto = short_protocol(**{**THREE, "paradigm": {**THREE["paradigm"], "photodiode": True}})
    stim = load_stimuli(proto)
    sched = make_schedule(proto, stim)
    outlet = make_marker_outlet(proto.amplifier.marker_stream_name)
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", proto.amplifier.marker_stream_name, timeout=5)[0])
    inlet.open_stream(5)
    inlet.time_correction(5)
    capture = {t.trial for t in sched.trials[::5]}
    pres = Presenter(proto, outlet, capture_trials=capture).open()
    try:
        assert pres.frame_rate > 0 and pres.frames_per_image == int(round(0.1 * pres.frame_rate))
        timings = []
        for run in sched.runs:
            timings += pres.run(run).timings
    finally:
        pres.close()
    time.sleep(0.2)
    got = []
    while True:
        s, ts = inlet.pull_sample(timeout=0.5)
        if s is None:
            break
        got.append((json.loads(s[0]), ts))

    stims = [m for m, _ in got if m["event"] == "stim_on"]
    assert [(m["run"], m["block"], m["trial"], m["class"], m["image"]) for m in stims] == \
        [(t.run, t.block, t.trial, t.class_id, t.image.name) for t in sched.trials]
    assert [m["block"] for m, _ in got if m["event"] == "block_start"] == [b.block for b in sched.blocks]
    assert [m["block"] for m, _ in got if m["event"] == "block_end"] == [b.block for b in sched.blocks]
    assert [m["run"] for m, _ in got if m["event"] == "run_start"] == [1, 2]

    # every image lasts its intended number of frames (+-1) at the measured (or paced) rate
    assert len(timings) == len(sched.trials)
    for t in timings:
        assert abs(t.actual_frames - t.intended_frames) <= 1, t
        assert abs(t.duration_s - t.intended_frames / pres.frame_rate) <= 1.0 / pres.frame_rate
    # the marker received by the inlet carries its own flip's time (LSL clock): each one nearer its flip than
    # half a frame, so it belongs to that flip and no other (how close on an idle machine: bench_paradigm.py)
    marker_ts = [ts for m, ts in got if m["event"] == "stim_on"]
    flips = np.array([t.actual_onset_lsl for t in timings])
    assert np.max(np.abs(np.array(marker_ts) - flips)) < 0.5 / pres.frame_rate

    # the image on screen is the scheduled one: read back from the window buffer, compare with all images
    from PIL import Image

    by_trial = {t.trial: t for t in sched.trials}
    refs = {s.path: np.asarray(Image.open(s.path).convert("RGB").resize((64, 64)), float) for s in stim.images}
    assert pres.captured.keys() == capture
    for trial, frame in pres.captured.items():
        a = np.asarray(frame.convert("RGB"), float)
        h, w = a.shape[:2]
        crop = a[h // 2 - 80:h // 2 + 80, w // 2 - 80:w // 2 + 80]  # the 160 px image
        crop = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((64, 64)), float)
        mask = np.ones((64, 64), bool)
        mask[24:40, 24:40] = False  # the fixation cross is drawn on top
        dists = {p: np.mean((crop - r)[mask] ** 2) for p, r in refs.items()}
        best = min(dists, key=dists.get)
        assert best == by_trial[trial].image, (trial, best, by_trial[trial].image)
        # the photodiode patch is white in the bottom-left corner at onset
        assert a[h - 5, 5].mean() > 250


def test_record_with_simulator_stores_everything(tmp_path, display, short_protocol):
    proto = short_protocol(**THREE)
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    lines = []
    res = record_session(proto, "S1", db, simulate=True, progress=lines.append)
    n_trials = 3 * 4
    assert not res.aborted and res.runs_done == 2
    assert res.epochs == res.expected_epochs == n_trials
    assert res.lost_samples == 0 and res.samples_received > 0
    # each marker belongs to its own flip (well inside one frame); the sub-ms figure is bench_paradigm.py's
    assert res.marker_minus_flip_ms_max < 1000 / res.frame_rate_hz / 2
    assert len(db.get_trial_timings(res.session_id)) == n_trials
    assert db.get_session(res.session_id).status == "recorded"
    epochs = db.get_epochs(res.session_id)
    trials = {e.trial: e for e in epochs}
    events = {e.trial: e for e in db.get_events(res.session_id, "stim_on")}
    assert all(trials[k].label == events[k].class_id for k in trials)
    assert len(res.raw_files) == 2
    assert "block 2/2" in lines[-1] and "~0:00 left" in lines[-1]


def test_calibration_min_ends_the_recording_after_whole_blocks(tmp_path, display, short_protocol):
    """session.calibration_min: the recording ends once that many minutes of stimuli are in (whole blocks, in the
    design's order); the later blocks are not shown and not expected, and the session is recorded."""
    proto = short_protocol(**THREE, session={"calibration_min": 0.01})  # 0.6 s: the first block of 6 images
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    lines = []
    res = record_session(proto, "S1", db, simulate=True, progress=lines.append)
    assert not res.aborted and res.epochs == res.expected_epochs == 6
    assert [(b.index, b.status) for b in db.get_blocks(res.session_id)] == [(1, "done")]
    assert len(db.get_runs(res.session_id)) == 1
    assert {e.block for e in db.get_epochs(res.session_id)} == {1}
    assert db.get_session(res.session_id).status == "recorded"
    assert any("calibration_min 0.01 is reached after 0.0 min" in ln and "1 later block(s) are not shown" in ln
               for ln in lines), lines


def test_abort_while_paused_keeps_data(tmp_path, display, short_protocol):
    """The operator pauses (the presenter stops after the current block, showing the pause screen) and then aborts:
    the first block is kept, nothing after it was shown, the session is aborted. The controls travel as a console
    sends them (eegloop.bus.CONTROLS) to the presenter's own process."""
    from eegloop.bus import BUS, CONTROLS, Phase, Screen

    proto = short_protocol(**THREE)
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    seen = []

    def on_event(ev):
        if isinstance(ev, Phase) and ev.name == "paused":
            seen.append(("paused", ev.block))
            CONTROLS.abort()
        elif isinstance(ev, Screen):
            seen.append(("screen", ev.text))

    unsubscribe = BUS.subscribe(on_event)
    CONTROLS.request_pause()  # before the visit: the presenter pauses after its first block
    try:
        res = record_session(proto, "S2", db, simulate=True, progress=None)
    finally:
        unsubscribe()
        CONTROLS.reset()
    assert ("paused", 1) in seen and any(k == "screen" and t.startswith("Paused.") for k, t in seen)
    assert res.aborted and res.runs_done == 0
    assert db.get_session(res.session_id).status == "aborted"
    assert res.epochs == 6  # the first block (6 images) is kept
    kinds = [e.kind for e in db.get_events(res.session_id)]
    assert kinds.count("stim_on") == 6 and "block_end" in kinds
    assert [b.status for b in db.get_blocks(res.session_id)] == ["done"]
