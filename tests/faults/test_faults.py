"""One test per fault: the visit is hurt mid-block, then the database and raw files are checked.

Every test asserts the same invariants (tests/faults/conftest.py `accounting`): stored + rejected epochs =
stimuli shown in every block, no block `done` with epochs missing, no trial stored twice; and the session's
status and its raw files' readability.
"""
from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import threading
import time

import numpy as np
import pylsl
import pytest

from eegloop.database import Database
from eegloop.errors import EegloopError, StreamError
from eegloop.lsl import configure_lsl

from faultkit import accounting, child_env, eegloop_cmd, raw_files_readable

configure_lsl("machine")


def _db(tmp_path):
    return Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)


@contextlib.contextmanager
def on_shown(trial: int, action):
    """Run ``action`` once, when the presenter reports that it showed ``trial`` (its flip's event reaches this
    process over the visit's event channel within milliseconds)."""
    from eegloop.bus import BUS
    from eegloop.roles.messages import TrialShown

    done = []

    def hook(ev):
        if isinstance(ev, TrialShown) and ev.trial == trial and not done:
            done.append(ev)
            action()

    unsubscribe = BUS.subscribe(hook)
    try:
        yield done
    finally:
        unsubscribe()


@pytest.mark.realtime  # its figure is the machine's load's as much as the code's: run alone
def test_stream_stops_mid_block(tmp_path, display, fault_protocol):
    """The amplifier stops in block 2: the visit stops, blocks before it stay stored, status failed."""
    from eegloop.recorder.simulator import VirtualAmplifier
    from eegloop.lsl import lsl_ports_taken
    from eegloop.rig import Rig
    from eegloop.session import RecordingError, record_session

    proto = fault_protocol(amplifier={"simulate": None, "stall_timeout_s": 0.5})
    db = _db(tmp_path)
    ports_before = lsl_ports_taken(this_process=True)  # other LSL programs on the machine do not count
    sim = VirtualAmplifier(proto.amplifier, _sim_cfg()).start()
    stopped = {}

    def pull_the_plug():
        stopped["t"] = time.monotonic()
        threading.Thread(target=sim.stop).start()
    try:
        with on_shown(16, pull_the_plug), pytest.raises(
                RecordingError, match=r"EEG stream .* lost: no samples for .*completed blocks are stored"):
            record_session(proto, "S1", db, progress=None)
        elapsed = time.monotonic() - stopped["t"]  # stall timeout + neutral message (2 s) + clean-up
    finally:
        sim.stop()
    sid = db.list_sessions("S1")[0].id
    assert db.get_session(sid).status == "failed" and "lost" in db.get_session(sid).info["failure"]
    assert [r.status for r in db.get_runs(sid)] == ["failed"]
    blocks = accounting(db, sid)
    assert blocks[1] == "done" and blocks[2] == "incomplete" and 3 not in blocks  # stopped within block 2
    assert elapsed < 6
    assert raw_files_readable(db, sid) > 0
    # the failed visit's inlets and outlets give their LSL ports back (the machine has 32 for every outlet and
    # query): the next rig in this process starts with only its own marker outlet's
    with Rig(proto):
        assert lsl_ports_taken(this_process=True) <= ports_before + 1


def _sim_cfg():
    from eegloop.protocol import SimulateConfig

    return SimulateConfig(seed=2, snr=0.6)


@pytest.mark.slow
def test_gap_inside_an_epoch_is_rejected(tmp_path):
    """An amplifier whose timestamps jump by 9 s mid-block: epochs over the jump are rejected ('gap')."""
    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.recorder import Recorder

    tag = f"{time.monotonic_ns()}"
    proto = protocol_from_dict({"stimuli": {"folder": str(tmp_path)},
                                "amplifier": {"stream_name": f"gap-{tag}", "marker_stream_name": f"gapm-{tag}",
                                              "channels": 4, "sfreq": 250},
                                "epochs": {"tmin": 0.0, "tmax": 0.3, "margin_s": 0.1},
                                "preprocessing": {"bandpass_hz": [1, 40], "stft_window_ms": 40}})
    sf = 250
    out = pylsl.StreamOutlet(pylsl.StreamInfo(f"gap-{tag}", "EEG", 4, sf, pylsl.cf_float32, f"gap-{tag}"))
    mout = pylsl.StreamOutlet(pylsl.StreamInfo(f"gapm-{tag}", "Markers", 1, 0, pylsl.cf_string, f"gapm-{tag}"))
    db = _db(tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", proto)
    stop = threading.Event()
    state = {"offset": 0.0}

    def push():  # a real-time amplifier; its clock jumps 9 s ahead when asked
        t0, n = pylsl.local_clock(), 0
        while not stop.is_set():
            due = int((pylsl.local_clock() - t0) * sf)
            if due > n:
                x = np.random.default_rng(n).standard_normal((due - n, 4)).astype(np.float32)
                ts = t0 + state["offset"] + np.arange(n, due) / sf
                for row, t in zip(x, ts):
                    out.push_sample(row.tolist(), float(t))
                n = due
            time.sleep(0.005)
    th = threading.Thread(target=push, daemon=True)
    th.start()
    rec = Recorder(proto, db=db, session_id=sid, raw_dir=tmp_path / "raw").connect()
    rec.start()
    rec.begin_run(1)
    time.sleep(0.5)
    trial = 0
    for block in (1, 2):
        mout.push_sample([json.dumps({"event": "block_start", "run": 1, "block": block, "trials": 6})])
        for k in range(6):
            trial += 1
            mout.push_sample([json.dumps({"event": "stim_on", "run": 1, "block": block, "trial": trial,
                                          "class": "ab"[k % 2]})])
            if block == 2 and k == 2:
                time.sleep(0.1)
                state["offset"] = 9.0  # the amplifier's clock jumps inside trial 9's epoch
            time.sleep(0.25)
        mout.push_sample([json.dumps({"event": "block_end", "run": 1, "block": block})])
    time.sleep(0.8)
    rec.end_run()
    rec.stop()
    stop.set()
    th.join(2)
    blocks = accounting(db, sid)
    assert blocks == {1: "done", 2: "done"}  # every stimulus accounted for
    rejected = db.get_rejected(sid)
    assert rejected and {r.reason for r in rejected} == {"gap"} and all(r.block_index == 2 for r in rejected)
    assert 9 in {r.trial for r in rejected}
    for e in db.get_epochs(sid):  # no valid epoch spans the jump
        assert e.trial not in {r.trial for r in rejected}
    assert raw_files_readable(db, sid) > 0


@pytest.mark.slow(weight=2)
def test_escape_mid_block_then_resume(tmp_path, display, fault_protocol):
    """Escape in block 2; --resume shows block 2 again (replacing its rows) and block 3; all done."""
    from eegloop.session import record_session, resumable_session

    proto = fault_protocol()
    db = _db(tmp_path)
    from eegloop.bus import CONTROLS

    try:
        with on_shown(17, CONTROLS.abort):  # the console's abort (Escape does the same in the presenter)
            res = record_session(proto, "S1", db, simulate=True, progress=None)
    finally:
        CONTROLS.reset()
    assert res.aborted
    sid = res.session_id
    assert db.get_session(sid).status == "aborted"
    first = accounting(db, sid)
    assert first[1] == "done" and first[2] == "incomplete" and 3 not in first
    reason = [b.reason for b in db.get_blocks(sid) if b.index == 2][0]
    assert "aborted by the operator" in reason
    assert len(db.get_trial_timings(sid)) >= 12 + 4  # block 1 and what block 2 showed are timed

    sid2, done = resumable_session(db, "S1", proto)
    assert sid2 == sid and done == {1}
    res2 = record_session(proto, "S1", db, simulate=True, progress=None, session_id=sid, skip_blocks=done)
    assert not res2.aborted
    assert accounting(db, sid) == {1: "done", 2: "done", 3: "done"}
    assert db.count_epochs(sid) + sum(db.rejected_by_reason(sid).values()) == 36
    assert len(db.get_trial_timings(sid)) == 36  # the re-recorded block's timings replaced the first ones
    assert len(db.load_epochs("S1")) == db.count_epochs(sid)
    assert raw_files_readable(db, sid) > 0


def test_database_locked_while_a_block_is_stored(tmp_path, display, fault_protocol):
    """Another program holds SQLite's write lock for 3 s across a block's end: the block waits and lands."""
    from eegloop.session import record_session

    proto = fault_protocol()
    db = _db(tmp_path)
    holder = {}

    def lock():
        conn = sqlite3.connect(tmp_path / "e.db", timeout=10, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        holder["conn"] = conn
        time.sleep(3.0)
        conn.rollback()
        conn.close()
        holder["released"] = time.monotonic()

    with on_shown(10, lambda: threading.Thread(target=lock).start()):
        res = record_session(proto, "S1", db, simulate=True, progress=None)
    assert "released" in holder  # the lock was really held while block 1 ended
    sid = res.session_id
    assert accounting(db, sid) == {1: "done", 2: "done", 3: "done"}
    assert db.get_session(sid).status == "recorded"
    assert db.count_epochs(sid) + sum(db.rejected_by_reason(sid).values()) == 36
    assert raw_files_readable(db, sid) > 0


def _write_protocol(tmp_path, proto) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(proto.to_yaml())
    return str(path)


def test_disk_full_stops_the_visit(tmp_path, display, fault_protocol, fresh_postgres_db):
    """The raw file hits the file-size limit (RLIMIT_FSIZE) mid-run: one line, exit non-zero, status failed.

    The database is a PostgreSQL server (another process, not under the limit), so the raw file is what fills up.
    """
    import resource

    proto = fault_protocol(amplifier={"channels": 32, "sfreq": 1000})
    pfile = _write_protocol(tmp_path, proto)
    limit = 300_000  # 32 ch x 1 kHz x 4 B = 128 kB/s: reached in block 2

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = subprocess.run(eegloop_cmd("record", "--protocol", pfile, "--subject", "S1", "--simulate",
                                   "--db", fresh_postgres_db, "--data", str(tmp_path)),
                       preexec_fn=cap, capture_output=True, text=True, timeout=120, env=child_env())
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("eegloop")]
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("eegloop: error: session 1:") and "Traceback" not in p.stderr
    assert "File too large" in err[0]
    db = Database(fresh_postgres_db, data_dir=tmp_path)
    assert db.get_session(1).status == "failed" and "File too large" in db.get_session(1).info["failure"]
    assert [r.status for r in db.get_runs(1)] == ["failed"]
    blocks = accounting(db, 1)
    assert blocks.get(1) == "done" and list(blocks.values())[-1] == "incomplete"
    assert raw_files_readable(db, 1) > 0


@pytest.mark.slow(weight=2)
def test_sigkill_mid_block_then_resume(tmp_path, display, fault_protocol):
    """The visit's own process is killed in block 2: its children (presenter, acquisition, amplifier) die with it;
    a resume after the claim expired completes the session."""
    proto = fault_protocol()
    pfile = _write_protocol(tmp_path, proto)
    db_url = f"sqlite:///{tmp_path / 'e.db'}"
    args = ["--protocol", pfile, "--subject", "S1", "--simulate", "--db", db_url, "--data", str(tmp_path)]
    env = child_env(EEGLOOP_CLAIM_TTL_S=2)
    p = subprocess.Popen(eegloop_cmd("record", *args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    db = _db(tmp_path)
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:  # block 1 stored: block 2 is on screen
        if any(b.index == 1 for b in _blocks(db)):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    import psutil

    kids = psutil.Process(p.pid).children(recursive=True)  # presenter, acquisition, amplifier (and Xvfb)
    assert {"eegloop/present", "eegloop/acquire", "eegloop/amp"} <= {k.name() for k in kids}
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    gone, alive = psutil.wait_procs(kids, timeout=5)  # they die with their parent: no orphans
    assert not alive, [k.name() for k in alive]
    assert db.get_session(1).status == "recording"  # nobody could say otherwise
    first = accounting(db, 1)
    assert first.get(1) == "done" and 3 not in first
    # a resume right away is refused while the dead process's claim is fresh, then succeeds
    time.sleep(2.5)
    r = subprocess.run(eegloop_cmd("record", "--resume", *args), env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert accounting(db, 1) == {1: "done", 2: "done", 3: "done"}
    assert raw_files_readable(db, 1) > 0
    assert len(db.get_runs(1)[0].info["raw_parts"]) == 1  # the killed run's raw file is kept beside the new part


def _blocks(db):
    try:
        return db.get_blocks(1)
    except EegloopError:
        return []


def test_two_resumes_of_one_session(tmp_path, fault_protocol):
    """While one process holds a session, a second --resume of it gets one line and changes nothing."""
    from eegloop.cli import main

    proto = fault_protocol()
    pfile = _write_protocol(tmp_path, proto)
    db = _db(tmp_path)
    db.add_subject("S1")
    sid = db.create_session("S1", proto)
    holder = subprocess.Popen(
        [eegloop_cmd()[0], "-c", "import sys, time; from eegloop.database import Database; "
         "from eegloop.database.claim import SessionClaim; db = Database(sys.argv[1]); "
         "c = SessionClaim(db, 1).__enter__(); print('claimed', flush=True); time.sleep(30)",
         f"sqlite:///{tmp_path / 'e.db'}"], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "claimed"
        owner = _claim_owner(db, sid)
        rc = main(["record", "--resume", "--protocol", pfile, "--subject", "S1", "--simulate",
                   "--db", f"sqlite:///{tmp_path / 'e.db'}", "--data", str(tmp_path)])
        assert rc == 2
        assert db.get_session(sid).status == "created" and db.get_runs(sid) == [] and db.get_stimuli() == []
        assert _claim_owner(db, sid) == owner and str(holder.pid) in owner
        with pytest.raises(EegloopError, match=r"session 1 is being recorded by another process \(host .*, pid"):
            db.claim_session(sid)
    finally:
        holder.kill()
        holder.wait()


def _claim_owner(db, sid):
    from eegloop.database.models import SessionRow

    with db.session() as s:
        return s.get(SessionRow, sid).claim_owner


def test_two_streams_with_the_same_name(tmp_path, fault_protocol):
    """Two amplifiers named alike: refuse with one line listing both; amplifier.source_id picks one."""
    from eegloop.cli import main
    from eegloop.recorder.recorder import Recorder
    from eegloop.recorder.simulator import VirtualAmplifier

    proto = fault_protocol(amplifier={"simulate": None})
    a = VirtualAmplifier(proto.amplifier, _sim_cfg(), listen_markers=False).start()
    b = VirtualAmplifier(proto.amplifier, _sim_cfg(), listen_markers=False).start()
    try:
        with pytest.raises(StreamError) as exc:
            Recorder(proto).connect(markers=False, timeout=2)
        msg = str(exc.value)
        assert "2 EEG streams match" in msg and a.source_id in msg and b.source_id in msg and "\n" not in msg
        assert "amplifier.source_id" in msg
        import dataclasses

        pinned = proto.replace(amplifier=dataclasses.replace(proto.amplifier, source_id=b.source_id))
        rec = Recorder(pinned).connect(markers=False, timeout=2)
        assert rec.acq.source_id == b.source_id
        rec.acq.close()
        # through the CLI: one line, exit 2, and no session (nor subject) written
        pfile = _write_protocol(tmp_path, proto)
        db = _db(tmp_path)
        rc = main(["record", "--protocol", pfile, "--subject", "S1", "--db", f"sqlite:///{tmp_path / 'e.db'}",
                   "--data", str(tmp_path)])
        assert rc == 2
        assert db.list_subjects() == [] and db.get_stimuli() == []
    finally:
        a.stop()
        b.stop()


def test_record_without_amplifier_writes_nothing(tmp_path, fault_protocol, capsys):
    from eegloop.cli import main

    proto = fault_protocol(amplifier={"simulate": None, "resolve_timeout_s": 1.0})
    pfile = _write_protocol(tmp_path, proto)
    db = _db(tmp_path)
    rc = main(["record", "--protocol", pfile, "--subject", "S1", "--db", f"sqlite:///{tmp_path / 'e.db'}",
               "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("eegloop: error: no EEG stream")
    assert db.list_subjects() == [] and db.get_stimuli() == []
