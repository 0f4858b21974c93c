"""A pytest plugin for :mod:`bench_suite`: each test's wall time and the CPU it used, as JSON lines.

CPU is ``getrusage`` of the test's process (every thread) plus its children reaped during the test (the roles of a
visit, a CLI subprocess); processes that outlive the test (Xvfb, a Dask cluster of the module) are not counted.
Loaded with ``-p _suite_cpu`` and ``EEGLOOP_SUITE_CPU_DIR`` set; one file per xdist worker.
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest


def _cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    folder = os.environ.get("EEGLOOP_SUITE_CPU_DIR")
    t0, (s0, c0) = time.monotonic(), _cpu()
    yield
    if not folder:
        return
    s1, c1 = _cpu()
    row = {"test": item.nodeid, "wall_s": round(time.monotonic() - t0, 3), "self_cpu_s": round(s1 - s0, 3),
           "children_cpu_s": round(c1 - c0, 3)}
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(Path(folder) / f"{worker}.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
