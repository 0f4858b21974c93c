"""Recorder + virtual amplifier over real LSL streams on this machine."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

from eegloop.lsl import configure_lsl

configure_lsl("machine")

import pylsl  # noqa: E402

from eegloop.database import Database  # noqa: E402
from eegloop.errors import StreamError  # noqa: E402
from eegloop.protocol import protocol_from_dict  # noqa: E402
from eegloop.recorder.recorder import Recorder  # noqa: E402
from eegloop.recorder.simulator import VirtualAmplifier, channel_labels  # noqa: E402


def make_protocol(channels=16, sfreq=500.0, **sim):
    tag = uuid.uuid4().hex[:8]
    return protocol_from_dict({
        "stimuli": {"folder": "x", "classes": {"a": "A", "b": "B"}},
        "paradigm": {"block_s": 1, "image_s": 0.5, "images_per_class": 2, "runs": 2},
        "amplifier": {"stream_name": f"eeg-{tag}", "marker_stream_name": f"mk-{tag}", "channels": channels,
                      "sfreq": sfreq, "simulate": {"onset_channel": True, "seed": 3, **sim}},
        "epochs": {"tmin": 0.0, "tmax": 0.5, "margin_s": 0.1},
    })


def marker_outlet(proto):
    info = pylsl.StreamInfo(proto.amplifier.marker_stream_name, "Markers", 1, 0, pylsl.cf_string,
                            proto.amplifier.marker_stream_name)
    return pylsl.StreamOutlet(info)


def push(out, **m):
    out.push_sample([json.dumps(m)])


# the virtual amplifier marks an onset in its STIM channel when its marker inlet hands it over: on a loaded machine
# that came 75 samples after the samples of that instant had left (fresh-clone CI, 2026-12-03): run alone
@pytest.mark.realtime
def test_epochs_land_in_database_aligned(tmp_path):
    import mne

    proto = make_protocol()
    db = Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", proto)
    mout = marker_outlet(proto)
    sim = VirtualAmplifier(proto.amplifier).start()
    rec = Recorder(proto, db=db, session_id=sid, raw_dir=tmp_path / "raw").connect()
    assert rec.eeg_names == channel_labels(16)  # labels travel in the stream's XML description
    rec.start()
    assert sim.markers_connected.wait(10)
    rec.begin_run(1)
    time.sleep(0.3)
    labels, trial = [], 0
    for block in (1, 2):
        push(mout, event="block_start", run=1, block=block)
        for k in range(4):
            trial += 1
            labels.append("ab"[(k + block) % 2])
            push(mout, event="stim_on", run=1, block=block, trial=trial, **{"class": labels[-1]})
            time.sleep(0.15)
        push(mout, event="block_end", run=1, block=block)
    time.sleep(0.1)
    rec.end_run()
    stats = rec.stop()
    sim.stop()

    assert stats.lost_samples == 0 and stats.samples_received == stats.samples_expected > 0
    assert stats.epochs == 8
    # the simulator marks each onset in its STIM channel: the recorder's epochs are aligned to it
    assert len(stats.alignment_errors) == 8 and max(abs(e) for e in stats.alignment_errors) <= 1
    epochs = db.get_epochs(sid)
    assert [e.label for e in epochs] == labels
    assert [e.trial for e in epochs] == list(range(1, 9))
    assert all(e.data.shape == (16, 350) and e.tmin == pytest.approx(-0.1) for e in epochs)
    assert all(e.event_id is not None for e in epochs)
    blocks = db.get_blocks(sid)
    assert [(b.index, b.classes, b.status) for b in blocks] == [(1, ["a", "b"], "done"), (2, ["a", "b"], "done")]
    stim_events = db.get_events(sid, "stim_on")
    assert [ev.trial for ev in stim_events] == list(range(1, 9))
    run = db.get_runs(sid)[0]
    assert run.lost_samples == 0 and run.samples_received > 0 and run.raw_path.startswith("raw/")

    # the raw file is MNE-readable and its stimulus markers sit on the STIM pulses
    raw = mne.io.read_raw_brainvision(db.abspath(run.raw_path), preload=True, verbose=False)
    assert raw.ch_names[:16] == channel_labels(16) and raw.ch_names[16] == "STIM"
    stim = raw.get_data(picks=["STIM"])[0]
    pulses = np.flatnonzero(stim > 0.5)
    onsets = [int(round(a["onset"] * raw.info["sfreq"])) for a in raw.annotations
              if a["description"].startswith("Stimulus/stim_on")]
    assert len(onsets) == 8
    assert all(np.min(np.abs(pulses - o)) <= 1 for o in onsets)


def test_missing_stream_is_one_clear_error():
    proto = make_protocol()
    with pytest.raises(StreamError, match=r"no EEG stream with name 'eeg-.*' found .*eegloop simulate"):
        Recorder(proto).connect(timeout=1.0)


def test_channel_and_rate_mismatch_refused():
    proto = make_protocol(channels=16)
    with VirtualAmplifier(proto.amplifier, listen_markers=False):
        bad = proto.replace(amplifier=proto.amplifier.__class__(
            **{**proto.to_dict()["amplifier"], "channels": 32, "simulate": proto.amplifier.simulate}))
        with pytest.raises(StreamError, match="has 16 EEG channels, the protocol expects 32 \\(amplifier.channels\\)"):
            Recorder(bad).connect(markers=False, timeout=2)
        bad = proto.replace(amplifier=proto.amplifier.__class__(
            **{**proto.to_dict()["amplifier"], "sfreq": 1000.0, "simulate": proto.amplifier.simulate}))
        with pytest.raises(StreamError, match="runs at 500 Hz, the protocol expects 1000 Hz"):
            Recorder(bad).connect(markers=False, timeout=2)


def test_simulated_amplifier_latency_delays_the_samples():
    """amplifier.simulate.latency_ms holds samples back like a real amplifier's hardware and driver: the newest
    sample an inlet has is about that old (set per protocol, so a lab can rehearse its own amplifier's delay)."""
    def newest_sample_age(latency_ms):
        proto = make_protocol(channels=4, latency_ms=latency_ms)
        assert proto.amplifier.simulate.latency_ms == latency_ms
        with VirtualAmplifier(proto.amplifier, listen_markers=False) as sim:
            inlet = pylsl.StreamInlet(pylsl.resolve_byprop("source_id", sim.source_id, timeout=5)[0])
            inlet.open_stream(timeout=5)
            ages, t_end = [], time.monotonic() + 1.5
            while time.monotonic() < t_end:
                _, ts = inlet.pull_chunk(timeout=0.2)
                if ts:
                    ages.append(pylsl.local_clock() - (ts[-1] + inlet.time_correction()))
            inlet.close_stream()
        return float(np.median(ages[len(ages) // 3:]))  # after the start-up

    slow, fast = newest_sample_age(150.0), newest_sample_age(5.0)
    assert 0.12 < slow < 0.4 and fast < 0.08 and slow - fast > 0.1, (slow, fast)


def test_stall_detected_within_a_second():
    proto = make_protocol(channels=4)
    sim = VirtualAmplifier(proto.amplifier, listen_markers=False).start()
    rec = Recorder(proto).connect(markers=False).start()
    time.sleep(0.5)
    sim.stop()
    t_stop = time.monotonic()
    while not rec.stats.stalls and time.monotonic() - t_stop < 3:
        time.sleep(0.05)
    detected_after = time.monotonic() - t_stop
    rec.stop()
    assert rec.stats.stalls, "stall not detected"
    assert detected_after < 1.0 + 0.3  # stall threshold 1 s, plus the simulator's output latency


def test_simulator_is_deterministic():
    proto = make_protocol(channels=8)
    a, b = VirtualAmplifier(proto.amplifier), VirtualAmplifier(proto.amplifier)
    assert np.array_equal(a._make_block(300), b._make_block(300))
    other = VirtualAmplifier(proto.amplifier.__class__(**{**proto.to_dict()["amplifier"],
                                                         "simulate": proto.amplifier.simulate.__class__(seed=4)}))
    assert not np.array_equal(a._make_block(300), other._make_block(300))


def test_simulator_background_has_line_noise_and_alpha():
    proto = make_protocol(channels=8, sfreq=500.0)
    x = VirtualAmplifier(proto.amplifier)._make_block(5000)
    f = np.fft.rfftfreq(5000, 1 / 500)
    p = (np.abs(np.fft.rfft(x - x.mean(1, keepdims=True), axis=1)) ** 2).mean(0)
    near = lambda hz: p[np.argmin(np.abs(f - hz))]  # noqa: E731
    assert near(50) > 20 * np.median(p[(f > 40) & (f < 60)])
    assert near(10) > 5 * np.median(p[(f > 12) & (f < 20)])
    low, high = p[(f > 2) & (f < 5)].mean(), p[(f > 100) & (f < 200)].mean()
    assert low > 10 * high  # 1/f-like


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from eegloop.lsl import configure_lsl
    configure_lsl("machine")
    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.recorder import Recorder
    from eegloop.recorder.simulator import VirtualAmplifier
    proto = protocol_from_dict({"stimuli": {"folder": "x"}, "amplifier": {"stream_name": sys.argv[2],
        "channels": 8, "sfreq": 500, "simulate": {}}})
    VirtualAmplifier(proto.amplifier, listen_markers=False).start()
    rec = Recorder(proto, raw_dir=sys.argv[1]).connect(markers=False).start()
    rec.begin_run(1)
    print("recording", flush=True)
    time.sleep(60)
""")


def test_killed_process_leaves_readable_raw(tmp_path):
    import mne

    name = f"kill-{uuid.uuid4().hex[:6]}"
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), name], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "recording"
    time.sleep(3.0)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    raw = mne.io.read_raw_brainvision(tmp_path / "run-01_eeg.vhdr", preload=True, verbose=False)
    # flushed at least every second: at most ~1 s (plus output latency) missing
    assert raw.n_times / 500 > 3.0 - 1.3
    assert np.isfinite(raw.get_data()).all()


def _lsl_env(ports: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LSLAPICFG", "EEGLOOP_LSL_PORTS", "EEGLOOP_LSL_SCOPE")}
    if ports is not None:
        env["EEGLOOP_LSL_PORTS"] = ports
    return env


_FIND = textwrap.dedent("""
    import sys
    from eegloop.errors import StreamError
    from eegloop.lsl import resolve_stream
    try:
        resolve_stream(sys.argv[1], "EEG", 3.0, "EEG stream", "")
        print("found")
    except StreamError:
        print("not found")
""")


@pytest.mark.slow
def test_an_lsl_port_block_of_its_own_is_a_separate_network(tmp_path):
    """EEGLOOP_LSL_PORTS gives a rig (or a test worker) liblsl ports of its own: its streams are found by
    processes with the same block and by nobody else; a bad value is one line, exit 2."""
    name = f"own-{uuid.uuid4().hex[:8]}"
    sim = subprocess.Popen([sys.executable, "-m", "eegloop", "simulate", "--name", name, "--channels", "4",
                            "--duration", "30", "--data", str(tmp_path / "d")], env=_lsl_env("23000"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def find(ports):
            return subprocess.run([sys.executable, "-c", _FIND, name], env=_lsl_env(ports), capture_output=True,
                                  text=True, timeout=60).stdout.strip()

        deadline = time.monotonic() + 30
        while find("23000") != "found":  # the simulator's start (imports, the outlet)
            assert sim.poll() is None and time.monotonic() < deadline, sim.stderr.read() if sim.poll() else ""
        assert find("23500") == "not found"  # another block
        assert find(None) == "not found"  # liblsl's defaults
    finally:
        sim.kill()
        sim.wait()
    bad = subprocess.run([sys.executable, "-m", "eegloop", "simulate", "--name", name, "--duration", "1",
                          "--data", str(tmp_path / "d2")], env=_lsl_env("80"), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert bad.stderr.startswith("eegloop: error: EEGLOOP_LSL_PORTS: must be a port"), bad.stderr
    assert not (tmp_path / "d2").exists()
