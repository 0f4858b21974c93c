"""Zero-shot decoding: encoder training time, encode latency, retrieval scores; THINGS-EEG2-shaped end to end.

    python benchmarks/bench_zero_shot.py [--channels 128] [--sfreq 500] [--classes 10] [--per-class 50]
        [--repeats 4] [--budget 60] [--things-train-concepts 1654] [--skip-things] [--skip-simulated]

Part 1, the simulated subject (``amplifier.simulate.embedding_signal``: each image evokes a random linear
projection of its CLIP embedding; the tiny random CLIP, as no weights can be downloaded), interleaved design,
classes x per-class x repeats epochs (default 2000 x 128 channels): the encoder trained on all of them as
quick-train does (seconds, epochs, how it stopped), one epoch's encode latency through
:class:`~eegloop.decoder.encoder.OnlineEncoder` (preprocessing included, one thread), and ``evaluate
--zero-shot``'s k-way identification on held-out classes with the signal on and off (p and null band).

Part 2, a THINGS-EEG2-shaped synthetic set written as the dataset's files (17 channels, 100 Hz, -0.2..0.8 s;
training: concepts x 10 images x 4 repetitions, test: 200 concepts x 1 image x 80 repetitions; JPEG images in
its folder layout; EEG from the same embedding response plus noise): ``eegloop import --format things-eeg2``
then ``eegloop evaluate --zero-shot`` (200-way), timed end to end through the CLI.

Last line: JSON with the numbers and ratios measured in the same run (training seconds / budget, encode ms /
5 ms, top-1 / chance), beside the CPU model.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def simulated(args, tmp: Path, signal: float):
    from eegloop.embeddings import TINY_CLIP, image_embeddings
    from eegloop.paradigm.schedule import make_schedule
    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.simulator import simulate_epochs
    from eegloop.stimuli import SYNTH_CLASSES, load_stimuli

    d = {"stimuli": {"folder": str(tmp / "stimuli"), "synthesize": True, "synth_size_px": 96,
                     "classes": dict(list(SYNTH_CLASSES.items())[:args.classes])},
         "paradigm": {"block_s": 25, "image_s": 0.5, "images_per_class": args.per_class, "repeats": args.repeats,
                      "runs": 4, "order": "interleaved"},
         "amplifier": {"channels": args.channels, "sfreq": args.sfreq,
                       "simulate": {"snr": 0.3, "embedding_signal": signal, "class_signal": 1.0 if signal else 0.0}},
         "teacher": {"model": TINY_CLIP, "pretrained": None},
         "encoder": {"budget_s": args.budget, "test_share": 0.3},
         "training": {"n_folds": 3}}
    p = protocol_from_dict(d)
    stim = load_stimuli(p)
    sched = make_schedule(p, stim)
    es = simulate_epochs(p, sched)
    es.images = np.array([t.image_sha256 for t in sched.trials])
    return p, es, image_embeddings([(s.path, s.sha256) for s in stim.images], TINY_CLIP, None)


def part_simulated(args, tmp: Path) -> dict:
    import torch

    from eegloop.decoder.encoder import ENCODER_REPRESENTATION, EEGEncoder, center_targets, fit_encoder, image_mean
    from eegloop.decoder.preprocessing import Preprocessor
    from eegloop.decoder.zeroshot import zero_shot_evaluate

    out = {}
    t = time.perf_counter()
    p, es, Z = simulated(args, tmp, 1.0)
    out["simulate_s"] = round(time.perf_counter() - t, 1)
    print(f"simulated {es.data.shape} in {out['simulate_s']} s", flush=True)
    # quick-train's encoder: preprocessing + fit on every epoch (whole blocks out for early stopping)
    t0 = time.perf_counter()
    pre = Preprocessor.from_protocol(p.preprocessing, p.epochs, es.sfreq, es.tmin).with_representation(
        ENCODER_REPRESENTATION)
    X = pre(es.data)
    center = image_mean(Z, es.images)
    T = center_targets(np.stack([Z[s] for s in es.images]), center)
    blocks = np.unique(es.blocks)
    va = np.isin(es.blocks, np.random.default_rng(0).permutation(blocks)[:max(1, round(0.15 * len(blocks)))])
    prep_s = time.perf_counter() - t0
    fit = fit_encoder(X[~va], T[~va], p.encoder, es.sfreq / pre.series_factor, X[va], T[va],
                      max_seconds=max(args.budget - prep_s, 0.1 * args.budget) if args.budget else 0)
    train_s = time.perf_counter() - t0
    n_params = sum(v.numel() for v in fit.model.parameters())
    out["train"] = {"epochs": int(len(es)), "channels": args.channels, "input": list(X.shape[1:]), "params": n_params,
                    "seconds": round(train_s, 1), "preprocessing_s": round(prep_s, 1), "epochs_run": fit.epochs_run,
                    "best_epoch": fit.best_epoch, "stopped": fit.stopped,
                    "s_per_epoch": round(fit.seconds / max(fit.epochs_run, 1), 3),
                    "val_top1_first_last": [fit.history[0].get("val_top1"), fit.history[-1].get("val_top1")]}
    print("train", out["train"], flush=True)
    # one epoch -> embedding, as online (OnlineEncoder's path: preprocessing + forward, one thread)
    model = EEGEncoder.from_config(fit.model.get_config())
    model.load_state_dict(fit.model.state_dict())
    model.eval()
    torch.set_num_threads(1)
    lat = []
    with torch.no_grad():
        for i in range(220):
            t = time.perf_counter()
            x = pre(es.data[i % len(es)][None])
            model(torch.as_tensor(x))
            lat.append((time.perf_counter() - t) * 1e3)
    lat = np.array(lat[20:])
    out["encode_ms"] = {"median": round(float(np.median(lat)), 2), "p95": round(float(np.percentile(lat, 95)), 2)}
    print("encode", out["encode_ms"], flush=True)
    torch.set_num_threads(os.cpu_count() or 1)
    for name, sig in (("signal", 1.0), ("no_signal", 0.0)):
        if sig == 0.0:
            p, es, Z = simulated(args, tmp / "off", 0.0)
        t = time.perf_counter()
        rep = zero_shot_evaluate(es, Z, p, permutations=1000, budget_s=3 * args.budget, seed=0)
        out[name] = {"scores": rep.scores, "p": round(rep.pvalue, 4), "null_band": [round(v, 4) for v in rep.null_band],
                     "seconds": round(time.perf_counter() - t, 1), "test_classes": rep.test_classes,
                     "test_images": rep.n_test_images}
        print(name, json.dumps(out[name]), flush=True)
    return out


def write_things(root: Path, n_train: int, seed: int = 0) -> None:
    """THINGS-EEG2's files and folders with synthetic content: the images are random textures per concept (so
    the tiny CLIP gives each concept its own region), the EEG their embedding response plus noise."""
    from PIL import Image

    from eegloop.embeddings import TINY_CLIP, image_embeddings
    from eegloop.protocol import SimulateConfig
    from eegloop.recorder.simulator import centred_embeddings, embedding_response
    from eegloop.stimuli import file_sha256

    rng = np.random.default_rng(seed)
    ch = ["Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2"]
    times = np.arange(100) / 100 - 0.2

    def concepts(n, start):
        return [f"{start + i:05d}_concept{start + i}" for i in range(n)]

    train_c = [c for c in concepts(n_train, 1) for _ in range(10)]
    train_f = [f"{c.split('_', 1)[1]}_{k % 10:02d}b.jpg" for k, c in enumerate(train_c)]
    test_c = concepts(200, 5001)
    test_f = [f"{c.split('_', 1)[1]}_00s.jpg" for c in test_c]
    paths = []
    for folder, cs, fs in (("training_images", train_c, train_f), ("test_images", test_c, test_f)):
        base = {}
        for c, f in zip(cs, fs):
            if c not in base:
                base[c] = rng.uniform(0, 255, (8, 8, 3))
            img = np.kron(base[c], np.ones((8, 8, 1))) + rng.normal(0, 25, (64, 64, 3))
            path = root / "images" / folder / c / f
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)
            paths.append(path)
    shas = [file_sha256(p) for p in paths]
    Z = image_embeddings(list(zip(paths, shas)), TINY_CLIP, None)
    zc = centred_embeddings({s: Z[s] for s in shas})
    cfg = SimulateConfig(seed=3, trial_jitter_ms=10)

    def eeg(shas_part, reps, amp):
        x = rng.standard_normal((len(shas_part), reps, len(ch), len(times))).astype(np.float32)
        for i, s in enumerate(shas_part):
            for r in range(reps):
                x[i, r, :, 20:80] += embedding_response(zc[s], len(ch), 100.0, cfg, i * 1000 + r, amp)[:, :60]
        return x

    np.save(root / "image_metadata.npy", {"train_img_concepts": train_c, "train_img_files": train_f,
                                          "test_img_concepts": test_c, "test_img_files": test_f})
    sub = root / "sub-01"
    sub.mkdir(parents=True, exist_ok=True)
    np.save(sub / "preprocessed_eeg_training.npy",
            {"preprocessed_eeg_data": eeg(shas[:len(train_c)], 4, 0.25), "ch_names": ch, "times": times})
    np.save(sub / "preprocessed_eeg_test.npy",
            {"preprocessed_eeg_data": eeg(shas[len(train_c):], 80, 0.25), "ch_names": ch, "times": times})


def part_things(args, tmp: Path) -> dict:
    import yaml

    from eegloop.embeddings import TINY_CLIP

    root = tmp / "things"
    t0 = time.perf_counter()
    write_things(root, args.things_train_concepts)
    write_s = time.perf_counter() - t0
    proto = yaml.safe_load((REPO / "protocols" / "things-eeg2.yaml").read_text())
    proto["teacher"] = {"enabled": True, "model": TINY_CLIP, "pretrained": None}
    proto["stimuli"] = {"folder": str(root / "images")}
    ppath = tmp / "things-tiny.yaml"
    ppath.write_text(yaml.safe_dump(proto))
    env = dict(os.environ, EEGLOOP_DATA=str(tmp / "things-data"))

    def cli(*a):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "eegloop", *map(str, a)], capture_output=True, text=True, env=env,
                           cwd=REPO)
        if r.returncode:
            sys.exit(f"eegloop {a[0]} failed: {r.stderr.strip()[-400:]}")
        return r.stdout, time.perf_counter() - t

    _, import_s = cli("import", root / "sub-01", "--format", "things-eeg2", "--subject", "things01", "--images",
                      root / "images", "--protocol", ppath)
    stdout, eval_s = cli("evaluate", "--subject", "things01", "--zero-shot", "--budget", str(args.budget), "--json")
    res = json.loads(stdout.strip().splitlines()[-1])
    out = {"train_concepts": args.things_train_concepts, "train_epochs": args.things_train_concepts * 40,
           "test_epochs": 200 * 80, "write_s": round(write_s, 1), "import_s": round(import_s, 1),
           "evaluate_s": round(eval_s, 1), "end_to_end_s": round(import_s + eval_s, 1),
           "scores": res["scores"], "p": res["pvalue"], "null_band": res["null_band"], "fits": res["fits"]}
    print("things", json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--sfreq", type=float, default=500.0)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--budget", type=float, default=60.0, help="encoder training budget, seconds (quick-train's)")
    ap.add_argument("--things-train-concepts", type=int, default=1654,
                    help="training concepts of the THINGS-shaped set (the real one: 1654, 10 images each)")
    ap.add_argument("--skip-things", action="store_true")
    ap.add_argument("--skip-simulated", action="store_true")
    args = ap.parse_args()
    from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

    os.environ.setdefault("EEGLOOP_CACHE_DIR", tempfile.mkdtemp(prefix="eegloop-bench-cache-"))
    result = {"cpu": cpu_name(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_simulated:
            result["simulated"] = part_simulated(args, tmp)
        if not args.skip_things:
            result["things"] = part_things(args, tmp)
    ratios = {}
    if "simulated" in result:
        s = result["simulated"]
        ratios["train_s_over_budget"] = round(s["train"]["seconds"] / args.budget, 3) if args.budget else None
        ratios["encode_ms_over_5ms"] = round(s["encode_ms"]["median"] / 5.0, 3)
        k = s["signal"]["scores"].get("50-way")
        if k:
            ratios["50way_top1_over_chance"] = round(k["top1"] / k["chance_top1"], 2)
            ratios["50way_top1_over_chance_no_signal"] = round(s["no_signal"]["scores"]["50-way"]["top1"]
                                                               / k["chance_top1"], 2)
    if "things" in result:
        t = result["things"]
        k = t["scores"].get("200-way") or t["scores"].get("200-way (all)") or next(iter(t["scores"].values()))
        ratios["things_end_to_end_over_300s"] = round(t["end_to_end_s"] / 300, 3)
        ratios["things_200way_top1_over_chance"] = round(k["top1"] / k["chance_top1"], 2)
    result["ratios"] = ratios
    print(json.dumps(result))


if __name__ == "__main__":
    main()
