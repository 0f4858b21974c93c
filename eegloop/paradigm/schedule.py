"""The schedule: a pure function from protocol + stimulus set to runs -> blocks -> trials.

``order: blocked`` is the paper's design: one class per block. ``order:
interleaved`` spreads the classes over every block, balanced per run, seeded,
with no class twice in a row. Each image is shown ``repeats`` times per
session (once by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..protocol import Design, Protocol
from ..stimuli import StimulusSet

__all__ = ["Trial", "Block", "Run", "Schedule", "make_schedule"]


@dataclass(frozen=True)
class Trial:
    """One image presentation."""

    run: int  # 1-based
    block: int  # 1-based, counted over the session
    trial: int  # 1-based, counted over the session
    position: int  # 0-based position inside the block
    class_id: str
    image: Path
    image_sha256: str = ""


@dataclass(frozen=True)
class Block:
    run: int
    block: int
    trials: tuple[Trial, ...]

    @property
    def classes(self) -> list[str]:
        return sorted({t.class_id for t in self.trials})


@dataclass(frozen=True)
class Run:
    run: int
    blocks: tuple[Block, ...]

    @property
    def trials(self) -> list[Trial]:
        return [t for b in self.blocks for t in b.trials]


@dataclass(frozen=True)
class Schedule:
    """What the paradigm will show, in order."""

    runs: tuple[Run, ...]
    design: Design
    image_s: float
    pause_s: float
    block_s: float

    @property
    def blocks(self) -> list[Block]:
        return [b for r in self.runs for b in r.blocks]

    @property
    def trials(self) -> list[Trial]:
        return [t for r in self.runs for t in r.trials]

    @property
    def total_s(self) -> float:
        return self.design.total_s


def _no_repeats(seq: list[str], rng: np.random.Generator) -> list[str]:
    """Shuffle ``seq`` so no class appears twice in a row (greedy with restarts)."""
    for _ in range(200):
        counts: dict[str, int] = {}
        for c in seq:
            counts[c] = counts.get(c, 0) + 1
        out: list[str] = []
        ok = True
        for _i in range(len(seq)):
            choices = [c for c, n in counts.items() if n > 0 and (not out or c != out[-1])]
            if not choices:
                ok = False
                break
            # prefer the most frequent remaining classes to avoid dead ends
            top = max(counts[c] for c in choices)
            weights = np.array([counts[c] + (len(seq) if counts[c] == top else 0) for c in choices], float)
            c = choices[rng.choice(len(choices), p=weights / weights.sum())]
            out.append(c)
            counts[c] -= 1
        if ok:
            return out
    raise ValueError("cannot order the trials without a class twice in a row")  # pragma: no cover


def make_schedule(protocol: Protocol, stimuli: StimulusSet) -> Schedule:
    """Build the session's schedule.

    Parameters
    ----------
    protocol : Protocol
        Its ``paradigm`` section sets timings, runs, order, repeats and seed.
    stimuli : StimulusSet
        Images per class; the first ``images_per_class`` (after a seeded
        shuffle) of each class are used.

    Returns
    -------
    Schedule
        Runs -> blocks -> trials. Deterministic for a given seed.
    """
    p = protocol.paradigm
    design = protocol.design(len(stimuli.classes))
    rng = np.random.default_rng(p.seed)
    by_class = stimuli.by_class()
    chosen = {}
    for c in stimuli.classes:
        imgs = by_class[c]
        idx = rng.permutation(len(imgs))[: p.images_per_class]
        chosen[c] = [imgs[i] for i in idx]
    tpb = design.trials_per_block

    # a flat list of blocks, each a list of (class, stimulus)
    blocks: list[list] = []
    if p.order == "blocked":
        chunks_per_class = p.images_per_class // tpb
        for rep in range(p.repeats):
            order = list(stimuli.classes)
            rng.shuffle(order)
            for k in range(chunks_per_class):
                for c in order:
                    imgs = list(chosen[c][k * tpb:(k + 1) * tpb])
                    rng.shuffle(imgs)
                    blocks.append([(c, s) for s in imgs])
        # keep each repeat's blocks together; runs are consecutive slices
    else:
        # deal every (class, image, repeat) to runs so each run is balanced per class
        per_run: list[list] = [[] for _ in range(design.runs)]
        offset = 0
        for c in stimuli.classes:
            items = [(c, s) for _r in range(p.repeats) for s in chosen[c]]
            rng.shuffle(items)
            for j, it in enumerate(items):
                per_run[(j + offset) % design.runs].append(it)
            offset += len(items)
        for items in per_run:
            pool: dict[str, list] = {}
            for c, s in items:
                pool.setdefault(c, []).append(s)
            order = _no_repeats([c for c, _ in items], rng)
            seq = [(c, pool[c].pop()) for c in order]
            for k in range(0, len(seq), tpb):
                blocks.append(seq[k:k + tpb])
    runs = []
    trial_no = 0
    for r in range(design.runs):
        rblocks = []
        for b in range(design.blocks_per_run):
            bi = r * design.blocks_per_run + b
            trials = []
            for pos, (c, s) in enumerate(blocks[bi]):
                trial_no += 1
                trials.append(Trial(run=r + 1, block=bi + 1, trial=trial_no, position=pos, class_id=c,
                                    image=s.path, image_sha256=s.sha256))
            rblocks.append(Block(run=r + 1, block=bi + 1, trials=tuple(trials)))
        runs.append(Run(run=r + 1, blocks=tuple(rblocks)))
    return Schedule(runs=tuple(runs), design=design, image_s=p.image_s, pause_s=p.pause_s, block_s=p.block_s)
