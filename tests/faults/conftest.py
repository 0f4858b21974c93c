"""Fault tests: a short real-time visit (PsychoPy under Xvfb, LSL on this machine, SQLite), a fault injected
mid-block, and the accounting checked afterwards from the database and the raw files alone."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fault_protocol(short_protocol):
    """3 blocks of 12 images (0.1 s each) in one run: long enough to hit a block in its middle."""

    def make(**sections):
        base = {"paradigm": {"block_s": 1.2, "image_s": 0.1, "pause_s": 0.3, "images_per_class": 18, "runs": 1}}
        for k, v in sections.items():
            base[k] = {**base.get(k, {}), **v}
        return short_protocol(**base)

    return make
