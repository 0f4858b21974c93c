"""Full quick-train on simulated epochs of the paper's size.

    python benchmarks/bench_quick_train.py [--epochs-data 2000] [--channels 128] [--classes 40] [--budget 60]
                                           [--schedule budget|constant] [--reference]

Epochs come from the virtual amplifier rendered offline (interleaved design,
1 kHz, 0.5 s + margins); preprocessing is the paper's (notch, 14-70 Hz, STFT
40/20 ms); the student is the ~1.1 M-parameter residual CNN trained with the
protocol's settings (Adam 3e-4, batch 64, clip 1.0, patience 10, <= 50 epochs)
on whole blocks, early-stopping on held-out blocks, within quick-train's budget (60 s
with preprocessing; where the epochs do not fit it, ``training.schedule: budget``
decays the learning rate to zero at its end). ``--reference`` also trains the paper's
way (constant lr, no budget) in the same run and prints the accuracy difference. Teacher logits are random
stand-ins of the right shape (the CLIP forward pass is per image, cached, and
not part of this timing). Last line: JSON.

    python benchmarks/bench_quick_train.py --compare [--steps 20] [--compile] [--profile]

``--compare`` times training steps (batch 64, forward + backward + Adam) of the same student in each setting
(fp32 / bf16 autocast, default / channels-last memory, and with ``--compile`` torch.compile) and prints their
ratios, measured in the same run, so numbers from different machines compare; ``--profile`` adds where a
step's time goes (torch.profiler, top operators by self CPU time). The plain run's JSON also carries the
settings quick-train's calibration chose and the ratios it measured.

    python benchmarks/bench_quick_train.py --whole [--model auto]

``--whole`` times eegloop's own ``quick_train`` end to end, as ``eegloop train`` runs it: the
simulated epochs are stored in a throw-away SQLite database first (not timed), then loading them,
preprocessing, the model selection (``decoder.model: auto``, its 30 s budget) and the final fit
are timed together. No teacher (its CLIP pass is per image, cached).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs-data", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--max-epochs", type=int, default=None, help="override training.max_epochs")
    ap.add_argument("--whole", action="store_true", help="time eegloop's quick_train end to end (database to model)")
    ap.add_argument("--model", default="auto", help="--whole: decoder.model (auto or a pinned one)")
    ap.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                    help="quick-train's training.budget_s, preprocessing included: the fit gets what is left "
                         "(default 60; 0: no limit)")
    ap.add_argument("--schedule", choices=("budget", "constant"), default=None,
                    help="training.schedule (default the protocol's: budget)")
    ap.add_argument("--reference", action="store_true",
                    help="also train with no budget and the paper's constant lr, to early stopping, in the same run: "
                         "the accuracy the budget must keep (ratios in the last line)")
    ap.add_argument("--compare", action="store_true", help="time training steps in every setting; ratios")
    ap.add_argument("--steps", type=int, default=20, help="--compare: timed steps per setting")
    ap.add_argument("--compile", action="store_true", help="--compare: also torch.compile (its compile time apart)")
    ap.add_argument("--profile", action="store_true", help="--compare: where a step's time goes (torch.profiler)")
    args = ap.parse_args()

    from eegloop.decoder.evaluation import inner_validation
    from eegloop.decoder.models import ResidualCNN, count_params
    from eegloop.decoder.preprocessing import Preprocessor
    from eegloop.decoder.training import fit
    from eegloop.paradigm.schedule import make_schedule
    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.simulator import simulate_epochs
    from eegloop.stimuli import Stimulus, StimulusSet

    per_class = args.epochs_data // args.classes
    classes = {f"c{i:02d}": f"class {i}" for i in range(args.classes)}
    st = StimulusSet(classes, tuple(Stimulus(Path(f"/x/{c}/{k}"), c, f"{c}{k}") for c in classes
                                    for k in range(per_class)))
    tpb = 50 if (args.classes * per_class) % 50 == 0 else per_class
    n_blocks = args.classes * per_class // tpb
    runs = 4 if n_blocks % 4 == 0 else 1
    proto = protocol_from_dict({
        "stimuli": {"folder": "x", "classes": classes},
        "paradigm": {"block_s": tpb * 0.5, "image_s": 0.5, "images_per_class": per_class, "runs": runs},
        "amplifier": {"channels": args.channels, "sfreq": args.sfreq, "simulate": {}},
        "training": {**({"max_epochs": args.max_epochs} if args.max_epochs else {}),
                     **({"schedule": args.schedule} if args.schedule else {})},
    })
    t0 = time.perf_counter()
    es = simulate_epochs(proto, make_schedule(proto, st))
    t_sim = time.perf_counter() - t0
    print(f"simulated {es.data.shape} in {t_sim:.1f} s", flush=True)
    if args.whole:
        whole(args, proto, es)
        return
    t0 = time.perf_counter()
    pre = Preprocessor.from_protocol(proto.preprocessing, proto.epochs, es.sfreq, es.tmin)
    X = pre(es.data)
    t_pre = time.perf_counter() - t0
    print(f"preprocessed to {X.shape} in {t_pre:.2f} s", flush=True)
    tr, va = inner_validation(es, np.arange(len(es)), "block")
    teacher = np.random.default_rng(0).standard_normal((len(es), len(classes))).astype(np.float32)
    model = ResidualCNN(X.shape[1], len(classes), X.shape[2], X.shape[3])
    if args.compare:
        compare(args, model, X[tr], es.y[tr], t_pre, len(es))
        return
    left = max(args.budget - t_pre, 0.1 * args.budget) if args.budget > 0 else None  # as quick_train does
    t0 = time.perf_counter()
    res = fit(model, X[tr], es.y[tr], proto.training, X[va], es.y[va], teacher_logits=teacher[tr], progress=True,
              max_seconds=left)
    t_fit = time.perf_counter() - t0
    out = {"seconds": round(t_pre + t_fit, 2), "preprocess_seconds": round(t_pre, 2),
           "train_seconds": round(t_fit, 2), "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
           "seconds_per_epoch": round(t_fit / max(res.epochs_run, 1), 3), "params": count_params(model),
           "device": res.device, "threads": res.threads, "precision": res.precision, "n_train": int(len(tr)), "n_val": int(len(va)),
           "val_top1_last": round(res.history[-1]["val_acc"], 3),
           "val_top1_best": _best(res), "budget_s": args.budget or None, "lr_schedule": res.schedule,
           "input_shape": list(X.shape[1:]),
           "channels_last": res.channels_last, "stopped": res.stopped, "cpu": _cpu()}
    out["calibration_step_ms"] = _calibration_entry()
    step = out["calibration_step_ms"] or {}
    ratios = {f"{k} / fp32": round(v / step["fp32"], 3) for k, v in step.items() if k != "fp32"} if step.get("fp32") else {}
    if args.reference:  # the paper's schedule, no budget, to early stopping: what the budgeted fit must keep
        import dataclasses

        ref_cfg = dataclasses.replace(proto.training, schedule="constant")
        t0 = time.perf_counter()
        ref = fit(ResidualCNN(X.shape[1], len(classes), X.shape[2], X.shape[3]), X[tr], es.y[tr], ref_cfg, X[va],
                  es.y[va], teacher_logits=teacher[tr], progress=True)
        t_ref = time.perf_counter() - t0
        out["reference"] = {"seconds": round(t_pre + t_ref, 2), "epochs_run": ref.epochs_run,
                            "best_epoch": ref.best_epoch, "stopped": ref.stopped, "val_top1_best": _best(ref)}
        ratios["seconds / reference seconds"] = round(out["seconds"] / out["reference"]["seconds"], 3)
        ratios["val_top1_best - reference"] = round(out["val_top1_best"] - out["reference"]["val_top1_best"], 3)
    if ratios:
        out["ratios"] = ratios
    print(json.dumps(out))


def _best(res):
    """Validation top-1 of the kept weights (the epoch with the lowest validation loss)."""
    return round(res.history[res.best_epoch - 1]["val_acc"], 3) if res.best_epoch else None


def _cpu() -> str:
    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

    return cpu_name()


def _calibration_entry():
    """The step times quick-train's calibration measured for this run (from this machine's cache)."""
    from eegloop.decoder import training

    path = training._cache_file()
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError, TypeError):
        return None
    hits = [v for k, v in table.items() if k.startswith("ResidualCNN|") and training._machine() in k]
    return hits[-1].get("step_ms") if hits else None


def compare(args, model, X, y, t_pre, n_epochs_data) -> None:
    """Seconds per training step of ``model`` in each setting, their ratios, and (``--profile``) the top ops."""
    import copy
    import os

    import torch
    import torch.nn.functional as F

    from eegloop.decoder.training import set_threads

    threads = set_threads()
    rng = np.random.default_rng(0)
    bs = 64
    batches = [rng.choice(len(X), bs, replace=False) for _ in range(args.steps + 3)]
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long)
    bf16_ok = True

    def run(name, bf16=False, channels_last=False, compiled=False):
        m = copy.deepcopy(model).train()
        x_all = Xt
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
            x_all = Xt.contiguous(memory_format=torch.channels_last)
        fwd = m
        t_compile = 0.0
        if compiled:
            t0 = time.perf_counter()
            fwd = torch.compile(m)
        opt = torch.optim.Adam(m.parameters(), lr=3e-4)

        def step(idx):
            xb, yb = x_all[idx], yt[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = fwd(xb)
            loss = F.cross_entropy(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for idx in batches[:3]:  # warm-up (and, compiled, the compilation)
            step(torch.as_tensor(idx))
        if compiled:
            t_compile = time.perf_counter() - t0
        times = []
        for idx in batches[3:]:
            t0 = time.perf_counter()
            step(torch.as_tensor(idx))
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        print(f"{name:28s} {med * 1e3:8.1f} ms/step" + (f"  (compile + warm-up {t_compile:.1f} s)" if compiled
                                                        else ""), flush=True)
        return med, t_compile, step

    res = {}
    res["fp32"] = run("fp32")
    try:
        res["bf16"] = run("bf16 autocast", bf16=True)
    except RuntimeError as exc:  # no bf16 kernels here
        bf16_ok = False
        print(f"bf16 autocast: not available ({exc})")
    res["fp32 channels-last"] = run("fp32 channels-last", channels_last=True)
    if bf16_ok:
        res["bf16 channels-last"] = run("bf16 autocast channels-last", bf16=True, channels_last=True)
    if args.compile:
        try:
            res["fp32 compiled"] = run("fp32 torch.compile", compiled=True)
        except Exception as exc:  # the inductor needs a C compiler; say so rather than fail
            print(f"torch.compile: failed ({type(exc).__name__}: {str(exc)[:200]})")
    steps_per_epoch = int(np.ceil(0.8 * n_epochs_data / bs))
    base = res["fp32"][0]
    out = {"cpu": _cpu(), "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
           "step_ms": {k: round(v[0] * 1e3, 1) for k, v in res.items()},
           "epoch_s_estimate": {k: round(v[0] * steps_per_epoch, 2) for k, v in res.items()},
           "preprocess_seconds": round(t_pre, 2),
           "ratios": {f"{k} / fp32": round(v[0] / base, 3) for k, v in res.items() if k != "fp32"}}
    if "fp32 compiled" in res:
        out["compile_seconds"] = round(res["fp32 compiled"][1], 1)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        fastest = min(res, key=lambda k: res[k][0])
        step = res[fastest][2]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for idx in batches[3:13]:
                step(torch.as_tensor(idx))
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        print(f"where a step's time goes ({fastest}, 10 steps):")
        for e in top:
            print(f"  {e.key:45s} {e.self_cpu_time_total / total * 100:5.1f} %")
        out["profile_top"] = {e.key: round(e.self_cpu_time_total / total * 100, 1) for e in top[:8]}
        out["profiled_setting"] = fastest
    print(json.dumps(out))


def whole(args, proto, es) -> None:
    import os
    import tempfile

    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs
    from eegloop.database import Database
    from eegloop.decoder import quick_train
    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.importers import import_epochset

    d = proto.to_dict()
    d["decoder"]["model"] = args.model
    d["teacher"]["enabled"] = False
    proto = protocol_from_dict(d)
    tmp = Path(tempfile.mkdtemp(prefix="eegloop-bench-"))
    try:  # the throw-away database holds ~1 GB of epochs: never left behind
        db = Database(f"sqlite:///{tmp / 'e.db'}", data_dir=tmp)
        t0 = time.perf_counter()
        import_epochset(db, "sim", proto, es)
        print(f"stored in {time.perf_counter() - t0:.1f} s (not timed)", flush=True)
        del es
        t0 = time.perf_counter()
        tm = quick_train(db, "sim", progress=False, use_teacher=False)
        secs = time.perf_counter() - t0
        db.close()
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    m = tm.metrics
    sel = m.get("selection", {})
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "seconds": round(secs, 1),
                      "method": m["method"], "heldout_top1": round(m["heldout"]["top1"], 3),
                      "heldout_optimistic": m.get("heldout_optimistic", True),  # tuned on: not an estimate
                      "selection_seconds": sel.get("seconds"),
                      "candidates": {k: (v.get("skipped") or round(v.get("score", float("nan")), 3))
                                     for k, v in sel.get("candidates", {}).items()}}))


if __name__ == "__main__":
    main()
