"""``eegloop check-signal`` and ``eegloop check-timing``: the electrodes and the display, before a visit."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import PROTOCOL_FILE, Parents, protocol_for_run, say, silent
from .types import Integer, Number, OutputFile


def add_parser(commands, parents: Parents) -> None:
    """Add ``check-signal`` and ``check-timing`` to the top-level sub-parsers."""
    c = commands.add_parser("check-signal", parents=[parents.common],
                            help="every electrode pass/warn/fail: flat, saturated, line noise, RMS, drift (exit 1 on fail)")
    c.add_argument("--protocol", type=PROTOCOL_FILE, required=True)
    c.add_argument("--simulate", action="store_true", help="check the virtual amplifier (its bad-channel switches)")
    c.add_argument("--seconds", type=Number(1, 600, unit="seconds"), help="default: the protocol's signal_check.seconds")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=run)

    c = commands.add_parser("check-timing", parents=[parents.common],
                            help="measure the display's marker-to-photon delay with a photodiode on the patch")
    c.add_argument("--protocol", type=PROTOCOL_FILE, required=True)
    c.add_argument("--simulate", action="store_true",
                   help="against the virtual amplifier (its photodiode follows amplifier.simulate.display_latency_ms)")
    c.add_argument("--trials", type=Integer(5, 10_000), help="flashes (default: the protocol's timing.check_trials)")
    c.add_argument("--plot", type=OutputFile("the plot file", suffixes=(".png", ".pdf", ".svg")), metavar="PNG",
                   help="also draw the delays' histogram into this file (.png, .pdf or .svg)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop check-signal`` or ``eegloop check-timing``."""
    return {"check-signal": check_signal, "check-timing": check_timing}[args.command](args)


def check_signal(args) -> int:
    import json

    from ..lsl import configure_lsl
    from ..recorder.signal_check import check_signal

    proto = protocol_for_run(args)
    if args.seconds is not None:
        import dataclasses

        from ..errors import EegloopError

        if not 1 <= args.seconds <= 600:  # also refuses nan
            raise EegloopError(f"--seconds: 1 to 600, got {args.seconds:g}")

        proto = proto.replace(signal_check=dataclasses.replace(proto.signal_check, seconds=args.seconds))
    configure_lsl(proto.amplifier.lsl_scope)
    sim = None
    if args.simulate:
        from ..recorder.simulator import VirtualAmplifier

        sim = VirtualAmplifier(proto.amplifier, proto.amplifier.simulate, listen_markers=False).start()
    try:
        res = check_signal(proto, progress=silent if args.json else say)
    finally:
        if sim is not None:
            sim.stop()
    print(json.dumps(res.to_json()) if args.json else res.table())
    if res.verdict == "fail" and not args.json:
        print(f"signal check FAILED on {', '.join(res.failed())}: fix those electrodes before recording")
    return 1 if res.verdict == "fail" else 0


def check_timing(args) -> int:
    import json

    from ..timing_check import check_timing

    proto = protocol_for_run(args)
    res = check_timing(proto, simulate=args.simulate, trials=args.trials,
                       progress=silent if args.json else None)  # --json: the JSON alone
    if args.plot is not None:
        _plot_delays(res, args.plot)
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        for line in timing_lines(res):
            print(line)
    if res.n_found < 0.9 * res.n_stimuli:
        print(f"photodiode onsets found for only {res.n_found} of {res.n_stimuli} flashes: check the sensor",
              file=sys.stderr)
        return 1
    return 0


def timing_lines(res) -> list[str]:
    """What ``check-timing`` prints of its result: its lines, the delays' histogram in text, the offset to use."""
    import numpy as np

    lines = list(res.lines())
    counts, edges = np.histogram(res.delays_ms, bins=min(12, max(3, len(res.delays_ms) // 5)))
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        lines.append(f"  {a:7.2f}-{b:7.2f} ms {'#' * int(round(40 * c / max(counts.max(), 1)))} {c}")
    lines.append(f"put this in the protocol so that epochs start at the light, not at the marker:\n"
                 f"  timing:\n    static_offset_ms: {res.suggested_offset_ms:g}")
    return lines


def _plot_delays(res, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._files import atomic_path, umask_mode
    from ..errors import EegloopError
    from ..recorder.timing import plot_delays

    fig, ax = plt.subplots(figsize=(5, 3))
    plot_delays(ax, res, "flashes", bins=30)
    fig.tight_layout()
    try:
        with atomic_path(path, mode=umask_mode()) as tmp:  # the format from the suffix (.png, .pdf, .svg), kept by tmp
            fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".").lower() or "png")
    except OSError as exc:
        raise EegloopError(f"--plot: cannot write {path} ({exc.strerror or type(exc).__name__})") from None
    finally:
        plt.close(fig)
