"""The design a protocol implies: trials per block, blocks, runs and total time, checked to fit together."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = ["Design", "calibration_blocks"]


def calibration_blocks(minutes: float, block_seconds, have_s: float = 0.0) -> int:
    """How many of the blocks (each ``block_seconds`` of stimuli, in the order shown) ``session.calibration_min``
    keeps: whole blocks until ``minutes`` of stimuli are in, ``have_s`` seconds (blocks already recorded) counted
    first. The visit and ``protocol check`` both count this way."""
    shown, k = have_s, 0
    for s in block_seconds:
        if shown >= minutes * 60 - 1e-9:
            break
        shown, k = shown + s, k + 1
    return k


@dataclass(frozen=True)
class Design:
    """The design a protocol implies: what will be shown and for how long."""

    n_classes: int
    images_per_class: int
    repeats: int
    trials_per_block: int
    n_blocks: int
    runs: int
    blocks_per_run: int
    order: str
    n_trials: int
    total_s: float

    @property
    def total_min(self) -> float:
        return self.total_s / 60.0

    def describe(self, classes: dict[str, str] | None = None) -> str:
        lines = [
            f"order:            {self.order}",
            f"classes:          {self.n_classes}",
            f"images per class: {self.images_per_class} (each shown {self.repeats}x)",
            f"trials:           {self.n_trials} ({self.trials_per_block} per block)",
            f"blocks:           {self.n_blocks} in {self.runs} runs of {self.blocks_per_run}",
            f"total time:       {self.total_s:.0f} s = {self.total_min:.1f} min (blocks + pauses)",
        ]
        if classes:
            shown = ", ".join(f"{k} ({v})" if v != k else k for k, v in list(classes.items())[:8])
            more = f", ... (+{len(classes) - 8})" if len(classes) > 8 else ""
            lines.append(f"class list:       {shown}{more}")
        return "\n".join(lines)


_MAX_TRIALS = 10_000_000  # about 6 days of images at 20 per second


def _design(p, n_classes: int, where: str) -> Design:
    """The design of paradigm ``p`` (a :class:`~.schema.ParadigmConfig`) for ``n_classes`` classes; ``where`` starts
    every error message (the file)."""
    ratio = p.block_s / p.image_s
    if not 0.5 <= ratio <= 1_000_000:
        raise ProtocolError(
            f"{where}paradigm.image_s: a block of {p.block_s:g} s must hold 1 to 1000000 images of "
            f"{p.image_s:g} s, got {p.image_s:g}"
        )
    tpb = round(ratio)
    if abs(ratio - tpb) > 1e-6:
        raise ProtocolError(
            f"{where}paradigm.block_s: {p.block_s} s is not a whole number of images of {p.image_s} s"
        )
    n_trials = n_classes * p.images_per_class * p.repeats
    if n_trials > _MAX_TRIALS:  # a schedule of this many trials would not fit in memory
        raise ProtocolError(
            f"{where}paradigm.images_per_class: {n_classes} classes x {p.images_per_class} images x {p.repeats} "
            f"repeats = {n_trials} trials, at most {_MAX_TRIALS}"
        )
    if p.order == "blocked" and p.images_per_class % tpb:
        raise ProtocolError(
            f"{where}paradigm.images_per_class: blocked order needs a multiple of the {tpb} images per block, "
            f"got {p.images_per_class}"
        )
    if n_trials % tpb:
        raise ProtocolError(
            f"{where}paradigm.block_s: {n_trials} trials do not fill whole blocks of {tpb} images"
        )
    n_blocks = n_trials // tpb
    bpr = p.blocks_per_run if p.blocks_per_run is not None else n_blocks // p.runs
    if bpr * p.runs != n_blocks:
        field_name = "blocks_per_run" if p.blocks_per_run is not None else "runs"
        raise ProtocolError(
            f"{where}paradigm.{field_name}: {p.runs} runs x {bpr} blocks != {n_blocks} blocks "
            f"({n_classes} classes x {p.images_per_class} images x {p.repeats} repeats / {tpb} per block)"
        )
    total = n_blocks * (tpb * p.image_s + p.pause_s)
    return Design(
        n_classes=n_classes,
        images_per_class=p.images_per_class,
        repeats=p.repeats,
        trials_per_block=tpb,
        n_blocks=n_blocks,
        runs=p.runs,
        blocks_per_run=bpr,
        order=p.order,
        n_trials=n_trials,
        total_s=total,
    )
