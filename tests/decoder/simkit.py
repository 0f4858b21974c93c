"""Simulated data for the decoder tests: a fake stimulus set and a small interleaved protocol."""
from __future__ import annotations

from pathlib import Path

from eegloop.protocol import protocol_from_dict
from eegloop.stimuli import Stimulus, StimulusSet


def fake_set(n_classes, per_class):
    classes = {f"c{i}": f"class {i}" for i in range(n_classes)}
    return StimulusSet(classes, tuple(Stimulus(Path(f"/x/{c}/{k}.png"), c, f"{c}-{k}") for c in classes
                                      for k in range(per_class)))


def sim_protocol(order="interleaved", max_epochs=25, **kw):
    d = {"stimuli": {"folder": "x", "classes": {f"c{i}": f"class {i}" for i in range(4)}},
         "paradigm": {"block_s": 5, "image_s": 0.5, "images_per_class": 30, "runs": 3, "order": order},
         "amplifier": {"channels": 16, "sfreq": 250, "simulate": {"snr": 0.3}},
         "training": {"max_epochs": max_epochs, "n_folds": 3}, "teacher": {"enabled": False}}
    for k, v in kw.items():
        d.setdefault(k, {}).update(v)
    return protocol_from_dict(d)
