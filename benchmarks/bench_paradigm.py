"""One full-length block in a real PsychoPy window; prints stimulus timing.

    xvfb-run -a python benchmarks/bench_paradigm.py [--block-s 25]
    python benchmarks/bench_paradigm.py --load visit [--block-s 25]

(Without DISPLAY it starts Xvfb itself.) Markers go to a real LSL outlet read
back by an inlet in this process. Last line: JSON with frame_rate_hz,
dropped_frames, stim_duration_ms_median, stim_duration_ms_max_abs_error,
marker_minus_flip_ms_max (the received marker's LSL time minus the flip time).

``--load visit``: the block as a visit shows it, under a visit's full load, and the same block with the paradigm
alone, in the same run. Both go through eegloop's rig (the presenter in its own process, with the priority it
obtains). Under load: a 128 ch x 1 kHz virtual amplifier (its own process, as a real amplifier's app), the
recording (acquisition process, raw file and database), online decoding of every epoch and an image generated for
each by the tiny diffusion model (worker process), and the operator console served by this process and watched by
headless Chromium. The JSON has both figures, their ratios, the presenter's scheduling and each process's CPU
seconds during the block.

``--console``: the old single-process layout, for comparison: the recording in this process beside the
presenter, the console open in Chromium (nothing of a visit runs this way any more).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

from eegloop.lsl import configure_lsl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block-s", type=float, default=25.0)
    ap.add_argument("--image-s", type=float, default=0.5)
    ap.add_argument("--size", type=int, nargs=2, default=[1280, 1024])
    ap.add_argument("--console", action="store_true",
                    help="the old layout: record 128 x 1 kHz in this process with the console open in Chromium")
    ap.add_argument("--load", choices=["visit"], help="the block under a visit's full load (see above)")
    args = ap.parse_args()
    configure_lsl("machine")
    if args.load == "visit":
        return visit_load(args)
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


def _block_protocol(tmp, args, name: str, **sections):
    """One block of ``block_s`` at ``image_s`` per image (two classes, blocked), no pause."""
    from eegloop.protocol import protocol_from_dict

    n = int(round(args.block_s / args.image_s))
    base = {
        "name": "bench",
        "stimuli": {"folder": f"{tmp}/stim", "synthesize": True, "classes": {"circle": "c", "square": "s"}},
        "paradigm": {"block_s": args.block_s, "image_s": args.image_s, "pause_s": 0, "images_per_class": n,
                     "runs": 1, "order": "blocked", "wait_for_space": False, "instructions": "",
                     "screen": {"fullscreen": False, "size": args.size, "image_size_px": 500}},
        "amplifier": {"marker_stream_name": f"{name}-mk", "stream_name": f"{name}-eeg", "channels": 128,
                      "sfreq": 1000, "simulate": {"seed": 3, "snr": 0.8}},
        "epochs": {"tmin": 0.0, "tmax": 0.5, "margin_s": 0.2},
        "teacher": {"enabled": False}, "signal_check": {"before_visit": False},
        "decoder": {"model": "lda_windowed"},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return protocol_from_dict(base, source=f"{tmp}/bench.yaml")


def _timing(timings, image_s: float, frame_rate: float) -> dict:
    durs = np.array([t.duration_s for t in timings]) * 1000
    mmf = [abs(t.marker_lsl - t.actual_onset_lsl) * 1000 for t in timings]
    return {"images": len(timings), "dropped_frames": int(sum(t.dropped_frames for t in timings)),
            "stim_duration_ms_median": round(float(np.median(durs)), 3),
            "stim_duration_ms_max_abs_error": round(float(np.max(np.abs(durs - image_s * 1000))), 3),
            "frames_off_by_more_than_one": int(sum(abs(t.actual_frames - t.intended_frames) > 1 for t in timings)),
            "marker_minus_flip_ms_max": round(float(max(mmf)), 4), "frame_rate_hz": round(frame_rate, 3)}


def _cpu(procs: dict) -> dict:
    out = {}
    for name, p in procs.items():
        try:
            t = p.cpu_times()
            out[name] = t.user + t.system
        except Exception:
            pass
    return out


def visit_load(args) -> None:
    """The block alone (presenter only), then under a visit's full load; both through eegloop's rig."""
    import shutil
    import time

    import psutil

    from eegloop.bus import BUS
    from eegloop.console import Console
    from eegloop.database import Database
    from eegloop.database.claim import SessionClaim
    from eegloop.decoder import quick_train
    from eegloop.feedback.loop import PlannedTrial
    from eegloop.feedback.tiny import build_tiny_pipeline
    from eegloop.paradigm.schedule import Run, make_schedule
    from eegloop.rig import Rig
    from eegloop.roles.messages import (BeginRun, Connect, EndRun, LoadModel, OpenWindow, PrepareFeedback,
                                        ShowRun, StartDecoding, StartRecording, StopDecoding, StopRecording,
                                        Subscribe)
    from eegloop.session import record_session
    from eegloop.stimuli import load_stimuli

    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

    out = {"cpu": cpu_name(), "block_s": args.block_s, "image_s": args.image_s}
    with tempfile.TemporaryDirectory() as tmp:
        tag = uuid.uuid4().hex[:6]
        gen = str(build_tiny_pipeline(f"{tmp}/tiny-sd"))
        proto = _block_protocol(tmp, args, f"bl-{tag}", feedback={"generator": gen, "mode": "live", "size_px": 64,
                                                                    "steps": 1})
        stimuli = load_stimuli(proto)
        first = make_schedule(proto, stimuli).blocks[0]
        run = Run(run=1, blocks=(first,))  # one block of block_s

        # the paradigm alone: the presenter process and nothing else
        with Rig(proto, acquisition=False) as rig:
            d = rig.presenter.call(OpenWindow(), timeout=None)
            alone = rig.presenter.call(ShowRun(run), timeout=None)
        out["alone"] = _timing(alone.timings, args.image_s, d.frame_rate)
        print(f"alone: {out['alone']}", flush=True)

        # a decoder for 128 x 1 kHz epochs: a short recording of the simulated subject, a pinned quick model
        db = Database(f"sqlite:///{tmp}/e.db", data_dir=tmp)
        short = _block_protocol(tmp, argparse.Namespace(block_s=2.0, image_s=0.25, size=[320, 240]), f"tr-{tag}",
                                paradigm={"runs": 2, "pause_s": 0.2})
        print("recording a short training session for the decoder ...", flush=True)
        record_session(short, "bench", db, simulate=True, progress=None)
        quick_train(db, "bench", protocol=short, progress=False)

        # the same block under a visit's load
        con = Console(proto).start()
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                     args=["--no-sandbox"] if os.geteuid() == 0 else [])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            with Rig(proto, simulate=True, db=db) as rig:
                rig.stream = rig.acquisition.call(Connect(marker_source_id=rig.marker_id,
                                                          eeg_source_id=rig.eeg_source_id, expect_timings=False,
                                                          forward_samples=BUS.wants_samples), timeout=None)
                db.get_or_add_subject("bench")
                sid = db.create_session("bench", proto)
                claim = SessionClaim(db, sid).__enter__()
                rig.acquisition.call(StartRecording(sid, f"{tmp}/raw", "load"))
                worker = rig.start_worker()
                worker.call(LoadModel("bench", "live"), timeout=None)
                # every image of the block is a "feedback trial": each epoch decoded, an image generated for it
                plan = [PlannedTrial(t.trial, t.class_id, (stimuli.images[0],), (t.trial,)) for t in first.trials]
                os.makedirs(f"{tmp}/img")
                worker.call(PrepareFeedback(plan, f"{tmp}/img", False), timeout=None)
                worker.call(StartDecoding())
                rig.acquisition.call(Subscribe())
                d = rig.presenter.call(OpenWindow(), timeout=None)
                page.goto(con.url)
                time.sleep(3)  # the page draws its traces from now on
                procs = {c.name: psutil.Process(c.pid) for c in rig.children}
                procs["orchestrator"] = psutil.Process()
                browser_procs = [p for p in psutil.process_iter(["name"]) if "chrom" in (p.info["name"] or "")]
                cpu0, b0 = _cpu(procs), sum(_cpu({i: p for i, p in enumerate(browser_procs)}).values())
                rig.acquisition.call(BeginRun(1))
                loaded = rig.presenter.call(ShowRun(run), timeout=None)
                cpu1, b1 = _cpu(procs), sum(_cpu({i: p for i, p in enumerate(browser_procs)}).values())
                rig.acquisition.call(EndRun(), timeout=60)
                generated, t_end = 0, time.monotonic() + 30
                while generated < len(plan) and time.monotonic() < t_end:  # the last epochs' images (saved by
                    time.sleep(0.2)                                        # the worker once sent)
                    generated = len(list(Path(f"{tmp}/img").glob("trial-*.png")))
                worker.call(StopDecoding())
                stats = rig.acquisition.call(StopRecording(), timeout=60).stats
                claim.__exit__(None, None, None)
                updates = page.evaluate("window.eegloopTraceUpdates || 0")
        finally:
            browser.close()
            pw.stop()
            con.stop()
        out["load"] = _timing(loaded.timings, args.image_s, d.frame_rate)
        out["load"].update(epochs=stats.epochs, lost_samples=stats.lost_samples, images_generated=generated,
                           console_trace_updates=updates)
        out["scheduling"] = d.scheduling
        out["cpu_seconds_during_block"] = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
        out["cpu_seconds_during_block"]["chromium"] = round(b1 - b0, 2)
        print(f"load: {out['load']}", flush=True)
    a, lo = out["alone"], out["load"]
    frame_ms = 1000 / lo["frame_rate_hz"]
    out["ratios"] = {
        "dropped frames, load - alone, per block": lo["dropped_frames"] - a["dropped_frames"],
        "worst duration error under load / frame": round(lo["stim_duration_ms_max_abs_error"] / frame_ms, 3),
        "worst marker - flip under load, ms": lo["marker_minus_flip_ms_max"],
        "worst duration error, load / alone": round(lo["stim_duration_ms_max_abs_error"]
                                                    / max(a["stim_duration_ms_max_abs_error"], 1e-3), 3)}
    out["goal_met"] = bool(lo["dropped_frames"] <= a["dropped_frames"] + 1
                           and lo["stim_duration_ms_max_abs_error"] <= frame_ms
                           and lo["marker_minus_flip_ms_max"] <= 1.0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
