"""One process per role: each of a visit's processes is killed (or stopped) mid-visit, for real.

The visit runs as the CLI runs it (``eegloop record|session --simulate`` in a subprocess); the test finds the role's
process by its name (``eegloop/present``, ``eegloop/acquire``, ``eegloop/worker``, ``eegloop/amp``), hurts it, and
checks: one line and exit 2, the session and run marked ``failed`` within a second, the invariants of every fault
(tests/faults/faultkit.py), no process left running, and ``--resume`` completing the visit.
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import psutil
import pytest

from eegloop.database import Database
from eegloop.errors import EegloopError

from faultkit import accounting, child_env, eegloop_cmd, raw_files_readable

pytestmark = pytest.mark.realtime  # "within a second": run alone, after the others (README's test command)


def _db(tmp_path):
    return Database(f"sqlite:///{tmp_path / 'e.db'}", data_dir=tmp_path)


class Visit:
    """``eegloop <command>`` in a subprocess, its output collected as it comes."""

    def __init__(self, tmp_path, proto, command: str = "record", *extra: str):
        path = tmp_path / "p.yaml"
        path.write_text(proto.to_yaml())
        self.args = ["--protocol", str(path), "--subject", "S1", "--simulate", "--db",
                     f"sqlite:///{tmp_path / 'e.db'}", "--data", str(tmp_path), "--no-console"]
        self.command = command
        self.p = subprocess.Popen(eegloop_cmd(command, *self.args, *extra), env=child_env(), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list = []
        self.err: list = []
        for stream, sink in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: [k.append(ln) for ln in s], daemon=True).start()

    def children(self) -> dict:
        """The visit's processes by name (eegloop/present, ...)."""
        try:
            kids = psutil.Process(self.p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return {}
        out = {}
        for k in kids:
            try:
                out[k.name()] = k
            except psutil.NoSuchProcess:
                pass
        return out

    def wait_until(self, what, timeout: float = 90.0):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            got = what()
            if got:
                return got
            if self.p.poll() is not None:
                pytest.fail(f"the visit ended early: {''.join(self.err)[-2000:]}")
            time.sleep(0.02)
        pytest.fail(f"timed out waiting; output: {''.join(self.out)[-2000:]}")

    def finish(self, timeout: float = 90.0) -> int:
        rc = self.p.wait(timeout)
        time.sleep(0.2)  # the reader threads drain the pipes
        return rc


def _stored_block(db, index: int) -> bool:
    try:
        return any(b.index == index for b in db.get_blocks(1))
    except EegloopError:
        return False


def _status(db) -> str:
    try:
        return db.get_session(1).status
    except EegloopError:
        return ""


def _none_left(procs: list, timeout: float = 5.0) -> None:
    """Every process of the visit has ended (none orphaned)."""
    gone, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, [p.name() for p in alive]


def _kill_mid_block(tmp_path, fault_protocol, role: str):
    """Record, kill ``role`` in block 2, check what the fault must leave; returns (db, visit, seconds to failed)."""
    proto = fault_protocol()
    db = _db(tmp_path)
    v = Visit(tmp_path, proto)
    v.wait_until(lambda: _stored_block(db, 1))
    kids = v.wait_until(lambda: (k := v.children()) and all(n in k for n in (
        "eegloop/present", "eegloop/acquire", "eegloop/amp")) and k)
    time.sleep(0.3)  # inside block 2
    kids[role].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    v.wait_until(lambda: _status(db) == "failed", timeout=10)
    seconds = time.monotonic() - t_kill
    assert v.finish() == 2, "".join(v.err)[-2000:]
    lines = [ln for ln in v.err if ln.startswith("eegloop")]
    assert len(lines) == 1 and lines[0].startswith("eegloop: error: session 1:"), v.err
    assert "completed blocks are stored" in lines[0] and "Traceback" not in "".join(v.err)
    _none_left(list(kids.values()))
    info = db.get_session(1)
    assert info.status == "failed" and info.info["failure"]
    assert [r.status for r in db.get_runs(1)] == ["failed"]
    return db, v, seconds, lines[0]


def _resume_completes(tmp_path, fault_protocol, db, command: str = "record") -> None:
    r = subprocess.run(eegloop_cmd(command, "--resume", *_args(tmp_path)), env=child_env(), capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert accounting(db, 1) == {1: "done", 2: "done", 3: "done"}
    assert raw_files_readable(db, 1) > 0


def _args(tmp_path) -> list:
    return ["--protocol", str(tmp_path / "p.yaml"), "--subject", "S1", "--simulate", "--db",
            f"sqlite:///{tmp_path / 'e.db'}", "--data", str(tmp_path), "--no-console"]


def test_presenter_killed_mid_block(tmp_path, display, fault_protocol):
    """The presenter dies in block 2: the recording of what it showed is stored as incomplete, session failed within
    a second; --resume shows block 2 again."""
    db, v, seconds, line = _kill_mid_block(tmp_path, fault_protocol, "eegloop/present")
    assert "the presenter process was killed by signal SIGKILL" in line
    assert seconds < 1.0, seconds
    blocks = accounting(db, 1)
    assert blocks[1] == "done" and blocks[2] == "incomplete" and 3 not in blocks
    assert raw_files_readable(db, 1) > 0
    _resume_completes(tmp_path, fault_protocol, db)


def test_acquisition_killed_mid_block(tmp_path, display, fault_protocol):
    """The acquisition dies in block 2: the presenter stops at its next frame, block 1 stays stored, block 2 is lost
    whole (never half-stored), session failed within a second; --resume records blocks 2 and 3."""
    db, v, seconds, line = _kill_mid_block(tmp_path, fault_protocol, "eegloop/acquire")
    assert "the acquisition process was killed by signal SIGKILL" in line
    assert seconds < 1.0, seconds
    assert accounting(db, 1) == {1: "done"}
    assert raw_files_readable(db, 1) > 0  # flushed every second, readable after the crash
    _resume_completes(tmp_path, fault_protocol, db)


def test_amplifier_hangs_then_the_visit_stops(tmp_path, display, fault_protocol):
    """The virtual amplifier's process is stopped (SIGSTOP: alive, silent): its heartbeat stops, the visit is
    stopped with one line, no process is left behind."""
    proto = fault_protocol()
    db = _db(tmp_path)
    v = Visit(tmp_path, proto)
    v.wait_until(lambda: _stored_block(db, 1))
    kids = v.children()
    kids["eegloop/amp"].send_signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        v.wait_until(lambda: _status(db) == "failed", timeout=10)
        seconds = time.monotonic() - t_stop
        assert v.finish() == 2
    finally:
        for k in kids.values():
            try:
                k.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
    lines = [ln for ln in v.err if ln.startswith("eegloop")]
    assert len(lines) == 1 and "the amplifier process stopped responding" in lines[0], v.err
    assert seconds < 3.0, seconds  # HANG_S without a heartbeat or CPU time, then the stop
    _none_left(list(kids.values()))
    assert accounting(db, 1)[1] == "done"


def test_worker_killed_during_feedback_then_resume(tmp_path, display, fault_protocol):
    """The decode/generate worker dies during the feedback block: session failed with the reason, the trials shown
    so far stored; session --resume trains again and completes the visit."""
    proto = fault_protocol(paradigm={"runs": 1}, training={"max_epochs": 3, "n_folds": 2},
                           decoder={"model": "lda_windowed"},
                           feedback={"trials": 6, "mode": "stimulus", "display_s": 0.1})
    db = _db(tmp_path)
    v = Visit(tmp_path, proto, "session")
    v.wait_until(lambda: any(ln.startswith("feedback 1/") for ln in v.out), timeout=180)
    kids = v.children()
    kids["eegloop/worker"].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    v.wait_until(lambda: _status(db) == "failed", timeout=10)
    assert time.monotonic() - t_kill < 1.0
    assert v.finish() == 2, "".join(v.err)[-2000:]
    lines = [ln for ln in v.err if ln.startswith("eegloop")]
    assert len(lines) == 1 and "the worker process was killed by signal SIGKILL" in lines[0], v.err
    _none_left(list(kids.values()))
    assert 1 <= len(db.get_feedback_trials(1)) < 6
    assert accounting(db, 1)[1] == "done"
    r = subprocess.run(eegloop_cmd("session", "--resume", *_args(tmp_path)), env=child_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert db.get_session(1).status == "completed"
    assert len(db.get_feedback_trials(1)) >= 6
