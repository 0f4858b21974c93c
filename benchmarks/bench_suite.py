"""Where the test suite's time goes (issue 26 item 7): each phase of README's test command, timed, with the CPU
every test used.

    python benchmarks/bench_suite.py [--phase parallel|realtime|both] [--top 15] [--workers 2]

Runs the two phases of README's test command from this checkout's venv (``pytest -n 2 --dist worksteal -m "not
realtime"``, then ``pytest -m realtime``) with the plugin ``benchmarks/_suite_cpu.py`` loaded, and prints for each
phase: its wall time, the tests' summed wall time and CPU (a test's process and the children it reaped), the floor
that CPU sets on this machine's cores (CPU / cores: no scheduling does better), the tests that used the most CPU,
and those that hold a worker while using little of a core (wall minus CPU: sleeping, waiting on a socket). Run it
on an idle machine. Last line: JSON {"cpu", "cores", "phases": {name: {"wall_s", "tests", "passed",
"tests_wall_s", "tests_cpu_s", "cpu_floor_s"}}}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_name

REPO = Path(__file__).resolve().parents[1]
PHASES = {"parallel": ["-n", "{workers}", "--dist", "worksteal", "-m", "not realtime"],
          "realtime": ["-m", "realtime"]}


def _run(phase: str, workers: int) -> tuple[float, int, list[dict]]:
    args = [a.format(workers=workers) for a in PHASES[phase]]
    with tempfile.TemporaryDirectory(prefix="eegloop-bench-suite-") as folder:
        env = dict(os.environ, EEGLOOP_SUITE_CPU_DIR=folder,
                   PYTHONPATH=os.pathsep.join([str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")]))
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_suite_cpu",
                            *args], cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        rows = [json.loads(line) for f in sorted(Path(folder).glob("*.jsonl")) for line in f.read_text().splitlines()]
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()[-300:]
    print(f"{phase}: pytest exit {r.returncode}: {tail}")
    return wall, r.returncode, rows


def _report(phase: str, wall: float, rows: list[dict], cores: int, top: int) -> dict:
    cpu = [(x["self_cpu_s"] + x["children_cpu_s"], x) for x in rows]
    total_cpu = sum(c for c, _ in cpu)
    total_wall = sum(x["wall_s"] for x in rows)
    print(f"\n## {phase}: {len(rows)} tests, {wall:.0f} s wall; the tests' own wall {total_wall:.0f} s, CPU "
          f"{total_cpu:.0f} s (floor on {cores} cores: {total_cpu / cores:.0f} s"
          + ("; run one at a time, this phase cannot be shorter than the tests' own wall)" if phase == "realtime"
             else ")"))
    print(f"\nmost CPU (s):\n{'cpu':>7} {'wall':>7}  test")
    for c, x in sorted(cpu, key=lambda t: -t[0])[:top]:
        print(f"{c:7.1f} {x['wall_s']:7.1f}  {x['test']}")
    idle = sorted(((x["wall_s"] - c, c, x) for c, x in cpu), key=lambda t: -t[0])
    held = sum(i for i, c, x in idle if c < 0.5 * x["wall_s"])
    print(f"\nholding a worker with little CPU (wall - cpu, s; {held:.0f} s in all over the tests using under half "
          f"a core):\n{'idle':>7} {'cpu':>7}  test")
    for i, c, x in idle[:top]:
        print(f"{i:7.1f} {c:7.1f}  {x['test']}")
    return {"wall_s": round(wall, 1), "tests": len(rows), "tests_wall_s": round(total_wall, 1),
            "tests_cpu_s": round(total_cpu, 1), "cpu_floor_s": round(total_cpu / cores, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=("parallel", "realtime", "both"), default="both")
    ap.add_argument("--top", type=int, default=15, help="how many tests each list shows")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers of the parallel phase "
                    "(README's command: 2)")
    args = ap.parse_args()
    if args.top < 1 or args.workers < 1:
        ap.error("--top and --workers must be at least 1")
    cores = os.cpu_count() or 1
    print(f"CPU: {cpu_name()}, {cores} cores")
    out = {"cpu": cpu_name(), "cores": cores, "phases": {}}
    for phase in (("parallel", "realtime") if args.phase == "both" else (args.phase,)):
        wall, rc, rows = _run(phase, args.workers)
        out["phases"][phase] = {**_report(phase, wall, rows, cores, args.top), "passed": rc == 0}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
