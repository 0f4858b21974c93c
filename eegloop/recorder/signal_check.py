"""Signal check: is every electrode good enough to record? Per channel, pass / warn / fail.

Over ``signal_check.seconds`` of the live stream: flat (standard deviation below ``flat_uv``),
saturated (1 % of samples at or beyond ``rail_uv``), line noise (RMS at the protocol's notch
frequency, 50 Hz without one), broadband 1-40 Hz RMS, and drift (µV/s: the median change between
successive half-second means, so one reset of the amplifier's offset does not hide a ramp), and the
electrode's impedance when the amplifier streams it (``signal_check.impedance_stream``: an LSL stream whose
channels, labelled as the EEG's, carry kΩ). The thresholds are the protocol's ``signal_check`` section; the
verdict of a channel is its worst.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..errors import StreamError
from ..progress import Reporter, verbose

__all__ = ["ChannelCheck", "SignalCheck", "check_signal", "assess"]

_ORDER = {"pass": 0, "warn": 1, "fail": 2}


@dataclass
class ChannelCheck:
    name: str
    verdict: str  # pass, warn or fail
    std_uv: float
    saturated_share: float
    line_uv: float
    rms_uv: float
    drift_uv_s: float
    reasons: list = field(default_factory=list)
    impedance_kohm: Optional[float] = None


@dataclass
class SignalCheck:
    channels: list  # ChannelCheck per EEG channel
    sfreq: float
    seconds: float
    line_hz: float

    @property
    def verdict(self) -> str:
        return max((c.verdict for c in self.channels), key=_ORDER.get, default="pass")

    def failed(self) -> list:
        return [c.name for c in self.channels if c.verdict == "fail"]

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "sfreq": self.sfreq, "seconds": round(self.seconds, 2),
                "line_hz": self.line_hz, "channels": [asdict(c) for c in self.channels]}

    @property
    def has_impedance(self) -> bool:
        return any(c.impedance_kohm is not None for c in self.channels)

    def table(self) -> str:
        imp = self.has_impedance
        head = (f"{'channel':<10}{'verdict':<9}{'std µV':>9}{'line µV':>9}{'1-40Hz µV':>11}{'drift µV/s':>12}"
                + (f"{'kΩ':>7}" if imp else "") + "  why")
        rows = [head, "-" * len(head)]
        for c in self.channels:
            z = ("" if not imp else f"{c.impedance_kohm:>7.1f}" if c.impedance_kohm is not None else f"{'-':>7}")
            rows.append(f"{c.name[:9]:<10}{c.verdict.upper() if c.verdict != 'pass' else 'pass':<9}{c.std_uv:>9.1f}"
                        f"{c.line_uv:>9.1f}{c.rms_uv:>11.1f}{c.drift_uv_s:>12.1f}{z}  {'; '.join(c.reasons)}")
        n = {v: sum(c.verdict == v for c in self.channels) for v in _ORDER}
        rows.append(f"{len(self.channels)} channels, {self.seconds:.1f} s at {self.sfreq:g} Hz: {n['pass']} pass, "
                    f"{n['warn']} warn, {n['fail']} fail")
        return "\n".join(rows)


def assess(data: np.ndarray, sfreq: float, names: list, cfg, line_hz: float = 50.0,
           impedance: Optional[dict] = None) -> SignalCheck:
    """Verdicts for ``data`` (channels, samples) in µV against a :class:`~eegloop.protocol.SignalCheckConfig`;
    ``impedance`` maps channel names to kΩ where the amplifier measured them."""
    from scipy.signal import butter, sosfiltfilt, welch

    x = np.asarray(data, dtype=np.float64)
    n = x.shape[1]
    std = x.std(1)
    sat = (np.abs(x) >= cfg.rail_uv).mean(1)
    nper = min(n, int(sfreq * 2))
    f, pxx = welch(x - x.mean(1, keepdims=True), fs=sfreq, nperseg=nper, axis=1)
    df = f[1] - f[0]
    band = (f >= line_hz - 1.5) & (f <= line_hz + 1.5)
    line = np.sqrt(pxx[:, band].sum(1) * df) if line_hz < sfreq / 2 and band.any() else np.zeros(len(x))
    hi = min(40.0, 0.45 * sfreq)
    sos = butter(4, [1.0, hi], btype="band", fs=sfreq, output="sos")
    rms = sosfiltfilt(sos, x - x.mean(1, keepdims=True), axis=1).std(1) if n > 3 * 13 else std
    half = max(1, int(sfreq / 2))
    k = n // half
    means = x[:, :k * half].reshape(len(x), k, half).mean(2) if k >= 2 else x[:, :1]
    drift = np.abs(np.median(np.diff(means, axis=1), axis=1)) * 2 if k >= 2 else np.zeros(len(x))
    out = []
    for i, name in enumerate(names):
        reasons, verdict = [], "pass"

        def mark(v, why):
            nonlocal verdict
            reasons.append(why)
            verdict = max(verdict, v, key=_ORDER.get)

        if sat[i] >= 0.01:  # a railed channel is flat too, at the rail: one reason, the real one
            mark("fail", f"saturated ({sat[i]:.0%} of samples at or beyond ±{cfg.rail_uv:g} µV)")
        elif std[i] < cfg.flat_uv:
            mark("fail", f"flat (std {std[i]:.2f} µV < {cfg.flat_uv:g})")
        for val, warn, fail, what in ((line[i], cfg.line_warn_uv, cfg.line_fail_uv, f"{line_hz:g} Hz line noise"),
                                      (rms[i], cfg.rms_warn_uv, cfg.rms_fail_uv, "noisy (1-40 Hz RMS)"),
                                      (drift[i], cfg.drift_warn_uv_s, cfg.drift_fail_uv_s, "drifting (µV/s)")):
            if val >= fail:
                mark("fail", f"{what} {val:.0f} >= {fail:g}")
            elif val >= warn:
                mark("warn", f"{what} {val:.0f} >= {warn:g}")
        z = (impedance or {}).get(str(name))
        if z is not None:
            if not np.isfinite(z) or z >= cfg.impedance_fail_kohm:
                mark("fail", f"impedance {z:.0f} kΩ >= {cfg.impedance_fail_kohm:g}")
            elif z >= cfg.impedance_warn_kohm:
                mark("warn", f"impedance {z:.0f} kΩ >= {cfg.impedance_warn_kohm:g}")
        out.append(ChannelCheck(str(name), verdict, round(float(std[i]), 3), round(float(sat[i]), 4),
                                round(float(line[i]), 2), round(float(rms[i]), 2), round(float(drift[i]), 2), reasons,
                                None if z is None else round(float(z), 2)))
    return SignalCheck(out, float(sfreq), n / sfreq, float(line_hz))


def read_impedance(protocol, labels: list, timeout: float, source_id: Optional[str] = None) -> dict:
    """The latest impedance (kΩ) of each of ``labels`` from ``signal_check.impedance_stream`` (pinned to
    ``source_id`` when given)."""
    import pylsl

    from ..lsl import resolve_stream

    name = protocol.signal_check.impedance_stream
    info = resolve_stream(name, None, protocol.amplifier.resolve_timeout_s, "impedance stream",
                          "start the amplifier's impedance stream, or set signal_check.impedance_stream: null",
                          source_id=source_id)
    inlet = pylsl.StreamInlet(info)
    try:
        full = inlet.info(timeout=5.0)
        names = []
        ch = full.desc().child("channels").child("channel")
        while not ch.empty():
            names.append(ch.child_value("label"))
            ch = ch.next_sibling()
        if len(names) != full.channel_count():
            names = list(labels[:full.channel_count()])  # unlabelled: in the EEG's order
        sample, _ = inlet.pull_sample(timeout=timeout)
    finally:
        inlet.close_stream()
    if sample is None:
        raise StreamError(f"impedance stream '{name}' sent nothing in {timeout:g} s")
    return {n: float(v) for n, v in zip(names, sample) if n in set(labels)}


@verbose
def check_signal(protocol, progress=None, eeg_source_id: Optional[str] = None,
                 verbose: bool | str | int | None = None) -> SignalCheck:
    """Pull ``signal_check.seconds`` from the protocol's EEG stream and assess every EEG channel
    (``eeg_source_id`` pins the stream, e.g. to an in-process virtual amplifier)."""
    from .acquisition import Acquisition

    cfg = protocol.signal_check
    say = Reporter(progress, bus=False)  # to progress= when given, else the eegloop.progress logger
    acq = Acquisition(protocol.amplifier, photodiode=protocol.timing.photodiode_channel).connect(
        markers=False, eeg_source_id=eeg_source_id)
    chunks = []
    try:
        need = int(cfg.seconds * acq.sfreq)
        got = 0
        deadline = time.monotonic() + cfg.seconds + max(5.0, protocol.amplifier.stall_timeout_s)
        say(f"signal check: {cfg.seconds:g} s of {len(acq.eeg_idx)} channels from '{acq.stream_name}' ...")
        while got < need:
            if time.monotonic() > deadline:
                raise StreamError(f"signal check: only {got} of {need} samples arrived from '{acq.stream_name}'")
            data, _ = acq.pull()
            if data is None:
                time.sleep(0.02)
                continue
            chunks.append(data[acq.eeg_idx])
            got += data.shape[1]
    finally:
        acq.close()
    x = np.concatenate(chunks, axis=1)[:, :need]
    line_hz = protocol.preprocessing.notch_hz or 50.0
    # the virtual amplifier's impedances come from the outlet beside its EEG (other simulators may run too)
    pin = f"{acq.source_id}-impedance" if acq.source_id.startswith("eegloop-sim-") else None
    z = read_impedance(protocol, acq.eeg_names, max(2.0, cfg.seconds), pin) if cfg.impedance_stream else None
    return assess(x, acq.sfreq, acq.eeg_names, cfg, line_hz, impedance=z)
