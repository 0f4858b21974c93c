"""The schedule: a pure function; blocked vs interleaved designs."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from eegloop.paradigm.schedule import make_schedule
from eegloop.protocol import load_protocol, protocol_from_dict
from eegloop.stimuli import Stimulus, StimulusSet

REPO = Path(__file__).resolve().parents[2]


def fake_set(n_classes: int, per_class: int) -> StimulusSet:
    classes = {f"c{i:02d}": f"class {i}" for i in range(n_classes)}
    imgs = tuple(Stimulus(Path(f"/img/{c}/{k}.png"), c, f"{c}{k}") for c in classes for k in range(per_class))
    return StimulusSet(classes=classes, images=imgs)


@pytest.mark.parametrize("name", ["ferrante2023", "interleaved"])
def test_paper_sized_schedule(name):
    p = load_protocol(REPO / "protocols" / f"{name}.yaml")
    s = make_schedule(p, fake_set(40, 60))
    assert len(s.trials) == 2000 and len(s.blocks) == 40 and len(s.runs) == 4
    assert all(len(r.blocks) == 10 for r in s.runs)
    assert s.total_s == 1400
    assert all(len(b.trials) == 50 for b in s.blocks)
    # each chosen image shown once
    assert len({t.image for t in s.trials}) == 2000
    assert Counter(t.class_id for t in s.trials) == {f"c{i:02d}": 50 for i in range(40)}
    assert [t.trial for t in s.trials] == list(range(1, 2001))
    if name == "ferrante2023":
        assert all(len(b.classes) == 1 for b in s.blocks)
        assert len({b.classes[0] for b in s.blocks}) == 40
    else:
        for run in s.runs:
            per = Counter(t.class_id for t in run.trials)
            assert max(per.values()) - min(per.values()) <= 1  # balanced per run
            seq = [t.class_id for t in run.trials]
            assert all(a != b for a, b in zip(seq, seq[1:]))  # never twice in a row
        assert all(len(b.classes) > 10 for b in s.blocks)


def test_deterministic_and_seeded():
    p = load_protocol(REPO / "protocols" / "interleaved.yaml")
    a, b = make_schedule(p, fake_set(40, 50)), make_schedule(p, fake_set(40, 50))
    assert a == b
    p2 = p.replace(paradigm=p.paradigm.__class__(**{**p.to_dict()["paradigm"], "seed": 7,
                                                    "screen": p.paradigm.screen}))
    assert [t.class_id for t in make_schedule(p2, fake_set(40, 50)).trials] != [t.class_id for t in a.trials]


def test_blocked_repeats_classes_across_runs():
    p = protocol_from_dict({"stimuli": {"folder": "x"}, "paradigm": {
        "order": "blocked", "block_s": 2, "image_s": 0.5, "images_per_class": 4, "repeats": 3, "runs": 3}})
    s = make_schedule(p, fake_set(4, 4))
    for run in s.runs:
        assert sorted(c for b in run.blocks for c in b.classes) == ["c00", "c01", "c02", "c03"]
