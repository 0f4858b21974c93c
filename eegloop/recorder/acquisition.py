"""Acquisition: the LSL inlets for EEG and markers, the clock, and the sample accounting.

:class:`Acquisition` resolves the EEG stream (pinned: when several streams
match the protocol's name/type it refuses, listing them, unless
``amplifier.source_id`` or ``amplifier.hostname`` picks one), checks it
against the protocol, opens clock-corrected inlets and pulls chunks. It keeps
the counts (received vs expected from the stream's own timestamps, gaps,
stalls) in :class:`RecorderStats`, and raises :class:`~eegloop.errors.StreamError`
when no sample arrived for ``amplifier.stall_timeout_s``: a stream lost for
that long stops the visit rather than silently recording nothing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from .._logging import logger
from ..errors import StreamError
from ..lsl import ensure_configured, parse_marker, resolve_stream

__all__ = ["Acquisition", "RecorderStats"]


@dataclass
class RecorderStats:
    """What arrived, what was expected, and what went wrong."""

    samples_received: int = 0
    samples_expected: int = 0
    lost_samples: int = 0
    gaps: int = 0
    max_gap_ms: float = 0.0
    max_pull_interval_ms: float = 0.0
    stalls: list = field(default_factory=list)  # [(lsl_time, seconds)], at most 1000 kept
    markers: int = 0
    epochs: int = 0
    epochs_rejected: dict = field(default_factory=dict)  # reason -> count
    online_dropped: int = 0  # epochs a slow online consumer never took (its queue is bounded)
    alignment_errors: list = field(default_factory=list)  # samples, when a STIM channel exists
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["alignment_errors"] = list(map(int, self.alignment_errors))
        return d


# a channel's <unit> in the stream description -> factor to microvolts (XDF/LSL meta-data conventions:
# "microvolts" is the recommended spelling; amplifier apps also write V, mV, uV, µV)
_TO_UV = {"v": 1e6, "volt": 1e6, "volts": 1e6, "mv": 1e3, "millivolt": 1e3, "millivolts": 1e3,
          "uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolt": 1.0, "microvolts": 1.0,
          "nv": 1e-3, "nanovolt": 1e-3, "nanovolts": 1e-3}


# a channel's <type> in the stream description (XDF meta-data conventions, amplifier apps) -> MNE's type
_LSL_TYPES = {"eeg": "eeg", "eog": "eog", "heog": "eog", "veog": "eog", "ecg": "ecg", "ekg": "ecg", "emg": "emg",
              "misc": "misc", "aux": "misc", "photodiode": "misc", "gsr": "misc", "eda": "misc", "resp": "resp",
              "stim": "stim", "trigger": "stim", "trig": "stim", "markers": "stim"}
_BIOPOTENTIAL = ("eeg", "eog", "ecg", "emg")  # must be voltages


def _unit_text(unit: str) -> str:
    """A declared non-voltage unit as the raw file's header may hold it (no commas, no line breaks)."""
    return "".join(ch for ch in (unit or "") if ch.isprintable() and ch not in ",=")[:16]


def unit_scale(unit: str) -> Optional[float]:
    """Factor from ``unit`` to µV (None: not a voltage eegloop knows); an empty unit is taken as µV.

    Besides the names (V, mV, µV/uV/microvolts, nV), a whole number is read as MNE-LSL writes it: the power
    of ten of volts (``0``: V, ``-6``: µV).
    """
    u = (unit or "").strip().lower()
    if not u:
        return 1.0
    if u.lstrip("-").isdigit() and len(u) <= 3:
        return 10.0 ** int(u) * 1e6
    return _TO_UV.get(u)


def channel_types(labels: list, declared: list, overrides: dict, where: str, error=StreamError,
                  photodiode: Optional[str] = None, field: str = "amplifier.channel_types") -> list:
    """Each channel's type in MNE's names: ``overrides`` (the protocol's ``amplifier.channel_types``, labels in any
    case) first, then the declared ``<type>`` (EEG when none is declared); a photodiode channel is never EEG.
    A label in ``overrides`` that no channel has raises ``error`` naming ``field`` and ``where``."""
    over = {k.lower(): v.lower() for k, v in overrides.items()}
    unknown = sorted(set(over) - {lab.lower() for lab in labels})
    if unknown:
        raise error(f"{field}: no channel {unknown[0]!r} in {where} "
                    f"(it has {', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''})"[:400])
    out = []
    for lab, typ in zip(labels, declared):
        t = over.get(lab.lower()) or _LSL_TYPES.get((typ or "eeg").strip().lower(), "misc")
        if lab == photodiode and t == "eeg":
            t = "misc"
        out.append(t)
    odd = sorted({t for t in declared if t and t.strip().lower() not in _LSL_TYPES})
    if odd:
        logger.info("%s: channel type(s) %s stored as misc (not decoded)", where, ", ".join(odd))
    return out


def channel_scales(labels: list, types: list, units: list, where: str, error=StreamError) -> tuple[list, list]:
    """Per channel, the factor to µV (1.0 for a channel kept in its own unit) and the unit it is stored in.

    An electrode (EEG, EOG, ECG, EMG) in a unit that is not a voltage raises ``error``; any other channel in
    such a unit (a photodiode, a trigger) is kept as it is, its unit noted."""
    scale, out_units = [], []
    for lab, typ, unit in zip(labels, types, units):
        f = unit_scale(unit)
        if typ in _BIOPOTENTIAL:
            if f is None:
                raise error(f"{where}: {typ.upper()} channel {lab!r} is in {unit!r}, not "
                            "a voltage eegloop knows (V, mV, µV/uV/microvolts, nV); if it is not an "
                            "electrode, give it a type in amplifier.channel_types (e.g. misc)"[:400])
        elif (unit or "").strip().lower() not in _TO_UV:
            f = None  # a photodiode, a trigger: kept in its own unit, whatever number it declares
        scale.append(1.0 if f is None else f)
        out_units.append("µV" if f is not None else _unit_text(unit))
    return scale, out_units


class Acquisition:
    """Inlets, clock correction and counts for one EEG stream (and the marker stream).

    Samples of any LSL numeric format (float32, double64, int8/16/32/64) are read in their own type and
    returned as float32 microvolts: each channel's ``<unit>`` in the stream description (V, mV, µV, nV,
    spelled out or not) sets its scale; a channel without one is taken as µV (logged); a unit that is not a
    voltage refuses the stream with one line when the channel is an electrode (EEG, EOG, ECG, EMG).

    Channel types come from the stream's ``<type>`` or the protocol's ``amplifier.channel_types``; only EEG
    channels are decoded (:attr:`eeg_idx`); EOG, ECG, EMG, misc (a photodiode), resp and stim channels are
    kept with the recording.
    """

    def __init__(self, amplifier, photodiode: Optional[str] = None):
        self.amp = amplifier
        self.photodiode = photodiode  # label of the photodiode channel (timing.photodiode_channel), if any
        self.stats = RecorderStats()
        self.eeg_inlet = None
        self.marker_inlet = None
        self._first_ts: Optional[float] = None
        self._last_ts: Optional[float] = None
        self._last_arrival = time.monotonic()
        self._stalled = False
        self._chunk: Optional[np.ndarray] = None
        self._scale: Optional[np.ndarray] = None  # per-channel factor to µV (None: all already µV)
        self.units: list[str] = []
        self.armed = False  # a run is being recorded: a stream silent for stall_timeout_s is then an error

    def _types(self, stream: str, labels: list, declared: list) -> list:
        """Each channel's type in MNE's names (:func:`channel_types`): the protocol's ``amplifier.channel_types``
        first, then the stream's ``<type>`` (EEG when it declares none); the photodiode channel is never EEG."""
        types = channel_types(labels, declared, self.amp.channel_types, f"EEG stream '{stream}'",
                              photodiode=self.photodiode)
        if self.photodiode and self.photodiode not in labels:
            raise StreamError(f"timing.photodiode_channel: no channel {self.photodiode!r} in EEG stream '{stream}' "
                              f"(it has {', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''})"[:400])
        return types

    def connect(self, markers: bool = True, timeout: float | None = None, marker_source_id: str | None = None,
                eeg_source_id: str | None = None) -> "Acquisition":
        import pylsl

        amp = self.amp
        ensure_configured()
        timeout = timeout or amp.resolve_timeout_s
        info = resolve_stream(amp.stream_name, amp.stream_type, timeout, "EEG stream",
                              "start the amplifier's LSL app, or the virtual amplifier: eegloop simulate "
                              f"--name {amp.stream_name}",
                              source_id=eeg_source_id or getattr(amp, "source_id", None),
                              hostname=getattr(amp, "hostname", None), unique=True)
        self.eeg_inlet = pylsl.StreamInlet(info, max_buflen=60, processing_flags=pylsl.proc_clocksync
                                           | pylsl.proc_dejitter | pylsl.proc_monotonize)
        full = self.eeg_inlet.info(timeout=5.0)
        labels, types, units = [], [], []
        ch = full.desc().child("channels").child("channel")
        while not ch.empty():
            labels.append(ch.child_value("label"))
            types.append(ch.child_value("type"))
            units.append(ch.child_value("unit"))
            ch = ch.next_sibling()
        n = full.channel_count()
        if len(labels) != n:
            labels, types, units = [f"Ch{i + 1}" for i in range(n)], [""] * n, [""] * n
            if amp.channel_names:  # the stream has no labels: the protocol's, when the counts agree
                if len(amp.channel_names) != n:
                    raise StreamError(f"EEG stream '{full.name()}' has {n} channels and no labels; "
                                      f"amplifier.channel_names lists {len(amp.channel_names)}")
                labels = list(amp.channel_names)
        types = self._types(full.name(), labels, types)
        # what the raw file says each stored channel is in: µV for every voltage (scaled on arrival)
        scale, out_units = channel_scales(labels, types, units, f"EEG stream '{full.name()}'")
        if not any(units):
            logger.info("EEG stream %r declares no channel units: values taken as microvolts", full.name())
        self._scale = np.asarray(scale, np.float32)[:, None] if any(f != 1.0 for f in scale) else None
        self.units = units
        self.ch_names = labels
        self.ch_types = types
        self.out_units = out_units
        self.eeg_idx = [i for i, t in enumerate(types) if t == "eeg"]
        self.stim_idx = [i for i, t in enumerate(types) if t == "stim"]
        self.photo_idx = labels.index(self.photodiode) if self.photodiode else None
        if len(self.eeg_idx) != amp.channels:
            raise StreamError(
                f"EEG stream '{full.name()}' has {len(self.eeg_idx)} EEG channels, the protocol expects "
                f"{amp.channels} (amplifier.channels); fix the protocol or the amplifier montage")
        if abs(full.nominal_srate() - amp.sfreq) > 1e-6:
            raise StreamError(
                f"EEG stream '{full.name()}' runs at {full.nominal_srate():g} Hz, the protocol expects "
                f"{amp.sfreq:g} Hz (amplifier.sfreq)")
        self.sfreq = full.nominal_srate()
        self.eeg_names = [labels[i] for i in self.eeg_idx]
        self.stream_name, self.source_id, self.hostname = full.name(), full.source_id(), full.hostname()
        if markers:
            minfo = resolve_stream(amp.marker_stream_name, None, timeout, "marker stream",
                                   "the paradigm (eegloop record) creates it; check amplifier.marker_stream_name",
                                   source_id=marker_source_id)
            self.marker_inlet = pylsl.StreamInlet(minfo, max_buflen=360,
                                                  processing_flags=pylsl.proc_clocksync | pylsl.proc_monotonize)
        # open the connections now, so nothing pushed from here on is missed
        self.eeg_inlet.open_stream(timeout=5.0)
        if self.marker_inlet is not None:
            self.marker_inlet.open_stream(timeout=5.0)
        # the first clock-offset estimate takes ~0.6 s: get it now, not inside the pull loop
        self.eeg_inlet.time_correction(timeout=5.0)
        if self.marker_inlet is not None:
            self.marker_inlet.time_correction(timeout=5.0)
        # the pull buffer has the stream's own sample type (pylsl writes the stream's values into it raw: a
        # float32 buffer breaks on a float64 stream); the recorder stores float32
        fmt = full.channel_format()
        dtypes = {pylsl.cf_float32: np.float32, pylsl.cf_double64: np.float64, pylsl.cf_int32: np.int32,
                  pylsl.cf_int16: np.int16, pylsl.cf_int8: np.int8, getattr(pylsl, "cf_int64", 7): np.int64}
        if fmt not in dtypes:
            raise StreamError(f"EEG stream '{full.name()}' carries strings (channel format {fmt}), not samples")
        self._chunk = np.zeros((int(self.sfreq * 2) + 1, n), dtypes[fmt])
        self._last_arrival = time.monotonic()
        logger.info("recorder: EEG %r (%d ch, %g Hz, source %s on %s)%s", full.name(), n, self.sfreq,
                    self.source_id, self.hostname, f", markers {amp.marker_stream_name!r}" if markers else "")
        return self

    @property
    def n_channels(self) -> int:
        return len(self.ch_names)

    def pull(self) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """One non-blocking pull: ``(data (n_channels, k) float32, timestamps)`` or ``(None, None)``.

        Updates the counts; raises :class:`StreamError` once the stream has been silent for
        ``amplifier.stall_timeout_s``.
        """
        chunk = self._chunk
        if self.eeg_inlet is None:  # closed
            return None, None
        samples, ts = self.eeg_inlet.pull_chunk(timeout=0.0, max_samples=chunk.shape[0], dest_obj=chunk)
        now = time.monotonic()
        st = self.stats
        if not ts:
            silent = now - self._last_arrival
            if self._first_ts is not None and not self._stalled and silent > 1.0:
                self._stalled = True
                logger.warning("EEG stream stalled: no samples for %.1f s", silent)
                if len(st.stalls) < 1000:
                    st.stalls.append((float(self._last_ts or 0.0), round(silent, 3)))
            limit = getattr(self.amp, "stall_timeout_s", 5.0)
            if self.armed and silent > limit:
                raise StreamError(f"EEG stream '{self.stream_name}' lost: no samples for {silent:.1f} s "
                                  f"(amplifier.stall_timeout_s {limit:g}); check the amplifier and its LSL app")
            return None, None
        k = len(ts)
        ts = np.asarray(ts, dtype=np.float64)
        interval = (now - self._last_arrival) * 1000
        if self._first_ts is not None and interval > st.max_pull_interval_ms:
            st.max_pull_interval_ms = interval
        if self._stalled:
            logger.warning("EEG stream resumed after %.1f s", now - self._last_arrival)
            if st.stalls:
                st.stalls[-1] = (st.stalls[-1][0], round(now - self._last_arrival, 3))
            self._stalled = False
        self._last_arrival = now
        st.samples_received += k
        if self._first_ts is None:
            self._first_ts = float(ts[0])
        prev = self._last_ts if self._last_ts is not None else ts[0]
        diffs = np.diff(np.concatenate([[prev], ts]))
        big = diffs > 1.5 / self.sfreq
        if big.any():
            st.gaps += int(big.sum())
        st.max_gap_ms = max(st.max_gap_ms, float(diffs.max()) * 1000)
        self._last_ts = float(ts[-1])
        st.samples_expected = int(round((self._last_ts - self._first_ts) * self.sfreq)) + 1
        st.lost_samples = max(0, st.samples_expected - st.samples_received)
        out = chunk[:k].T.astype(np.float32)
        if self._scale is not None:
            out *= self._scale  # to microvolts, per channel
        return out, ts

    def pull_markers(self) -> list[tuple[dict, float]]:
        if self.marker_inlet is None:
            return []
        samples, ts = self.marker_inlet.pull_chunk(timeout=0.0)
        out = [(parse_marker(s[0]), float(t)) for s, t in zip(samples, ts)]
        self.stats.markers += len(out)
        return out

    def close(self) -> None:
        """Close both inlets and let go of them: liblsl frees an inlet's sockets only when the inlet is destroyed,
        and a reference kept (a traceback's frame holds this object after a failure) would keep them until
        Python's next garbage collection — while the machine has 32 LSL ports for every outlet and query."""
        inlets, self.eeg_inlet, self.marker_inlet = (self.eeg_inlet, self.marker_inlet), None, None
        for inlet in inlets:
            if inlet is not None:
                try:
                    inlet.close_stream()
                except Exception as exc:  # closing must never hide the reason we are closing
                    logger.debug("closing an inlet: %s", exc)
