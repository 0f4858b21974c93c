"""One epoch -> class probabilities: the online path (preprocessing + student) on CPU.

    python benchmarks/bench_decode_latency.py [--channels 128] [--classes 40] [--repeats 300]
        [--methods kd_stft,kd_erp,lda_windowed,logreg_windowed,riemann]

Every candidate of ``decoder.model`` is saved and loaded exactly as quick-train does (networks with random
weights, pipelines fitted on random epochs of the right shape) and decodes one 128-channel epoch through
:class:`~eegloop.decoder.OnlineDecoder`, one thread. ``riemann`` runs at 4 classes (xDAWN covariances are
skipped beyond 32 x 32, i.e. at 40 classes). Last line: JSON with median and p99 milliseconds per method and
ratios measured in the same run (each method against the first; preprocessing's share of each decode).
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
    ap.add_argument("--methods", default="kd_stft,kd_erp,lda_windowed,logreg_windowed,riemann")
    args = ap.parse_args()
    import torch

    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

    torch.set_num_threads(1)
    out = {"cpu": cpu_name(), "channels": args.channels, "threads": 1, "device": "cpu", "methods": {}}
    for method in args.methods.split(","):
        out["methods"][method] = one(method, args)
        print(method, out["methods"][method], flush=True)
    # ratios measured in this run, comparable across machines: each method against the first, and the share of
    # the preprocessing (the same filters for every method) in each decode
    first = next(iter(out["methods"]))
    ref = out["methods"][first]["decode_ms_median"]
    out["ratios"] = {f"{m} / {first}": round(v["decode_ms_median"] / ref, 3) for m, v in out["methods"].items()
                     if m != first}
    out["ratios"].update({f"{m} preprocessing share": round(v["preprocess_ms_median"] / v["decode_ms_median"], 3)
                          for m, v in out["methods"].items()})
    print(json.dumps(out))


def one(method: str, args) -> dict:
    from eegloop.decoder import OnlineDecoder, save_model
    from eegloop.decoder.methods import is_sklearn, rep_of
    from eegloop.decoder.models import ResidualCNN
    from eegloop.decoder.pipelines import fit_pipeline
    from eegloop.decoder.preprocessing import Preprocessor
    from eegloop.protocol import EpochsConfig, PreprocessingConfig

    n_classes = 4 if method == "riemann" else args.classes
    ep = EpochsConfig()
    rep = "time" if is_sklearn(method) else rep_of(method)
    pre = Preprocessor.from_protocol(PreprocessingConfig(), ep, args.sfreq, ep.tmin - ep.margin_s)
    pre = pre.with_representation(rep)
    n_times = int(round((ep.tmax - ep.tmin + 2 * ep.margin_s) * args.sfreq))
    shape = pre.output_shape(args.channels, n_times)
    rng = np.random.default_rng(0)
    classes = {f"c{i}": f"c{i}" for i in range(n_classes)}
    with tempfile.TemporaryDirectory() as tmp:
        if is_sklearn(method):
            n = 10 * n_classes
            X = pre(rng.standard_normal((n, args.channels, n_times)).astype(np.float32))
            model = fit_pipeline(method, X, np.arange(n) % n_classes, args.sfreq, n_classes)
        else:
            model = ResidualCNN(args.channels, n_classes, shape[1], shape[2]).eval()
        path = save_model(model, pre, classes, [f"E{i}" for i in range(args.channels)], Path(tmp) / "m.safetensors",
                          {}, method=method)
        dec = OnlineDecoder(path)
    x = rng.standard_normal((args.channels, n_times)).astype(np.float32) * 10
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
    return {"decode_ms_median": round(float(np.median(tot)), 3), "decode_ms_p99": round(float(np.percentile(tot, 99)), 3),
            "preprocess_ms_median": round(float(np.median(pre_t)), 3), "classes": n_classes,
            "input_shape": list(shape)}


if __name__ == "__main__":
    main()
