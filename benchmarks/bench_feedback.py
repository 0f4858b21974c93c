"""Closed-loop latency per stage, bank and live modes.

    python benchmarks/bench_feedback.py [--trials 20] [--generator DIR] [--size 64]

Runs the real loop: a short recording on the virtual amplifier (real PsychoPy
window, Xvfb when headless), a quick-train, then a feedback block per mode.
Without --generator it builds the tiny random Stable Diffusion pipeline (CPU
plumbing and latency of everything around the network, not image quality).
Latencies are from the moment the epoch was complete: decode (probabilities),
image ready, on screen (flip). Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--generator", help="diffusers folder or cached hub id (default: the tiny random pipeline)")
    ap.add_argument("--size", type=int, default=64, help="generated image edge, px")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--amp-latency-ms", type=float, default=None,
                    help="amplifier.simulate.latency_ms: how long the virtual amplifier holds samples (default 40)")
    ap.add_argument("--causal", action="store_true",
                    help="preprocessing.causal with epochs.right_margin_s 0: decode each epoch when its window ends")
    args = ap.parse_args()
    from eegloop.lsl import configure_lsl

    configure_lsl("machine")
    import torch

    from eegloop.database import Database
    from eegloop.decoder import quick_train
    from eegloop.feedback.loop import run_feedback
    from eegloop.protocol import protocol_from_dict
    from eegloop.session import record_session

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen = args.generator
        if gen is None:
            from eegloop.feedback.tiny import build_tiny_pipeline

            gen = str(build_tiny_pipeline(tmp / "tiny-sd"))
        tag = uuid.uuid4().hex[:6]
        proto = protocol_from_dict({
            "stimuli": {"folder": str(tmp / "stim"), "synthesize": True, "synth_size_px": 96,
                        "classes": {"circle": "red circle", "square": "blue square", "star": "yellow star"}},
            "paradigm": {"block_s": 2.5, "image_s": 0.25, "pause_s": 0.5, "images_per_class": 20, "runs": 2,
                         "wait_for_space": False, "instructions": "",
                         "screen": {"fullscreen": False, "size": [640, 480], "image_size_px": 256}},
            "amplifier": {"stream_name": f"bench-eeg-{tag}", "marker_stream_name": f"bench-mk-{tag}",
                          "channels": 32, "sfreq": 500,
                          "simulate": {"snr": 0.4, **({} if args.amp_latency_ms is None
                                                      else {"latency_ms": args.amp_latency_ms})}},
            "epochs": {"tmin": 0.0, "tmax": 0.5, "margin_s": 0.25, "right_margin_s": 0.0 if args.causal else None},
            "preprocessing": {"causal": bool(args.causal)},
            "teacher": {"enabled": False}, "training": {"max_epochs": 15},
            "feedback": {"generator": gen, "size_px": args.size, "steps": args.steps, "bank_per_class": 2,
                         "display_s": 0.3},
        })
        db = Database(f"sqlite:///{tmp / 'e.db'}", data_dir=tmp)
        rec = record_session(proto, "bench", db, simulate=True, progress=None)
        quick_train(db, "bench", progress=False)
        out = {}
        offset = 1000
        for mode in ("bank", "live"):
            res = run_feedback(proto, "bench", db, simulate=True, session_id=rec.session_id, mode=mode,
                               trials=args.trials, progress=None, trial_offset=offset)
            offset += 1000
            lat = res.latency_ms
            out[mode] = {"decode_ms_median": round(lat["decode_ms"]["median"], 2),
                         "image_ready_ms_median": round(lat["image_ready_ms"]["median"], 2),
                         "to_screen_ms_median": round(lat["to_screen_ms"]["median"], 2),
                         "onset_to_screen_ms_median": round(lat["onset_to_screen_ms"]["median"], 2),
                         "to_screen_ms_p95": round(lat["to_screen_ms"]["p95"], 2),
                         "decode_ms_p95": round(lat["decode_ms"]["p95"], 2),
                         "trials": res.trials, "missing": res.missing, "frame_rate_hz": round(res.frame_rate_hz, 2)}
            print(f"{mode}: {out[mode]}", flush=True)
        out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        out["generator"] = "tiny random SD pipeline" if args.generator is None else args.generator
        out["size_px"], out["steps"], out["causal"] = args.size, args.steps, bool(args.causal)
        out["amp_latency_ms"] = proto.amplifier.simulate.latency_ms
        out["ratios"] = {"live / bank, to screen": round(out["live"]["to_screen_ms_median"]
                                                         / out["bank"]["to_screen_ms_median"], 3),
                         "bank, to screen / onset to screen": round(out["bank"]["to_screen_ms_median"]
                                                                     / out["bank"]["onset_to_screen_ms_median"], 3)}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
