"""The report's per-class accuracy intervals: never a bound beyond the accuracy (a rounding error made matplotlib
refuse a negative error bar, and the whole report with it, when a class was never, or always, decoded right)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from eegloop.report import _confusion_section, _wilson  # noqa: E402


def test_wilson_bounds_hold_the_accuracy():
    n = np.arange(1, 200)
    for k in (np.zeros_like(n), n, n // 3):
        lo, hi = _wilson(k, n)
        p = k / n
        assert (lo <= p).all() and (p <= hi).all() and (lo >= 0).all() and (hi <= 1).all()


def test_a_class_never_decoded_right_still_draws():
    import matplotlib.pyplot as plt

    cm = np.array([[0, 11, 0], [0, 11, 0], [2, 2, 7]])  # 0 of 11, 11 of 11: the bounds rounding made negative
    html = _confusion_section(plt, cm, ["a", "b", "c"], 1 / 3)
    assert html.count("data:image/png;base64") == 2
