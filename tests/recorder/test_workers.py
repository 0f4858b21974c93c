"""Background workers cannot race their owners: the thread's target is handed its worker."""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from eegloop.lsl import configure_lsl

configure_lsl("machine")

from eegloop._worker import Worker  # noqa: E402
from eegloop.recorder.importers import Recording  # noqa: E402
from eegloop.recorder.player import Player  # noqa: E402


def test_target_gets_its_worker_before_anything_else_runs():
    seen = []

    def target(w):
        seen.append(w)
        while not w.stopping:
            w.wait_stop(0.01)

    for _ in range(200):
        w = Worker.of(target, "t").start()
        w.stop(5)
        assert seen[-1] is w and w.error is None and not w.alive
    assert len(seen) == 200


@pytest.mark.slow(weight=2)
def test_instant_replay_500_times_never_fails():
    """``replay --speed`` as fast as it goes, on a recording that takes no time: the player's thread reads its
    worker at once, before ``start()`` has returned. It used to see ``None`` about one run in six."""
    n = 40
    rec = Recording(np.arange(2 * n, dtype=np.float32).reshape(2, n), np.arange(n) / 100.0, 100.0, ["C3", "C4"],
                    [(0.05, "1"), (0.2, "2")], "tiny")
    tag = uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    for k in range(500):
        pl = Player(rec, f"race-{tag}", f"race-mk-{tag}", {"1": "a", "2": "b"}, speed=float("inf")).start()
        pl.wait()  # raises what ended the thread
        assert (pl.samples_pushed, pl.markers_pushed) == (n, 2), k
    assert threading.active_count() < 20  # every player's thread ended
    print(f"500 instant replays in {time.monotonic() - t0:.1f} s")
