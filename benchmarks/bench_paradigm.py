"""One full-length block in a real PsychoPy window; prints stimulus timing.

    xvfb-run -a python benchmarks/bench_paradigm.py [--block-s 25]

(Without DISPLAY it starts Xvfb itself.) Markers go to a real LSL outlet read
back by an inlet in this process. ``--console`` runs it as a visit does with the operator console watched:
a 128 x 1 kHz virtual amplifier (another process) recorded in this process, the console serving it, and
headless Chromium showing the console page throughout the block. Last line: JSON with frame_rate_hz,
dropped_frames, stim_duration_ms_median, stim_duration_ms_max_abs_error,
marker_minus_flip_ms_max (the received marker's LSL time minus the flip time).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import uuid

import numpy as np

from eegloop.lsl import configure_lsl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block-s", type=float, default=25.0)
    ap.add_argument("--image-s", type=float, default=0.5)
    ap.add_argument("--size", type=int, nargs=2, default=[1280, 1024])
    ap.add_argument("--console", action="store_true", help="record 128 x 1 kHz with the console open in Chromium")
    args = ap.parse_args()
    configure_lsl("machine")
    import pylsl

    from eegloop.paradigm.markers import make_marker_outlet
    from eegloop.paradigm.presentation import Presenter
    from eegloop.paradigm.schedule import make_schedule
    from eegloop.protocol import protocol_from_dict
    from eegloop.stimuli import load_stimuli

    n = int(round(args.block_s / args.image_s))
    with tempfile.TemporaryDirectory() as tmp:
        name = f"bench-mk-{uuid.uuid4().hex[:6]}"
        proto = protocol_from_dict({
            "stimuli": {"folder": f"{tmp}/stim", "synthesize": True, "classes": {"circle": "c", "square": "s"}},
            "paradigm": {"block_s": args.block_s, "image_s": args.image_s, "pause_s": 0, "images_per_class": n,
                         "runs": 1, "order": "blocked", "wait_for_space": False, "instructions": "",
                         "screen": {"fullscreen": False, "size": args.size, "image_size_px": 500}},
            "amplifier": {"marker_stream_name": name},
        })
        sched = make_schedule(proto, load_stimuli(proto))
        block = sched.blocks[0]
        outlet = make_marker_outlet(name)
        inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, timeout=5)[0])
        inlet.open_stream(5)
        inlet.time_correction(5)
        watch = _Watched(tmp) if args.console else None
        pres = Presenter(proto, outlet).open()
        print(f"frame rate {pres.frame_rate:.2f} Hz (measured {pres.measured_rate:.1f} Hz, "
              f"{'software-paced: no vsync' if pres.paced else 'hardware vsync'}); showing {len(block.trials)} images")
        pres.preload(block)
        timings = pres.run_block(block)
        pres.close()
        lost = watch.close() if watch is not None else None
        received = {}
        while True:
            s, ts = inlet.pull_sample(timeout=0.5)
            if s is None:
                break
            m = json.loads(s[0])
            if m["event"] == "stim_on":
                received[m["trial"]] = ts
    durs = np.array([t.duration_s for t in timings]) * 1000
    mmf = [abs(received[t.trial] - t.actual_onset_lsl) * 1000 for t in timings if t.trial in received]
    out = {
        "frame_rate_hz": round(pres.frame_rate, 3), "measured_rate_hz": round(pres.measured_rate, 1),
        "paced": pres.paced, "images": len(timings), "markers_received": len(received),
        "dropped_frames": int(sum(t.dropped_frames for t in timings)),
        "stim_duration_ms_median": round(float(np.median(durs)), 3),
        "stim_duration_ms_max_abs_error": round(float(np.max(np.abs(durs - args.image_s * 1000))), 3),
        "frames_off_by_more_than_one": int(sum(abs(t.actual_frames - t.intended_frames) > 1 for t in timings)),
        "marker_minus_flip_ms_max": round(float(max(mmf)), 4) if mmf else None,
        "console": bool(args.console), **({"console_lost_samples": lost} if args.console else {}),
    }
    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

    out["cpu"] = cpu_name()
    # ratios measured in this run, comparable across machines: frames dropped per image, the worst duration error
    # in frames, the worst marker-to-flip time in frames
    frame_ms = 1000 / pres.frame_rate
    out["ratios"] = {"dropped frames / images": round(out["dropped_frames"] / max(len(timings), 1), 4),
                     "max duration error / frame": round(out["stim_duration_ms_max_abs_error"] / frame_ms, 4),
                     **({"max marker - flip / frame": round(out["marker_minus_flip_ms_max"] / frame_ms, 5)}
                        if mmf else {})}
    print(json.dumps(out))


class _Watched:
    """A 128 x 1 kHz recording in this process with the operator console open in headless Chromium."""

    def __init__(self, tmp: str):
        import os
        import shutil
        import subprocess
        import sys
        import time

        from playwright.sync_api import sync_playwright

        from eegloop.console import Console
        from eegloop.protocol import protocol_from_dict
        from eegloop.recorder.recorder import Recorder

        name = f"bench-eeg-{uuid.uuid4().hex[:6]}"
        self.sim = subprocess.Popen([sys.executable, "-m", "eegloop", "simulate", "--name", name, "--channels", "128",
                                     "--sfreq", "1000", "--duration", "600"], stdout=subprocess.DEVNULL)
        proto = protocol_from_dict({"stimuli": {"folder": "x"},
                                    "amplifier": {"stream_name": name, "channels": 128, "sfreq": 1000}})
        self.con = Console(proto).start() if not os.environ.get("BENCH_NO_CONSOLE") else None
        self.rec = Recorder(proto, raw_dir=tmp).connect(markers=False, timeout=10).start()
        self.rec.begin_run(1)
        self.pw = None
        if os.environ.get("BENCH_NO_BROWSER"):  # the console served but nobody watching (which part costs?)
            return
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                               args=["--no-sandbox"] if os.geteuid() == 0 else [])
        self.page = self.browser.new_page(viewport={"width": 1600, "height": 1000})
        self.page.goto(self.con.url)
        time.sleep(2)

    def close(self) -> int:
        if self.pw is not None:
            n = self.page.evaluate("window.eegloopTraceUpdates || 0")
            print(f"console: the page's traces were updated {n} times during the run")
            self.browser.close()
            self.pw.stop()
        stats = self.rec.stop()
        if self.con is not None:
            self.con.stop()
        self.sim.terminate()
        self.sim.wait()
        return stats.lost_samples


if __name__ == "__main__":
    main()
