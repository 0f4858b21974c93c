"""The operator console's cost: CPU share and trace update rate while a browser watches a 128 x 1 kHz recording.

    python benchmarks/bench_console.py [--channels 128] [--sfreq 1000] [--seconds 20]

The virtual amplifier streams from another process; this process records (raw file, as in a session) for
``--seconds`` without the console, then as long again with the console open in headless Chromium (Playwright,
Debian's chromium). Printed: this process's CPU (% of one core) in both phases and their difference (the
console's share), the CPU of the console's own threads (server, quality), the time its sample tap takes on the
recorder's thread, how often the page's traces were updated (goal >= 10 per second; the console's goal: <= 10 %
of a core), and the samples lost. Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from _common import cpu_name

from eegloop.lsl import configure_lsl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    configure_lsl("machine")
    import psutil

    from eegloop.console import Console
    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.recorder import Recorder

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("bench_console: needs Debian's chromium (apt-get install chromium) and playwright")
    name = f"bench-{uuid.uuid4().hex[:6]}"
    sim = subprocess.Popen([sys.executable, "-m", "eegloop", "simulate", "--name", name, "--channels",
                            str(args.channels), "--sfreq", str(args.sfreq), "--duration", str(2 * args.seconds + 20)],
                           stdout=subprocess.DEVNULL)
    proto = protocol_from_dict({"stimuli": {"folder": "x"}, "amplifier": {
        "stream_name": name, "channels": args.channels, "sfreq": args.sfreq}})
    proc = psutil.Process()

    def cpu(seconds):
        c0, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = proc.cpu_times(), time.monotonic()
        return (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100

    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(proto, raw_dir=tmp).connect(markers=False, timeout=10).start()
        rec.begin_run(1)
        time.sleep(2)
        print(f"recording {args.channels} ch x {args.sfreq:g} Hz without the console ...", file=sys.stderr)
        base = cpu(args.seconds)
        con = Console(proto).start()
        tap = {"s": 0.0}
        orig = con.state.on_samples

        def timed(data, ts):
            t = time.thread_time()
            orig(data, ts)
            tap["s"] += time.thread_time() - t

        from eegloop.bus import BUS

        con.state.detach()
        con.state._unsub = [BUS.subscribe(con.state.on_event), BUS.subscribe_samples(timed)]
        # the console learns the stream from the recorder's announcement; replay it for a recorder already running
        from eegloop.bus import Stream

        a = rec.acq
        con.state.on_event(Stream(list(a.ch_names), list(a.ch_types), float(a.sfreq), list(a.eeg_idx)))
        from playwright.sync_api import sync_playwright

        import os

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=["--no-sandbox"] if os.geteuid() == 0 else [])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(con.url)
            time.sleep(2)
            threads = {t.native_id for t in __import__("threading").enumerate() if t.name.startswith("eegloop-console")}
            th0 = {t.id: t.user_time + t.system_time for t in proc.threads() if t.id in threads}
            u0 = page.evaluate("window.eegloopTraceUpdates || 0")
            tap["s"] = 0.0
            print(f"... and with the console open in Chromium ({con.url.split('?')[0]})", file=sys.stderr)
            t0 = time.monotonic()
            with_console = cpu(args.seconds)
            el = time.monotonic() - t0
            u1 = page.evaluate("window.eegloopTraceUpdates || 0")
            th1 = {t.id: t.user_time + t.system_time for t in proc.threads() if t.id in threads}
            browser.close()
        con.stop()
        stats = rec.stop()
    sim.terminate()
    sim.wait()
    own = sum(th1.get(k, 0) - v for k, v in th0.items()) / el * 100
    out = {"cpu": cpu_name(), "channels": args.channels, "sfreq": args.sfreq, "seconds": args.seconds,
           "process_cpu_percent_without": round(base, 1), "process_cpu_percent_with": round(with_console, 1),
           "console_share_percent": round(with_console - base, 1),
           "console_threads_cpu_percent": round(own, 1), "sample_tap_cpu_percent": round(tap["s"] / el * 100, 2),
           "trace_updates_per_s": round((u1 - u0) / el, 1), "lost_samples": stats.lost_samples}
    out["ratios"] = {"process CPU with / without the console": round(with_console / max(base, 1e-9), 3),
                     "console threads / console share": round(own / max(with_console - base, 1e-9), 3)}
    print(f"CPU {out['cpu']}: process {base:.1f} % of a core without the console, {with_console:.1f} % with it "
          f"(console share {out['console_share_percent']} %; its threads {out['console_threads_cpu_percent']} %, "
          f"its sample tap {out['sample_tap_cpu_percent']} %); traces updated {out['trace_updates_per_s']} times "
          f"a second; lost samples {stats.lost_samples}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
