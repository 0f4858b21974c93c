"""Stream from the virtual amplifier (another process) through the recorder; print the accounting.

    python benchmarks/bench_recorder.py [--channels 128] [--sfreq 1000] [--seconds 60]

The recorder pulls, checks and writes the raw BrainVision file exactly as in a
session. cpu_percent is this process's CPU time (recorder thread, file writes,
LSL inlet) over wall time, in percent of one core. Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from eegloop.lsl import configure_lsl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    configure_lsl("machine")
    import psutil

    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.recorder import Recorder

    name = f"bench-{uuid.uuid4().hex[:6]}"
    sim = subprocess.Popen([sys.executable, "-m", "eegloop", "simulate", "--name", name, "--channels",
                            str(args.channels), "--sfreq", str(args.sfreq), "--duration", str(args.seconds + 8)],
                           stdout=subprocess.DEVNULL)
    proto = protocol_from_dict({"stimuli": {"folder": "x"}, "amplifier": {
        "stream_name": name, "channels": args.channels, "sfreq": args.sfreq}})
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(proto, raw_dir=tmp).connect(markers=False, timeout=10).start()
        rec.begin_run(1)
        proc = psutil.Process()
        c0, t0 = proc.cpu_times(), time.monotonic()
        last = -1
        while (el := time.monotonic() - t0) < args.seconds:
            time.sleep(1.0)
            if int(el) // 10 != last:
                last = int(el) // 10
                print(f"  {el:5.0f} s  received {rec.stats.samples_received}  lost {rec.stats.lost_samples}",
                      file=sys.stderr, flush=True)
        c1, t1 = proc.cpu_times(), time.monotonic()
        stats = rec.stop()
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
    sim.terminate()
    sim.wait()
    cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100
    out = {
        "channels": args.channels, "sfreq": args.sfreq, "seconds": round(t1 - t0, 1),
        "lost_samples": stats.lost_samples, "samples_received": stats.samples_received,
        "samples_expected": stats.samples_expected, "cpu_percent": round(cpu, 2),
        "recorder_thread_cpu_percent": round(stats.cpu_seconds / max(stats.wall_seconds, 1e-9) * 100, 2),
        "max_gap_ms": round(stats.max_gap_ms, 3), "max_pull_interval_ms": round(stats.max_pull_interval_ms, 1),
        "stalls": len(stats.stalls), "raw_bytes": size,
    }
    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

    out["cpu"] = cpu_name()
    # ratios measured in this run, comparable across machines
    n = max(stats.samples_received, 1)
    out["ratios"] = {"received / expected": round(stats.samples_received / max(stats.samples_expected, 1), 6),
                     "received / (wall seconds x sfreq)": round(n / ((t1 - t0) * args.sfreq), 4),
                     "recorder thread / process CPU": round(out["recorder_thread_cpu_percent"] / max(cpu, 1e-9), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
