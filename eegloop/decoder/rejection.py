"""Artifact rejection before any fit: peak-to-peak and flat channels, counted per class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..protocol import Protocol
from ..types import EpochSet
from .preprocessing import Preprocessor

__all__ = ["Rejection", "reject_artifacts"]


@dataclass
class Rejection:
    """Epochs dropped as artifacts (``epochs.reject_uv`` / ``epochs.flat_uv``), counted per class."""

    kept: np.ndarray  # indices kept
    by_class: dict  # class id -> {"kept": n, "peak_to_peak": n, "flat": n}
    reject_uv: Optional[float]
    flat_uv: Optional[float]

    @property
    def n_rejected(self) -> int:
        return int(sum(v["peak_to_peak"] + v["flat"] for v in self.by_class.values()))

    def to_json(self) -> dict:
        return {"reject_uv": self.reject_uv, "flat_uv": self.flat_uv, "rejected": self.n_rejected,
                "kept": int(len(self.kept)), "by_class": self.by_class}

    def describe(self) -> str:
        if self.reject_uv is None and self.flat_uv is None:
            return "artifact rejection off (epochs.reject_uv and epochs.flat_uv are null)"
        total = len(self.kept) + self.n_rejected
        worst = sorted(self.by_class.items(), key=lambda kv: -(kv[1]["peak_to_peak"] + kv[1]["flat"]))[:3]
        per = ", ".join(f"{c} {v['peak_to_peak'] + v['flat']}" for c, v in worst if v["peak_to_peak"] + v["flat"])
        return (f"artifact rejection: {self.n_rejected} of {total} epochs dropped (peak-to-peak > "
                f"{self.reject_uv} µV or flat < {self.flat_uv} µV)" + (f"; most in {per}" if per else ""))


def reject_artifacts(es: EpochSet, protocol: Protocol) -> Rejection:
    """Peak-to-peak and flat-channel rejection on the band-passed analysis window, in microvolts.

    Like MNE's ``reject``/``flat``: an epoch goes when any channel's peak-to-peak amplitude exceeds
    ``epochs.reject_uv`` or falls below ``epochs.flat_uv``.
    """
    e = protocol.epochs
    n = len(es)
    ptp_bad = np.zeros(n, bool)
    flat_bad = np.zeros(n, bool)
    if (e.reject_uv is not None or e.flat_uv is not None) and n:
        pre = Preprocessor.from_protocol(protocol.preprocessing, e, es.sfreq, es.tmin)
        ptp = pre.peak_to_peak(es.data)
        if e.reject_uv is not None:
            ptp_bad = (ptp > e.reject_uv).any(1)
        if e.flat_uv is not None:
            flat_bad = (ptp < e.flat_uv).any(1) & ~ptp_bad
    by_class = {}
    for c in es.class_ids:
        m = es.labels == c
        by_class[c] = {"kept": int((m & ~ptp_bad & ~flat_bad).sum()), "peak_to_peak": int((m & ptp_bad).sum()),
                       "flat": int((m & flat_bad).sum())}
    return Rejection(np.flatnonzero(~ptp_bad & ~flat_bad), by_class, e.reject_uv, e.flat_uv)

