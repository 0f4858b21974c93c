"""One epoch -> class probabilities: the online path (preprocessing + student) on CPU.

    python benchmarks/bench_decode_latency.py [--channels 128] [--classes 40] [--repeats 300]

Last line: JSON with median and p99 milliseconds.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    from eegloop.decoder import OnlineDecoder, save_model
    from eegloop.decoder.models import ResidualCNN
    from eegloop.decoder.preprocessing import Preprocessor
    from eegloop.protocol import EpochsConfig, PreprocessingConfig

    ep = EpochsConfig()
    pre = Preprocessor.from_protocol(PreprocessingConfig(), ep, args.sfreq, ep.tmin - ep.margin_s)
    n_times = int(round((ep.tmax - ep.tmin + 2 * ep.margin_s) * args.sfreq))
    shape = pre.output_shape(args.channels, n_times)
    model = ResidualCNN(args.channels, args.classes, shape[1], shape[2]).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, pre, {f"c{i}": f"c{i}" for i in range(args.classes)},
                          [f"E{i}" for i in range(args.channels)], Path(tmp) / "m.safetensors", {})
        dec = OnlineDecoder(path)
    x = np.random.default_rng(0).standard_normal((args.channels, n_times)).astype(np.float32) * 10
    for _ in range(20):
        dec.predict(x)
    pre_t, tot = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        dec.pre(x)
        t1 = time.perf_counter()
        dec.predict(x)
        t2 = time.perf_counter()
        pre_t.append((t1 - t0) * 1000)
        tot.append((t2 - t1) * 1000)
    out = {"decode_ms_median": round(float(np.median(tot)), 3), "decode_ms_p99": round(float(np.percentile(tot, 99)), 3),
           "preprocess_ms_median": round(float(np.median(pre_t)), 3), "channels": args.channels,
           "classes": args.classes, "input_shape": list(shape), "threads": 1, "device": "cpu"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
