"""Display timing from a photodiode: when did each image's light reach the screen?

A photodiode taped over the paradigm's patch (``paradigm.photodiode``) and wired to an auxiliary input of
the amplifier turns every onset into a step in one channel (``timing.photodiode_channel``).
:func:`photon_onset` finds that step after a stimulus marker to a fraction of a sample (the crossing of
the half-way level, interpolated between the two samples around it); the recorder measures every
stimulus's marker-to-photon delay this way, and :func:`summarize` turns the delays into the figure a lab
needs: the static offset to put in ``timing.static_offset_ms``, and how much the display jitters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

__all__ = ["photon_onset", "TimingSummary", "summarize", "plot_delays"]


def photon_onset(x: np.ndarray, ts: np.ndarray, marker_t: float, max_delay_s: float = 0.15,
                 invert: bool = False) -> Optional[float]:
    """LSL time at which the photodiode signal ``x`` (with sample times ``ts``) first rises through its
    half-way level within ``max_delay_s`` after ``marker_t`` (from 10 ms before it), or None.

    The half-way level lies between the lowest and highest value in that window; a window whose range is
    not clearly above the signal's sample-to-sample noise (no flash, a disconnected sensor) has no onset.
    """
    x = np.asarray(x, np.float64)
    ts = np.asarray(ts, np.float64)
    sel = (ts >= marker_t - 0.010) & (ts <= marker_t + max_delay_s)
    if sel.sum() < 3:
        return None
    v, t = (-x[sel] if invert else x[sel]), ts[sel]
    if not np.isfinite(v).all():
        return None
    lo, hi = float(v.min()), float(v.max())
    d = np.diff(v)
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    if hi - lo <= max(8 * noise, 1e-9 * max(1.0, abs(hi))):
        return None
    thr = (lo + hi) / 2
    above = v >= thr
    rises = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    if not rises.size:
        return None
    i = int(rises[0])
    frac = (thr - v[i - 1]) / (v[i] - v[i - 1])
    return float(t[i - 1] + frac * (t[i] - t[i - 1]))


@dataclass
class TimingSummary:
    """Marker-to-photon delays of a set of stimuli, ms."""

    n_stimuli: int
    n_found: int
    median_ms: float
    mean_ms: float
    sd_ms: float
    p5_ms: float
    p95_ms: float
    min_ms: float
    max_ms: float
    static_offset_ms: float  # the offset the recording used (timing.static_offset_ms)
    delays_ms: list = field(default_factory=list)

    @property
    def suggested_offset_ms(self) -> float:
        """The value for ``timing.static_offset_ms``: the median delay, to 0.1 ms."""
        return round(self.median_ms, 1)

    @property
    def residual_ms(self) -> float:
        """How far the epochs' onsets are from the light, on the median (median delay - offset used)."""
        return round(self.median_ms - self.static_offset_ms, 2)

    def to_json(self) -> dict:
        d = asdict(self)
        d["suggested_offset_ms"] = self.suggested_offset_ms
        d["residual_ms"] = self.residual_ms
        return d

    def lines(self) -> list[str]:
        return [f"photodiode onsets found: {self.n_found} of {self.n_stimuli} stimuli",
                f"marker-to-photon delay: median {self.median_ms:.2f} ms, mean {self.mean_ms:.2f} ± {self.sd_ms:.2f} "
                f"ms (sd), 5-95 % {self.p5_ms:.2f}-{self.p95_ms:.2f} ms, range {self.min_ms:.2f}-{self.max_ms:.2f} ms",
                f"offset applied when cutting epochs (timing.static_offset_ms): {self.static_offset_ms:g} ms; "
                f"epochs are {self.residual_ms:+.2f} ms from the light on the median"]


def plot_delays(ax, t: "TimingSummary", what: str = "stimuli", bins: int = 40) -> None:
    """Draw ``t``'s delays on the matplotlib axes ``ax``: histogram, median, and the static offset used."""
    ax.hist(t.delays_ms, bins=bins, color="#4477aa")
    ax.axvline(t.median_ms, color="k", ls="--", label=f"median {t.median_ms:.2f} ms")
    ax.axvline(t.static_offset_ms, color="#cc3311", ls=":", label=f"static offset {t.static_offset_ms:g} ms")
    ax.set_xlabel("marker-to-photon delay (ms)")
    ax.set_ylabel(what)
    ax.legend(fontsize=8)


def summarize(delays_ms: Sequence[float], n_stimuli: int, static_offset_ms: float = 0.0) -> Optional[TimingSummary]:
    """The summary of ``delays_ms`` (None when no onset was found)."""
    d = np.asarray([x for x in delays_ms if x is not None], np.float64)
    if not d.size:
        return None
    q = np.percentile(d, [5, 50, 95])
    return TimingSummary(n_stimuli=int(n_stimuli), n_found=int(d.size), median_ms=round(float(q[1]), 3),
                         mean_ms=round(float(d.mean()), 3), sd_ms=round(float(d.std(ddof=1)) if d.size > 1 else 0.0, 3),
                         p5_ms=round(float(q[0]), 3), p95_ms=round(float(q[2]), 3), min_ms=round(float(d.min()), 3),
                         max_ms=round(float(d.max()), 3), static_offset_ms=float(static_offset_ms),
                         delays_ms=[round(float(x), 3) for x in d])
