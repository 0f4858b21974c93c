"""Soak: a paper-scale visit on the simulator, memory printed after every block.

    python benchmarks/bench_soak.py [--blocks 40] [--channels 128] [--sfreq 1000] [--out DIR]

The protocol is the paper's design (40 classes x 50 images, 25 s blocks of 0.5 s
images, 10 s pauses, 4 runs; interleaved order, drawn stimuli), recorded for
real: a PsychoPy window (Xvfb when there is no display), the virtual amplifier
on LSL, the recorder, raw BrainVision files and a SQLite database, exactly as
``eegloop record --simulate``. ``--blocks N`` stops after N blocks (all 40 take
23.3 minutes). The visit runs as one process per role (presenter, acquisition,
virtual amplifier, and this one); after each block it prints their resident
memory together now and its peak so far (sampled every 0.25 s); the goal is
memory at the last block within 10 % of memory at block 5. The last line (JSON)
also has each process's memory at the last block.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
import threading
import time
from pathlib import Path

from _common import cpu_name  # benchmarks/ is on sys.path when a script runs


def draw_stimuli(folder: Path, n_classes: int, per_class: int, size: int = 64) -> dict:
    """Small distinct PNGs, one folder per class (the soak measures the recording, not image decoding)."""
    import numpy as np
    from PIL import Image

    classes = {}
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        cid = f"c{c:02d}"
        classes[cid] = f"class {c}"
        d = folder / cid
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, 3)
        for k in range(per_class):
            img = np.empty((size, size, 3), np.uint8)
            img[:] = base
            img[k % size, :] = 255 - base
            Image.fromarray(img).save(d / f"{cid}_{k:03d}.png")
    return classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=40, help="stop after this many blocks (paper: 40)")
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--sfreq", type=float, default=1000.0)
    ap.add_argument("--classes", type=int, default=40)
    ap.add_argument("--out", type=Path, help="keep the database and raw files here (default: a temp folder)")
    args = ap.parse_args()
    if args.classes < 4 or args.classes % 4 or args.classes > 1000:
        ap.error(f"--classes: a multiple of 4 up to 1000 (50 images a class fill one block; 4 runs), got {args.classes}")
    if not 1 <= args.blocks <= args.classes:  # one block per class
        ap.error(f"--blocks: must be 1..{args.classes}, got {args.blocks}")
    if not (1 <= args.channels <= 1024 and 0 < args.sfreq <= 100_000):
        ap.error("--channels must be 1..1024 and --sfreq 0..100000")

    import psutil

    from eegloop._machine import StealMeter
    from eegloop.database import Database
    from eegloop.protocol import protocol_from_dict
    from eegloop.session import STEAL_NOTE_PCT, record_session

    out = args.out or Path(tempfile.mkdtemp(prefix="eegloop-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    classes = draw_stimuli(out / "stimuli", args.classes, 50)
    proto = protocol_from_dict({
        "name": "soak",
        "stimuli": {"folder": str(out / "stimuli"), "classes": classes},
        "paradigm": {"block_s": 25.0, "image_s": 0.5, "pause_s": 10.0, "images_per_class": 50, "runs": 4,
                     "order": "interleaved", "wait_for_space": False, "instructions": "",
                     "screen": {"fullscreen": False, "size": [640, 480], "image_size_px": 200}},
        "amplifier": {"channels": args.channels, "sfreq": args.sfreq, "stream_name": f"soak-{time.time_ns()}",
                      "simulate": {}},
        "teacher": {"enabled": False},
    }, source=str(out / "soak.yaml"))
    n_blocks = proto.design().n_blocks
    skip = set(range(args.blocks + 1, n_blocks + 1))
    db = Database(f"sqlite:///{out / 'soak.db'}", data_dir=out)
    proc = psutil.Process()

    def by_process() -> dict:
        """Resident memory of this process and its children (the visit's roles, an Xvfb it started)."""
        out = {"orchestrator": proc.memory_info().rss}
        for c in proc.children(recursive=True):
            try:
                out[c.name()] = out.get(c.name(), 0) + c.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return out

    def total_rss() -> int:
        return sum(by_process().values())

    peak = {"rss": total_rss()}
    last_by: dict = {}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.25):
            peak["rss"] = max(peak["rss"], total_rss())
    threading.Thread(target=sample, daemon=True).start()
    rows = []
    t0 = time.monotonic()
    mb = 1 / 2**20
    # the share of the CPU the host took in each block and its pause (steal): on a virtual machine dropped
    # frames follow it (each block's dropped frames are read back from the database at the end)
    steal = StealMeter()

    def progress(line: str) -> None:
        m = re.match(r"run (\d+)/\d+\s+block (\d+)/\d+", line)
        if not m:
            print(line, flush=True)
            return
        last_by.update(by_process())
        rss = sum(last_by.values())
        peak["rss"] = max(peak["rss"], rss)
        st = steal.lap()
        rows.append({"block": int(m.group(2)), "t_s": round(time.monotonic() - t0, 1), "rss_mb": round(rss * mb, 1),
                     "peak_mb": round(peak["rss"] * mb, 1), "steal_pct": None if st is None else round(st, 1)})
        r = rows[-1]
        print(f"block {r['block']:3d}  {r['t_s']:7.1f} s  rss {r['rss_mb']:8.1f} MB  peak {r['peak_mb']:8.1f} MB  "
              f"steal {r['steal_pct'] if st is not None else '-':>5} %  | {line.split('  ', 2)[-1]}", flush=True)

    print(f"soak: {args.blocks} of {n_blocks} blocks, {args.channels} ch x {args.sfreq:g} Hz, {args.classes} classes; "
          f"{platform.processor() or platform.machine()}; data in {out}", flush=True)
    res = record_session(proto, "soak", db, simulate=True, progress=progress, skip_blocks=skip)
    stop.set()
    at = {r["block"]: r["rss_mb"] for r in rows}
    ref = at.get(5) or (rows[min(4, len(rows) - 1)]["rss_mb"] if rows else float("nan"))
    last = rows[-1]["rss_mb"] if rows else float("nan")
    summary = {"blocks": len(rows), "channels": args.channels, "sfreq": args.sfreq,
               "rss_block5_mb": ref, "rss_last_mb": last, "growth_pct": round(100 * (last - ref) / ref, 1),
               "peak_mb": round(peak["rss"] * mb, 1), "epochs": res.epochs, "expected_epochs": res.expected_epochs,
               "lost_samples": res.lost_samples, "dropped_frames": res.dropped_frames,
               "seconds": round(time.monotonic() - t0, 1), "cpu": cpu_name(),
               "rss_last_by_process_mb": {k: round(v * mb, 1) for k, v in last_by.items()},
               "scheduling": res.scheduling}
    from sqlalchemy import func, select

    from eegloop.database.models import BlockRow, EventRow, TrialTimingRow

    with db.session() as s:  # the frames dropped while each block's images were shown
        q = (select(BlockRow.index, func.sum(TrialTimingRow.dropped_frames))
             .join(EventRow, EventRow.block_id == BlockRow.id)
             .join(TrialTimingRow, TrialTimingRow.event_id == EventRow.id)
             .where(EventRow.session_id == res.session_id)
             .group_by(BlockRow.index))
        dropped = {int(b): int(n or 0) for b, n in s.execute(q)}
    for r in rows:
        r["dropped"] = dropped.get(r["block"], 0)
    # blocks (and their pause) in which the host took under / over the share a visit's timing line names
    calm = [r for r in rows if r["steal_pct"] is not None and r["steal_pct"] < STEAL_NOTE_PCT]
    stolen = [r for r in rows if r["steal_pct"] is not None and r["steal_pct"] >= STEAL_NOTE_PCT]
    summary["by_steal"] = {
        "blocks_steal_under_5pct": len(calm), "dropped_in_them": sum(r["dropped"] for r in calm),
        "blocks_steal_over_5pct": len(stolen), "dropped_in_them_over": sum(r["dropped"] for r in stolen),
        "steal_pct_max": None if steal.max_pct is None else round(steal.max_pct, 1)}
    # ratios measured in this run, comparable across machines (and across run lengths)
    expected_s = summary["blocks"] * (proto.paradigm.block_s + proto.paradigm.pause_s)
    summary["ratios"] = {"rss_last / rss_block5": round(last / ref, 4) if ref == ref and ref else None,
                         "epochs / expected": round(res.epochs / max(res.expected_epochs, 1), 4),
                         "wall / paradigm time": round(summary["seconds"] / expected_s, 3) if expected_s else None}
    print(f"memory at block {summary['blocks']}: {last:.1f} MB vs {ref:.1f} MB at block 5 "
          f"({summary['growth_pct']:+.1f} %; goal within 10 %); peak {summary['peak_mb']:.1f} MB")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
