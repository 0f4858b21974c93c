"""Seconds and scores per method: real faces/houses EEG, and simulated data of the paper's size.

    python benchmarks/bench_evaluate.py n170|p300|real [--data ../shared/data/n170] [--methods auto,riemann,...]
        [--permutations 0] [--baselines]
    python benchmarks/bench_evaluate.py sim [--epochs-data 2000] [--channels 128] [--classes 40] [--methods auto]

``n170``: every subject folder under --data is imported with protocols/n170.yaml (4 Muse channels,
1-30 Hz, artifact rejection at 50 µV); folds leave one file out (5 folds of whole files where a subject has
more), or 5 block-wise folds where a subject has one file. ``p300``: the same with protocols/p300.yaml, one
import per session folder; ``real``: both. Beside eegloop's methods the script fits the peer pipeline itself — pyriemann's
XdawnCovariances(estimator='oas') + TangentSpace + LogisticRegression, as in the eeg-notebooks N170
decoding example — on exactly the same epochs and folds. Prints AUC, balanced accuracy, permutation
p-value and seconds per subject and method; the last line is JSON.

``sim``: the virtual amplifier rendered offline, interleaved design, block-wise folds.
"""
from __future__ import annotations

import argparse
import atexit
import shutil
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import cpu_name  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]


def peer_pipeline(es, proto, folds, permutations: int, seed: int = 0) -> dict:
    """xDAWN covariances + tangent space + LR (pyriemann), on eegloop's preprocessed signal and folds."""
    from pyriemann.estimation import XdawnCovariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline

    from eegloop.decoder.evaluation import permutation_pvalue
    from eegloop.decoder.preprocessing import Preprocessor

    pre = Preprocessor.from_protocol(proto.preprocessing, proto.epochs, es.sfreq, es.tmin).with_representation("time")
    X = pre(es.data).astype(np.float64)
    t0 = time.perf_counter()

    def run(y):
        aucs, bals = [], []
        for tr, te in folds:
            clf = make_pipeline(XdawnCovariances(nfilter=min(4, X.shape[1]), estimator="oas"), TangentSpace(),
                                LogisticRegression(max_iter=1000)).fit(X[tr], y[tr])
            p = clf.predict_proba(X[te])[:, 1]
            aucs.append(roc_auc_score(y[te], p))
            bals.append(balanced_accuracy_score(y[te], (p > 0.5).astype(int)))
        return float(np.mean(aucs)), float(np.mean(bals))

    auc, bal = run(es.y)
    secs = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1000)
    null = [run(es.y[rng.permutation(len(es))])[0] for _ in range(permutations)]
    return {"auc": auc, "balanced_accuracy": bal, "p": permutation_pvalue(auc, null) if null else None,
            "seconds": secs}


#: the shared real recordings: protocol, event codes, where they lie
REAL = {"n170": ("n170.yaml", "1=house,2=face"), "p300": ("p300.yaml", "1=nontarget,2=target")}


def bench_real(args) -> dict:
    """Every subject of each dataset in ``args.what`` (n170, p300, or real: both)."""
    out = {}
    for name in (("n170", "p300") if args.what == "real" else (args.what,)):
        data = Path(args.data) if args.data else REPO.parent / "shared" / "data" / name
        out.update({(k if name == "n170" else f"{name}{k}"): v for k, v in bench_dataset(args, name, data).items()})
    return out


def bench_dataset(args, dataset: str, data: Path) -> dict:
    import warnings

    from eegloop.database import Database
    from eegloop.decoder import evaluate
    from eegloop.decoder.folds import make_folds
    from eegloop.decoder.methods import BASELINES
    from eegloop.protocol import load_protocol
    from eegloop.recorder.importers import import_recordings, parse_events

    warnings.filterwarnings("ignore")
    proto_file, events = REAL[dataset]
    proto = causal(load_protocol(REPO / "protocols" / proto_file), args.causal)
    tmp = Path(tempfile.mkdtemp(prefix="eegloop-bench-"))
    atexit.register(shutil.rmtree, tmp, True)  # a throw-away database (~1 GB at paper size): never left behind
    db = Database(f"sqlite:///{tmp / 'e.db'}", data_dir=tmp)
    methods = args.methods.split(",") + (list(BASELINES) if args.baselines else [])
    methods = list(dict.fromkeys(methods))
    out = {}
    for subj in sorted(p for p in Path(data).iterdir() if p.is_dir()):
        files = sorted(subj.rglob("*.csv"))
        if not files:
            continue
        code = "".join(ch for ch in subj.name if ch.isalnum())
        for folder in sorted({f.parent for f in files}):  # one import (session) per folder of files
            import_recordings(db, code, proto, sorted(folder.glob("*.csv")), "csv", parse_events(events),
                              ["TP9", "AF7", "AF8", "TP10"])
        es = db.load_epochs(code)
        # every file is a run: leave one out, at most 5 folds; one file: 5 block-wise folds
        split, k = ("run", min(5, len(files))) if len(files) > 1 else ("block", 5)
        t0 = time.perf_counter()
        rep = evaluate(es, proto, methods=methods, split=split, n_folds=k, permutations=args.permutations)
        total = time.perf_counter() - t0
        s, pv = rep.summary(), rep.pvalues()
        row = {m: {"auc": round(s[m]["auc"], 4), "balanced_accuracy": round(s[m]["balanced_accuracy"], 4),
                   "p": round(pv[m], 4) if m in pv else None, "seconds": round(rep.seconds[m], 1)} for m in s}
        from eegloop.decoder.evaluation import reject_artifacts

        kept = es.subset(reject_artifacts(es, proto).kept)
        folds = make_folds(kept, split, k, 0)
        peer = peer_pipeline(kept, proto, folds, args.permutations)
        row["peer_xdawn_ts_lr"] = {k_: (round(v, 4) if isinstance(v, float) else v) for k_, v in peer.items()}
        ctrl = evaluate(es, proto, methods=["auto"], split=split, n_folds=k, shuffle_labels=True)
        row["auto_shuffled_labels"] = {"auc": round(ctrl.summary()["auto"]["auc"], 4),
                                       "balanced_accuracy": round(ctrl.summary()["auto"]["balanced_accuracy"], 4),
                                       "p": None, "seconds": round(ctrl.seconds["auto"], 1)}
        out[code] = {"epochs": int(len(kept)), "rejected": int(len(es) - len(kept)),
                     "folds": f"{split}-wise x{len(folds)}", "selected": rep.selected, "methods": row,
                     "seconds_all_methods": round(total, 1)}
        print(f"\n{code}: {len(kept)} epochs ({len(es) - len(kept)} rejected), {split}-wise folds x{len(folds)}; "
              f"all eegloop methods {total:.1f} s; auto chose {rep.selected}")
        print(f"  {'method':<18}{'AUC':>8}{'bal.acc':>9}{'p':>8}{'seconds':>9}")
        for m, v in row.items():
            p = f"{v['p']:.3f}" if v.get("p") is not None else "-"
            print(f"  {m:<18}{v['auc']:>8.3f}{v['balanced_accuracy']:>9.3f}{p:>8}{v['seconds']:>9.1f}")
    return out


def causal(proto, on: bool):
    """With --causal: forward-only filters and no signal after the window (what decoding at the window's end costs)."""
    if not on:
        return proto
    from eegloop.protocol import protocol_from_dict

    d = proto.to_dict()
    d["preprocessing"]["causal"] = True
    d["epochs"]["right_margin_s"] = 0.0
    return protocol_from_dict(d, source=proto.source) if proto.source else protocol_from_dict(d)


def bench_sim(args) -> dict:
    from eegloop.decoder import evaluate
    from eegloop.paradigm.schedule import make_schedule
    from eegloop.protocol import protocol_from_dict
    from eegloop.recorder.simulator import simulate_epochs
    from eegloop.stimuli import Stimulus, StimulusSet

    per = max(1, args.epochs_data // args.classes)
    classes = {f"c{i:02d}": f"class {i}" for i in range(args.classes)}
    stim = StimulusSet(classes, tuple(Stimulus(Path(f"/x/{c}/{k}.png"), c, f"{c}-{k}") for c in classes
                                      for k in range(per)))
    d = {"stimuli": {"folder": "x", "classes": classes},
         "paradigm": {"order": "interleaved", "images_per_class": per, "block_s": 25, "image_s": 0.5, "runs": 4},
         "amplifier": {"channels": args.channels, "sfreq": args.sfreq, "simulate": {}},
         "teacher": {"enabled": False}}
    if args.like:  # another protocol's epochs, preprocessing and training, at this size (e.g. n170: 4 ch, 256 Hz)
        import yaml

        base = yaml.safe_load(Path(args.like).read_text())
        d = {**base, **d, "amplifier": {**base.get("amplifier", {}), "simulate": {}},
             "paradigm": {**base.get("paradigm", {}), "images_per_class": per, "runs": 1}}
        d["amplifier"].pop("channel_names", None) if args.channels != d["amplifier"].get("channels") else None
        d["amplifier"].update(channels=args.channels, sfreq=args.sfreq)
        d["epochs"] = {**base.get("epochs", {}), "reject_uv": None}  # simulated amplitudes are not a headset's
    proto = causal(protocol_from_dict(d), args.causal)
    t0 = time.perf_counter()
    es = simulate_epochs(proto, make_schedule(proto, stim))
    print(f"simulated {len(es)} epochs x {args.channels} ch x {es.data.shape[-1]} samples in "
          f"{time.perf_counter() - t0:.1f} s")
    from eegloop.decoder.methods import BASELINES

    if args.cli:
        return through_cli(args, proto, es)
    methods = list(dict.fromkeys(args.methods.split(",") + (list(BASELINES) if args.baselines else [])))
    t0 = time.perf_counter()
    rep = evaluate(es, proto, methods=methods, split="block", progress=print)
    print(f"all methods: {time.perf_counter() - t0:.1f} s")
    print(rep.table())
    s = rep.summary()
    return {m: {"top1": round(s[m]["top1"], 4), "balanced_accuracy": round(s[m]["balanced_accuracy"], 4),
                "seconds": round(rep.seconds[m], 1)} for m in s} | {"selected": rep.selected,
                                                                    "chance_top1": rep.chance["chance_top1"]}


def through_cli(args, proto, es) -> dict:
    """Store the epochs in a throw-away database and time `eegloop evaluate` itself, start to exit."""
    import shutil
    import subprocess
    import sys

    import yaml

    from eegloop.database import Database
    from eegloop.recorder.importers import import_epochset

    tmp = Path(tempfile.mkdtemp(prefix="eegloop-bench-"))
    atexit.register(shutil.rmtree, tmp, True)  # a throw-away database (~1 GB at paper size): never left behind
    db = Database(f"sqlite:///{tmp / 'eegloop.db'}", data_dir=tmp)
    import_epochset(db, "sim", proto, es)
    (tmp / "p.yaml").write_text(yaml.safe_dump(proto.to_dict()))
    cmd = [str(Path(sys.executable).with_name("eegloop")), "evaluate", "--subject", "sim", "--json"]
    cmd += ["--baselines"] if args.baselines else ["--methods", args.methods]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env={**os.environ, "EEGLOOP_DATA": str(tmp)}, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"{' '.join(cmd[1:])}: {secs:.1f} s wall ({len(es)} epochs)")
    return {"command": " ".join(cmd[1:]), "wall_seconds": round(secs, 1), "seconds": out.get("seconds"),
            "budget_stopped": out.get("budget_stopped", {}),
            "key_metric": {m: v.get(out["key_metric"]) for m, v in out["methods"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["n170", "p300", "real", "sim"])
    ap.add_argument("--data", help="n170/p300: a folder of subject folders (default: ../shared/data/<what>)")
    ap.add_argument("--methods", default="auto,riemann,lda_windowed,logreg_windowed,kd_erp")
    ap.add_argument("--baselines", action="store_true", help="add Table 1's baselines")
    ap.add_argument("--permutations", type=int, default=0)
    ap.add_argument("--epochs-data", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--like", help="sim: take epochs, preprocessing and training from this protocol file")
    ap.add_argument("--causal", action="store_true",
                    help="preprocessing.causal with epochs.right_margin_s 0: an epoch decodable when its window ends")
    ap.add_argument("--cli", action="store_true", help="sim: store the epochs, then time `eegloop evaluate` itself")
    args = ap.parse_args()
    if args.permutations < 0:
        ap.error("--permutations: must be >= 0")
    if args.what == "real" and args.data:
        ap.error("--data: one dataset at a time (n170 or p300)")
    if args.what != "sim" and args.data and not Path(args.data).is_dir():
        ap.error(f"--data: {args.data} is not a folder")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    res = bench_real(args) if args.what != "sim" else bench_sim(args)
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "what": args.what, "causal": args.causal,
                      "results": res, "ratios": ratios(args.what, res)}))


def ratios(what: str, res: dict) -> dict:
    """Ratios measured in this run, comparable across machines: n170, each method's AUC and seconds against the
    peer pipeline's (per subject); sim, each method's top-1 over chance and its seconds against the fastest's."""
    out = {}
    if what != "sim":
        for subject, r in res.items():
            m = r.get("methods", {})
            peer = m.get("peer_xdawn_ts_lr") or {}
            for name, v in m.items():
                if name == "peer_xdawn_ts_lr" or not isinstance(v, dict) or "auc" not in v:
                    continue
                if peer.get("auc"):
                    out[f"{subject} {name} AUC / peer"] = round(v["auc"] / peer["auc"], 3)
                if peer.get("seconds") and v.get("seconds") is not None:
                    out[f"{subject} {name} seconds / peer"] = round(v["seconds"] / peer["seconds"], 2)
        return out
    chance = res.get("chance_top1")
    timed = {k: v for k, v in res.items() if isinstance(v, dict) and "top1" in v}
    fastest = min((v.get("seconds") or float("inf") for v in timed.values()), default=float("inf"))
    for name, v in timed.items():
        if chance:
            out[f"{name} top1 / chance"] = round(v["top1"] / chance, 2)
        if v.get("seconds") and fastest not in (0, float("inf")):
            out[f"{name} seconds / fastest"] = round(v["seconds"] / fastest, 1)
    return out


if __name__ == "__main__":
    main()
