"""`eegloop evaluate` on Dask (issue 27): a real LocalCluster with two worker processes on 127.0.0.1, and a running
scheduler given by `--cluster`, give every number of the serial table; bad `--cluster` values are one line, exit 2,
with the database and the disk unchanged. Only 127.0.0.1 is used."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from eegloop.paradigm.schedule import make_schedule
from eegloop.protocol import protocol_from_dict
from eegloop.recorder.simulator import simulate_epochs
from eegloop.stimuli import SYNTH_CLASSES, load_stimuli

ARGS = ["evaluate", "--subjects", "A,B", "--methods", "lda_windowed,riemann", "--folds", "2", "--permutations", "2",
        "--json"]


def _protocol(folder, seed):
    return protocol_from_dict({
        "stimuli": {"folder": str(folder), "synthesize": True, "synth_size_px": 32,
                    "classes": dict(list(SYNTH_CLASSES.items())[:2])},
        "paradigm": {"block_s": 5, "image_s": 0.5, "pause_s": 1, "images_per_class": 40, "runs": 2,
                     "order": "interleaved"},
        "amplifier": {"channels": 6, "sfreq": 250, "simulate": {"snr": 0.5, "seed": seed}},
        "teacher": {"enabled": False}, "feedback": {"cue_share": 0}})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two small simulated subjects (80 epochs, 6 channels, 2 classes) in a real SQLite database."""
    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    root = tmp_path_factory.mktemp("dask-eval")
    db = Database(None, data_dir=root)
    for code, seed in (("A", 1), ("B", 2)):
        p = _protocol(root / "stim", seed)
        es = simulate_epochs(p, make_schedule(p, load_stimuli(p)))
        import_epochset(db, code, p, es, source="simulated")
    # closed here: a pooled connection left to the garbage collector checkpoints the WAL whenever it is collected,
    # inside whichever test then checks that the disk did not change (seen once under xdist)
    db.close()
    return root


@pytest.fixture(scope="module")
def scheduler():
    """One Dask LocalCluster (two worker processes, 127.0.0.1 only, no dashboard) for the module: its address."""
    from distributed import LocalCluster

    from eegloop.cluster import _start_method
    from eegloop.decoder.tasks import preload_for

    with _dask_method(_start_method(preload_for(["lda_windowed", "riemann"]))):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    yield cluster.scheduler_address
    cluster.close()


def _dask_method(method):
    import dask

    return dask.config.set({"distributed.worker.multiprocessing-method": method})


def _evaluate(data, capsys, *extra):
    from eegloop.cli import main

    rc = main([*ARGS, *extra, "--data", str(data)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    reports = {s: json.loads(sorted((data / "reports").glob(f"evaluation-{s}-*.json"))[-1].read_text())
               for s in ("A", "B")}
    for r in reports.values():  # the seconds spent differ run to run; every score must not
        r.pop("seconds")
    return json.loads(out.strip().splitlines()[-1]), reports


@pytest.fixture(scope="module")
def serial(data):
    """The serial run's across-subjects table and each subject's report (every fold's scores, the nulls)."""
    capsys = _Capture()
    with capsys:
        return _evaluate(data, capsys, "--workers", "0")


class _Capture:
    """capsys for a module-scoped fixture: stdout and stderr of main() captured by redirection."""

    def __enter__(self):
        import contextlib
        import io

        self._out, self._err = io.StringIO(), io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self._out))
        self._stack.enter_context(contextlib.redirect_stderr(self._err))
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def readouterr(self):
        return self._out.getvalue(), self._err.getvalue()


def test_the_serial_table_is_a_real_one(serial):
    table, reports = serial
    assert table["subjects"] == ["A", "B"] and set(table["methods"]) == {"lda_windowed", "riemann"}
    for r in reports.values():
        assert r["n_folds"] == 2 and r["permutations"] == 2 and set(r["pvalues"]) == {"lda_windowed", "riemann"}
        assert r["summary"]["riemann"]["auc"] > 0.7  # the simulated class signal is found


def test_a_scheduler_given_by_cluster_gives_every_number_of_the_serial_run(data, capsys, serial, scheduler):
    table, reports = _evaluate(data, capsys, "--cluster", scheduler)
    assert table == serial[0]
    assert reports == serial[1]  # every fold's scores, the confusion matrices, the label-shuffled nulls


def test_a_local_cluster_of_two_workers_gives_every_number_of_the_serial_run(data, capsys, serial):
    table, reports = _evaluate(data, capsys, "--workers", "2")
    assert table == serial[0] and reports == serial[1]


def test_results_come_back_in_task_order_whatever_order_the_workers_finish(scheduler):
    from eegloop.cluster import open_executor

    done = []
    with open_executor(scheduler) as ex:
        assert ex.slots == 2 and "2 workers" in ex.describe()
        shared = ex.share(np.arange(5.0))
        out = ex.map(_slow_square, [(i, shared) for i in range(4)], lambda i, _r: done.append(i))
    assert out == [0.0, 1.0 + 10, 4.0 + 20, 9.0 + 30]  # gathered in call order
    assert sorted(done) == [0, 1, 2, 3]


def _slow_square(i, arr):
    import time

    time.sleep(0.2 * (3 - i))  # the last call finishes first
    return float(arr[i] ** 2 + 10 * i)


@pytest.mark.parametrize("bad, says", [
    ("10.0.0.5:8786", "tcp://HOST:PORT"),
    ("tcp://10.0.0.5", "tcp://HOST:PORT"),
    ("tcp://10.0.0.5:0", "port must be 1-65535"),
    ("tcp://10.0.0.5:99999", "port must be 1-65535"),
    ("http://10.0.0.5:8786", "tcp://HOST:PORT"),
    ("tcp://bad host:8786", "tcp://HOST:PORT"),
])
def test_a_bad_cluster_address_is_one_line_before_any_work(data, capsys, bad, says):
    from eegloop.cli import main

    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    rc = main([*ARGS, "--cluster", bad, "--data", str(data)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("eegloop: error: --cluster: ") and says in err
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == before


def test_a_scheduler_nobody_answers_at_is_one_line_after_the_timeout(data):
    import socket

    from eegloop.cluster import open_executor
    from eegloop.errors import EegloopError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EegloopError, match=rf"--cluster: no Dask scheduler answered at tcp://127.0.0.1:{port} "
                                           r"within 1 s"):
        open_executor(f"tcp://127.0.0.1:{port}", timeout=1)


def test_the_command_line_refusal_is_one_line_and_exit_2(data):
    r = subprocess.run([sys.executable, "-m", "eegloop", *ARGS, "--cluster", "tcp://x:8786", "--workers", "2",
                        "--data", str(data)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["eegloop: error: --workers: not allowed with argument --cluster"]


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """Three consenting subjects of the simulated population (their own mixing, latencies and noise), LDA their
    default: what --loso and --calibration-curve score."""
    from dataclasses import replace

    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    root = tmp_path_factory.mktemp("dask-group")
    db = Database(None, data_dir=root)
    for k, code in enumerate("ABC"):
        p = _protocol(root / "stim", 5)
        p = replace(p, amplifier=replace(p.amplifier, simulate=replace(p.amplifier.simulate, subject=k + 1)),
                    decoder=replace(p.decoder, model="lda_windowed"))
        import_epochset(db, code, p, simulate_epochs(p, make_schedule(p, load_stimuli(p))), source="simulated")
        db.set_subject_consent(code, True)
    db.close()
    return root


def _last_json(root, capsys, *args):
    from eegloop.cli import main

    rc = main([*args, "--json", "--data", str(root)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_leave_one_subject_out_and_the_calibration_curve_on_a_scheduler_give_the_serial_numbers(trio, capsys,
                                                                                                scheduler):
    """Each held-out subject's group model (and each point of a curve) is one Dask task: the same numbers as one
    after another in this process."""
    loso = ["evaluate", "--loso", "--subjects", "A,B,C", "--permutations", "20"]
    serial = _last_json(trio, capsys, *loso)
    assert [r["subject"] for r in serial["subjects"]] == ["A", "B", "C"]
    assert [r["trained_on"] for r in serial["subjects"]] == [["B", "C"], ["A", "C"], ["A", "B"]]
    assert _last_json(trio, capsys, *loso, "--cluster", scheduler) == serial
    curve = ["evaluate", "--calibration-curve", "--subject", "C", "--permutations", "2"]
    one = _last_json(trio, capsys, *curve)
    assert len(one["curve"]) >= 2 and one["curve"][0]["minutes"] == 0
    assert _last_json(trio, capsys, *curve, "--cluster", scheduler) == one


def test_a_small_evaluation_stays_in_this_process_with_the_numbers_of_a_serial_run(data, caplog, monkeypatch):
    """Where the default would open a LocalCluster (auto's nested selection), one fit is run here first and timed:
    a few seconds of fitting in all (a visit's report on a short recording) stay in this process rather than wait
    for workers to start and import, and give every number of the serial run (``workers=0``)."""
    import logging

    from eegloop.database import Database
    from eegloop.decoder import evaluate, load_training_epochs

    monkeypatch.setenv("EEGLOOP_JOBS", "2")  # two cores' worth, as a 2-core lab machine has (conftest gives 1)
    db = Database(None, data_dir=data)
    te = load_training_epochs(db, "A")
    es, proto = te.es, te.protocol
    proto = protocol_from_dict({**proto.to_dict(), "decoder": {"candidates": ["lda_windowed", "riemann"]}})
    with caplog.at_level(logging.INFO, logger="eegloop"):
        auto = evaluate(es, proto, methods=["auto"], n_folds=2)
    assert any("run here (a LocalCluster would take longer to start" in r.getMessage() for r in caplog.records)
    assert not any("LocalCluster with" in r.getMessage() for r in caplog.records)
    serial = evaluate(es, proto, methods=["auto"], n_folds=2, workers=0)
    assert auto.selected == serial.selected and len(auto.selected) == 2
    assert auto.to_json()["methods"] == serial.to_json()["methods"]
