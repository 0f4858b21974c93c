"""The virtual amplifier: a simulated subject behind a real LSL outlet.

It pushes float32 EEG in small chunks on the real clock, like an amplifier,
with standard channel labels in the stream's XML description. The background
looks like EEG (1/f noise, alpha, 50 Hz line noise, slow drift). It listens to
eegloop's marker stream and, for each ``stim_on`` marker, adds a
class-specific response at the marker's time: a spatial pattern with a
time-frequency signature inside 14-70 Hz plus an ERP below 30 Hz, with
per-trial variability. ``class_signal: 0`` removes all class information;
``block_drift`` adds a per-block signal independent of class (the confound of
block designs). With ``embedding_signal`` and the stimuli's CLIP embeddings
(``embeddings``), each image also evokes a fixed random linear projection of its
own embedding, so that a decoder into the embedding space can identify images
of concepts it never saw (zero-shot); ``class_signal: 0`` removes that too.

Samples are made in fixed internal blocks from a seeded generator, so the
background is a deterministic function of the seed; responses are added to
samples that are still in the outgoing buffer (``latency_ms``), so a marker
reaching the simulator a few milliseconds after its flip still lands at the
right sample.

A display is not instant: with ``display_latency_ms`` (and ``display_jitter_ms``) each image reaches the
screen, and so the brain, that long after its marker; ``photodiode: true`` adds a channel ``Photo`` (type
misc) that lights for 50 ms from that moment, as a photodiode on the paradigm's patch would, rising over two
samples centred on the exact time (a sensor and the amplifier's filter smear a step) so that its onset can be
found to a fraction of a sample.
``impedances: true`` streams every electrode's impedance (kΩ) once a second on a second outlet,
``<stream_name>-impedance``.

A population: ``subject: K`` makes the stream one subject of the population of ``seed``. The class
patterns stay those of ``seed`` (shared by every subject); subject K's own spatial mixing, latency shift and
noise level (:mod:`.population`) apply to them and to the brain's background, and its noise and trials are
its own. ``subject: null`` (the default) is the simulator as it always was, sample for sample.
"""
from __future__ import annotations

import functools
import hashlib
import threading
import uuid
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from .._logging import logger
from .._worker import Worker
from ..lsl import ensure_configured, parse_marker
from ..protocol import AmplifierConfig, SimulateConfig
from .population import subject_key, subject_variation

__all__ = ["VirtualAmplifier", "channel_labels", "class_response", "embedding_response"]

_BIOSEMI64 = ("Fp1 AF7 AF3 F1 F3 F5 F7 FT7 FC5 FC3 FC1 C1 C3 C5 T7 TP7 CP5 CP3 CP1 P1 P3 P5 P7 P9 PO7 PO3 O1 Iz Oz "
              "POz Pz CPz Fpz Fp2 AF8 AF4 AFz Fz F2 F4 F6 F8 FT8 FC6 FC4 FC2 FCz Cz C2 C4 C6 T8 TP8 CP6 CP4 CP2 P2 "
              "P4 P6 P8 P10 PO8 PO4 O2").split()
_EXTRA_1005 = ("AFp1 AFp2 AFF5h AFF1h AFF2h AFF6h FFT9h FFT7h FFC5h FFC3h FFC1h FFC2h FFC4h FFC6h FFT8h FFT10h "
               "FTT9h FTT7h FCC5h FCC3h FCC1h FCC2h FCC4h FCC6h FTT8h FTT10h TTP7h CCP5h CCP3h CCP1h CCP2h CCP4h "
               "CCP6h TTP8h TPP9h TPP7h CPP5h CPP3h CPP1h CPP2h CPP4h CPP6h TPP8h TPP10h PPO9h PPO5h PPO1h PPO2h "
               "PPO6h PPO10h POO9h POO1 POO2 POO10h OI1h OI2h I1 I2 AF9 AF10 F9 F10 FT9 FT10").split()


def channel_labels(n: int) -> list[str]:
    """Standard 10-20/10-10/10-5 labels for ``n`` channels (E1.. beyond 128)."""
    names = _BIOSEMI64 + _EXTRA_1005
    return names[:n] + [f"E{i + 1}" for i in range(len(names), n)]


def _class_seed(class_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{class_id}".encode()).digest()[:8], "little")


PHOTODIODE_LABEL = "Photo"
PATCH_S = 0.05  # the paradigm lights its photodiode patch for 50 ms from each onset


@dataclass
class _Response:
    onset: float  # LSL time of the light on the screen (the marker's time plus the display's delay)
    class_id: str
    trial: int
    image: Optional[str] = None  # the stimulus file's name (the marker's "image")


@functools.lru_cache(maxsize=128)
def class_response(class_id: str, n_chans: int, sfreq: float, cfg: SimulateConfig, trial: int,
                   amplitude_uv: float) -> np.ndarray:
    """The simulated response to one image of ``class_id``: (n_chans, n_times), 0.6 s.

    The class fixes a spatial pattern, two carrier frequencies in 14-70 Hz,
    a latency and an ERP topography; the trial varies amplitude, latency and
    phase. Deterministic in (class_id, seed, trial). With ``cfg.subject`` (a simulated population,
    :mod:`.population`) the class's patterns stay those of ``seed``; the subject's own latency shift and
    spatial mixing apply to them, and the trial's variability is the subject's own.
    """
    crng = np.random.default_rng(_class_seed(class_id, cfg.seed))
    trng = np.random.default_rng([_class_seed(class_id, cfg.seed) % (2**32), trial, 7, *subject_key(cfg.subject)])
    n = int(round(0.6 * sfreq))
    t = np.arange(n) / sfreq
    # class-fixed properties
    spatial = crng.standard_normal((2, n_chans))
    spatial /= np.linalg.norm(spatial, axis=1, keepdims=True) / np.sqrt(n_chans)
    freqs = crng.choice([17.0, 21.0, 25.0, 30.0, 36.0, 42.0, 58.0, 64.0], size=2, replace=False)
    latency = crng.uniform(0.12, 0.32)
    erp_topo = crng.standard_normal(n_chans)
    erp_topo /= np.linalg.norm(erp_topo) / np.sqrt(n_chans)
    # per-trial variability
    jitter = trng.normal(0, cfg.trial_jitter_ms / 1000)
    gain = np.clip(trng.normal(1.0, 0.35), 0.2, 2.0)
    phase = trng.uniform(0, 2 * np.pi, 2)
    sub = subject_variation(cfg.subject, n_chans) if cfg.subject is not None else None
    if sub is not None:  # the subject's own speed: every component of the response later (or earlier)
        jitter += sub.latency_s
    env = np.exp(-0.5 * ((t - latency - jitter) / 0.06) ** 2)
    osc = np.stack([np.sin(2 * np.pi * f * t + ph) for f, ph in zip(freqs, phase)]) * env
    out = amplitude_uv * gain * (spatial.T @ osc)
    erp = np.sin(2 * np.pi * 6.0 * (t - 0.1 - jitter)) * np.exp(-0.5 * ((t - 0.17 - jitter) / 0.07) ** 2)
    out += cfg.erp_uv * gain * np.outer(erp_topo, erp)
    if sub is not None:  # the subject's head: the shared sources reach the electrodes through its own mixing
        out = sub.mixing @ out
    return out.astype(np.float32)


_EMB_LATENCIES = (0.10, 0.17, 0.25, 0.35)  # s: the embedding's components peak at these latencies ...
_EMB_FREQS = (7.0, 18.0, 26.0, 34.0)  # Hz: ... carried at these frequencies (inside 14-70 Hz and below 40 Hz)


@functools.lru_cache(maxsize=8)
def _embedding_projection(dim: int, n_chans: int, seed: int) -> np.ndarray:
    """The subject's fixed random map from an embedding to spatial patterns: (components, channels, dim)."""
    rng = np.random.default_rng([seed, dim, n_chans, 23])
    return rng.standard_normal((len(_EMB_LATENCIES), n_chans, dim)) / np.sqrt(len(_EMB_LATENCIES))


def embedding_response(z: np.ndarray, n_chans: int, sfreq: float, cfg: SimulateConfig, trial: int,
                       amplitude_uv: float) -> np.ndarray:
    """The response to an image whose (centred, unit-length) CLIP embedding is ``z``: (n_chans, 0.6 s).

    Each of four components (latencies 100-350 ms, carriers 7-34 Hz) has the spatial pattern
    ``P_k @ z`` with ``P_k`` a fixed random matrix of the simulated subject (``seed``): a linear
    projection of the embedding, so images with similar embeddings evoke similar responses. The trial
    varies gain and latency as for the class response; a subject of a population (``cfg.subject``) shifts
    and mixes it as it does the class response.
    """
    n = int(round(0.6 * sfreq))
    t = np.arange(n) / sfreq
    P = _embedding_projection(len(z), n_chans, cfg.seed)
    trng = np.random.default_rng([cfg.seed, trial, 29, *subject_key(cfg.subject)])
    jitter = trng.normal(0, cfg.trial_jitter_ms / 1000)
    sub = subject_variation(cfg.subject, n_chans) if cfg.subject is not None else None
    if sub is not None:
        jitter += sub.latency_s
    gain = np.clip(trng.normal(1.0, 0.25), 0.3, 2.0)
    out = np.zeros((n_chans, n))
    for k, (lat, f) in enumerate(zip(_EMB_LATENCIES, _EMB_FREQS)):
        tt = t - lat - jitter
        wave = np.exp(-0.5 * (tt / 0.05) ** 2) * np.cos(2 * np.pi * f * tt)
        out += np.outer(P[k] @ z, wave)
    if sub is not None:
        out = sub.mixing @ out
    return (amplitude_uv * gain * out).astype(np.float32)


def centred_embeddings(embeddings: dict) -> dict:
    """The embeddings minus their mean over the set, back to unit length (what the subject responds to:
    a CLIP model's embeddings share a large common part that says nothing about the image)."""
    if not embeddings:
        return {}
    keys = list(embeddings)
    Z = np.stack([np.asarray(embeddings[k], np.float64) for k in keys])
    Z = Z - Z.mean(0, keepdims=True)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    return {k: z for k, z in zip(keys, Z)}


class VirtualAmplifier:
    """A simulated subject pushing EEG on an LSL outlet.

    Parameters
    ----------
    amplifier : AmplifierConfig
        Stream name/type, channel count, sfreq, marker stream name.
    simulate : SimulateConfig
        The subject: snr, class signal, block drift, noise levels, seed (and ``subject``, one subject of
        the seed's population).
    latency_ms : float | None
        How long samples stay in the outgoing buffer (markers arriving within
        this time still shape them). Real amplifiers have similar latency.
        None: ``simulate.latency_ms`` (40).
    listen_markers : bool
        Follow the marker stream (off for a pure background stream).
    embeddings : dict | None
        {(class id, image file name): CLIP embedding} of the stimuli, for ``simulate.embedding_signal``
        (:func:`eegloop.embeddings.stimulus_embeddings`); images not in it evoke no embedding response.
    source_id : str | None
        The stream's source id (default: a new unique one), so that a recorder elsewhere can pin it in advance.
    """

    BLOCK_S = 0.1  # internal generation block

    def __init__(self, amplifier: AmplifierConfig, simulate: Optional[SimulateConfig] = None,
                 latency_ms: Optional[float] = None, listen_markers: bool = True,
                 marker_source_id: Optional[str] = None,
                 embeddings: Optional[dict] = None, source_id: Optional[str] = None):
        self.amp = amplifier
        self.cfg = simulate or amplifier.simulate or SimulateConfig()
        self.sfreq = float(amplifier.sfreq)
        self.n_eeg = int(amplifier.channels)
        self.labels = list(amplifier.channel_names) or channel_labels(self.n_eeg)
        self.types = ["EEG"] * self.n_eeg
        self.photo_idx = None
        if self.cfg.photodiode:
            self.photo_idx = len(self.labels)
            self.labels, self.types = self.labels + [PHOTODIODE_LABEL], self.types + ["MISC"]
        if self.cfg.onset_channel:
            self.labels, self.types = self.labels + ["STIM"], self.types + ["STIM"]
        self.stim_idx = self.labels.index("STIM") if self.cfg.onset_channel else None
        self.n_out = len(self.labels)
        self.latency = (self.cfg.latency_ms if latency_ms is None else latency_ms) / 1000
        self.listen_markers = listen_markers
        self.marker_source_id = marker_source_id
        # unique per amplifier: a recorder in this process pins its EEG stream to it
        self.source_id = source_id or f"eegloop-sim-{amplifier.stream_name}-{uuid.uuid4().hex[:12]}"
        # a subject of a population (simulate.subject): its own mixing, latency and noise level around the
        # patterns of `seed`, and its own noise samples; none: the subject of `seed` alone, as it always was
        self._subject = (subject_variation(self.cfg.subject, self.n_eeg) if self.cfg.subject is not None
                         else None)
        self._rng = np.random.default_rng(self.cfg.seed if self._subject is None
                                          else [self.cfg.seed, *subject_key(self.cfg.subject)])
        self._out = Worker.of(self._run, "eegloop-simulator")
        self._mk = Worker.of(self._marker_loop, "eegloop-sim-markers")
        self._imp = Worker.of(self._impedance_loop, "eegloop-sim-impedance")
        self._lock = threading.Lock()
        self.markers_connected = threading.Event()
        self._responses: list[_Response] = []
        self._block_changes: list[tuple[float, int]] = []  # (LSL time, block number)
        self.samples_pushed = 0
        self.markers_seen = 0
        self.t0: Optional[float] = None
        self._emb = centred_embeddings(embeddings or {})
        if self.cfg.embedding_signal > 0 and not self._emb:
            logger.warning("simulate.embedding_signal is %g but no stimulus embeddings were given: no embedding "
                           "responses", self.cfg.embedding_signal)
        self._init_background()

    # -- background --------------------------------------------------------------
    def _init_background(self) -> None:
        c, sf = self.n_eeg, self.sfreq
        rng = np.random.default_rng(self.cfg.seed + 1)
        # pink (1/f) noise by Kellet's filter, mixed to give spatial correlation
        self._pink_b = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
        self._pink_a = np.array([1, -2.494956002, 2.017265875, -0.522189400])
        self._pink_zi = np.zeros((c, 3))
        k = min(c, 8)
        self._mix = (0.6 * np.eye(c) + 0.4 * rng.standard_normal((c, k)) @ rng.standard_normal((k, c)) / np.sqrt(k))
        self._mix /= np.linalg.norm(self._mix, axis=1, keepdims=True)
        self._alpha_topo = np.abs(rng.standard_normal(c)) * 0.5 + 0.5
        self._line_topo = rng.uniform(0.5, 1.5, c)
        self._line_phase = rng.uniform(0, 2 * np.pi, c)
        self._drift_topo = rng.standard_normal(c)
        self._drift_f = rng.uniform(0.02, 0.08)
        # band-limited (14-70 Hz) noise source for block drift
        hi = min(70.0, 0.45 * sf)
        self._band_sos = butter(2, [14.0, hi], btype="band", fs=sf, output="sos")
        self._band_zi = np.zeros((self._band_sos.shape[0], 1, 2))
        self._n_made = 0

    def _make_block(self, n: int) -> np.ndarray:
        """The next n background samples (n_eeg, n) in microvolts."""
        cfg, c, sf = self.cfg, self.n_eeg, self.sfreq
        white = self._rng.standard_normal((c, n))
        pink, self._pink_zi = lfilter(self._pink_b, self._pink_a, white, axis=1, zi=self._pink_zi)
        x = cfg.noise_uv * 4.0 * (self._mix @ pink)
        if self._subject is not None:
            x *= self._subject.noise_scale
        t = (self._n_made + np.arange(n)) / sf
        alpha_amp = 1 + 0.5 * np.sin(2 * np.pi * 0.1 * t)
        x += cfg.alpha_uv * np.outer(self._alpha_topo, alpha_amp * np.sin(2 * np.pi * 10.0 * t))
        if self._subject is not None:  # the brain's background reaches the electrodes as its responses do
            x = self._subject.mixing @ x
        x += cfg.line_noise_uv * self._line_topo[:, None] * np.sin(2 * np.pi * 50.0 * t[None] + self._line_phase[:, None])
        x += cfg.drift_uv * np.outer(self._drift_topo, np.sin(2 * np.pi * self._drift_f * t))
        # bad electrodes on request, so that every verdict of the signal check can be tested
        for ch in cfg.noisy_channels:
            x[ch - 1] += 400.0 * np.sin(2 * np.pi * 50.0 * t)
        for ch in cfg.drifting_channels:  # a 300 µV/s ramp, wrapped within ±1500 µV (every 10 s)
            x[ch - 1] += (300.0 * t) % 3000.0 - 1500.0
        for ch in cfg.saturated_channels:
            x[ch - 1] = np.clip(x[ch - 1] * 1000.0, -3276.7, 3276.7)
        for ch in cfg.flat_channels:
            x[ch - 1] = 0.0
        self._n_made += n
        return x

    # -- markers -------------------------------------------------------------------
    def add_marker(self, marker: dict, lsl_time: float) -> None:
        """Feed one marker (as the marker thread does); public for in-process use."""
        ev = marker.get("event")
        with self._lock:
            self.markers_seen += 1
            if ev == "stim_on" and "class" in marker:
                trial = int(marker.get("trial", 0))
                img = marker.get("image")
                self._responses.append(_Response(lsl_time + self._display_delay(trial), str(marker["class"]), trial,
                                                 str(img) if img is not None else None))
            elif ev == "block_start" and "block" in marker:
                self._block_changes.append((lsl_time, int(marker["block"])))

    def _display_delay(self, trial: int) -> float:
        """Seconds from a marker to light on the screen: the display's latency and, per trial, its jitter."""
        cfg = self.cfg
        d = cfg.display_latency_ms / 1000
        if cfg.display_jitter_ms > 0:
            d += np.random.default_rng([cfg.seed, trial, 13, *subject_key(cfg.subject)]).normal(
                0, cfg.display_jitter_ms / 1000)
        return max(0.0, d)

    def _marker_loop(self, worker: Worker) -> None:
        import pylsl

        # a continuous resolver keeps sending query waves in the background: a string of short one-shot resolves
        # can miss a stream for seconds on a loaded machine (one missed the test's 10 s in a CI run)
        prop, value = (("source_id", self.marker_source_id) if self.marker_source_id
                       else ("name", self.amp.marker_stream_name))
        resolver = pylsl.ContinuousResolver(prop=prop, value=value)
        inlet = None
        try:
            while not worker.stopping and inlet is None:
                found = resolver.results()
                if found:
                    inlet = pylsl.StreamInlet(found[0], processing_flags=pylsl.proc_clocksync)
                else:
                    worker.wait_stop(0.1)
        finally:
            del resolver
        if inlet is None:
            return
        inlet.open_stream(timeout=5.0)
        inlet.time_correction(timeout=5.0)  # the first estimate takes ~0.6 s; not while markers arrive
        self.markers_connected.set()
        logger.info("simulator: following marker stream %r", self.amp.marker_stream_name)
        while not worker.stopping:
            sample, ts = inlet.pull_sample(timeout=0.1)
            if sample is not None:
                self.add_marker(parse_marker(sample[0]), ts)
        inlet.close_stream()

    # -- output --------------------------------------------------------------------
    def _apply_events(self, data: np.ndarray, t_first: float) -> None:
        """Add responses, onset pulses and block drift to samples starting at t_first."""
        cfg, sf, c = self.cfg, self.sfreq, self.n_eeg
        n = data.shape[1]
        amp = cfg.snr * cfg.noise_uv * cfg.class_signal
        with self._lock:
            responses = list(self._responses)
            blocks = list(self._block_changes)
        keep = []
        for r in responses:
            i0 = int(round((r.onset - t_first) * sf))
            resp_len = int(round(0.6 * sf))
            if i0 + resp_len <= 0:
                continue  # fully in the past
            keep.append(r)
            if i0 >= n:
                continue
            if self.stim_idx is not None and 0 <= i0 < n:
                data[self.stim_idx, i0] = 1.0
            if self.photo_idx is not None:  # light from the onset for PATCH_S, a two-sample ramp at each edge
                k = (t_first + np.arange(n) / sf - r.onset) * sf
                data[self.photo_idx] += (np.clip((k + 1) / 2, 0, 1) - np.clip((k - PATCH_S * sf + 1) / 2, 0, 1))
            if amp > 0:
                resp = class_response(r.class_id, c, sf, cfg, r.trial, amp)  # cached, read-only
                a, b = max(i0, 0), min(i0 + resp_len, n)
                data[:c, a:b] += resp[:, a - i0:b - i0]
                z = self._emb.get((r.class_id, r.image)) if cfg.embedding_signal > 0 else None
                if z is not None:
                    er = embedding_response(z, c, sf, cfg, r.trial, amp * cfg.embedding_signal)
                    data[:c, a:b] += er[:, a - i0:b - i0]
        with self._lock:
            self._responses = [r for r in self._responses if r in keep or r.onset > t_first]
        if cfg.block_drift > 0 and blocks:
            times = t_first + np.arange(n) / sf
            block_of = np.full(n, -1)
            for bt, b in sorted(blocks):
                block_of[times >= bt] = b
            band = self._band_noise(n)
            for b in np.unique(block_of):
                if b < 0:
                    continue
                m = block_of == b
                brng = np.random.default_rng([self.cfg.seed, int(b), 11, *subject_key(self.cfg.subject)])
                topo = brng.standard_normal(c)
                offset = brng.standard_normal(c)
                data[:c, m] += cfg.block_drift * (offset[:, None] + topo[:, None] * band[None, m])

    def _band_noise(self, n: int) -> np.ndarray:
        y, self._band_zi = sosfilt(self._band_sos, self._rng.standard_normal((1, n)), axis=1, zi=self._band_zi)
        return 3.0 * y[0]

    def impedances_kohm(self) -> np.ndarray:
        """The simulated electrodes' impedances: 2-12 kΩ, 120 kΩ on ``high_impedance_channels``."""
        z = np.random.default_rng([self.cfg.seed, 17, *subject_key(self.cfg.subject)]).uniform(2.0, 12.0, self.n_eeg)
        for ch in self.cfg.high_impedance_channels:
            z[ch - 1] = 120.0
        return z.astype(np.float32)

    def _impedance_loop(self, worker: Worker) -> None:
        import pylsl

        info = pylsl.StreamInfo(f"{self.amp.stream_name}-impedance", "Impedance", self.n_eeg, 1.0, pylsl.cf_float32,
                                f"{self.source_id}-impedance")
        chans = info.desc().append_child("channels")
        for lab in self.labels[:self.n_eeg]:
            ch = chans.append_child("channel")
            ch.append_child_value("label", lab)
            ch.append_child_value("unit", "kOhm")
        outlet = pylsl.StreamOutlet(info)
        z = self.impedances_kohm()
        while not worker.stopping:
            outlet.push_sample(z)
            worker.wait_stop(1.0)
        del outlet

    def _run(self, worker: Worker) -> None:
        import pylsl

        info = pylsl.StreamInfo(self.amp.stream_name, self.amp.stream_type, self.n_out, self.sfreq,
                                pylsl.cf_float32, self.source_id)
        chans = info.desc().append_child("channels")
        for i, (lab, typ) in enumerate(zip(self.labels, self.types)):
            ch = chans.append_child("channel")
            ch.append_child_value("label", lab)
            ch.append_child_value("unit", "microvolts" if typ == "EEG" else "none")
            ch.append_child_value("type", typ)
        info.desc().append_child("acquisition").append_child_value("manufacturer", "eegloop virtual amplifier")
        outlet = pylsl.StreamOutlet(info, chunk_size=max(1, int(self.sfreq * self.cfg.chunk_ms / 1000)))
        self._outlet_ready.set()
        blk = max(1, int(round(self.BLOCK_S * self.sfreq)))
        pending = np.zeros((self.n_out, 0), np.float32)
        self.t0 = pylsl.local_clock() + self.latency
        made = 0
        period = self.cfg.chunk_ms / 1000
        next_wake = time.perf_counter()
        while not worker.stopping:
            now = pylsl.local_clock()
            due = int((now - self.latency - self.t0) * self.sfreq)  # samples whose time has come
            if self._duration is not None and due >= int(self._duration * self.sfreq):
                due = int(self._duration * self.sfreq)
                worker.request_stop()
            while made < due + int(self.latency * self.sfreq) + blk:
                bg = np.zeros((self.n_out, blk), np.float32)
                bg[:self.n_eeg] = self._make_block(blk)
                pending = np.concatenate([pending, bg], axis=1)
                made += blk
            n_push = due - self.samples_pushed
            if n_push > 0:
                chunk = pending[:, :n_push].copy()
                self._apply_events(chunk, self.t0 + self.samples_pushed / self.sfreq)
                ts_last = self.t0 + (self.samples_pushed + n_push - 1) / self.sfreq
                outlet.push_chunk(np.ascontiguousarray(chunk.T), timestamp=ts_last)
                pending = pending[:, n_push:]
                self.samples_pushed += n_push
            next_wake += period
            delay = next_wake - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_wake = time.perf_counter()
        del outlet

    def start(self, duration: float | None = None) -> "VirtualAmplifier":
        """Start streaming in background threads; returns once the outlet exists."""
        ensure_configured()
        self._duration = duration
        self._outlet_ready = threading.Event()
        self._out.start()
        if self.listen_markers:
            self._mk.start()
        if self.cfg.impedances:
            self._imp.start()
        self._outlet_ready.wait(10)
        return self

    @property
    def alive(self) -> bool:
        """True while the stream is being pushed."""
        return self._out.alive

    def wait(self, timeout: float | None = None) -> None:
        """Block until the stream ends (``duration`` reached or :meth:`stop`), or ``timeout`` s."""
        end = None if timeout is None else time.monotonic() + timeout
        while self._out.alive and (end is None or time.monotonic() < end):
            self._out.join(0.2)

    def stop(self) -> None:
        self._mk.request_stop()
        self._imp.request_stop()
        self._out.stop(5)
        self._mk.stop(5)
        self._imp.stop(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def simulate_epochs(protocol, schedule=None, trials=None, simulate: Optional[SimulateConfig] = None,
                    pre_s: float = 1.0, embeddings: Optional[dict] = None):
    """Epochs the virtual amplifier would produce for a schedule, rendered offline (no LSL, no waiting).

    The same background generator and class responses as the live simulator;
    blocks are rendered one at a time with their pauses skipped.

    Parameters
    ----------
    protocol : Protocol
        ``amplifier`` (channels, sfreq, simulate), ``paradigm.image_s`` and ``epochs``.
    schedule : Schedule | None
        What was shown; or ``trials``: a list of (run, block, trial, class_id) or (run, block, trial,
        class_id, image file name).
    embeddings : dict | None
        {(class id, image file name): CLIP embedding} for ``simulate.embedding_signal`` (default, when that
        is on: :func:`eegloop.embeddings.stimulus_embeddings` of the protocol's stimuli).
    """
    from ..types import EpochSet
    from .epocher import epoch_window

    cfg = simulate or protocol.amplifier.simulate or SimulateConfig()
    if cfg.embedding_signal > 0 and embeddings is None:
        from ..embeddings import stimulus_embeddings

        embeddings = stimulus_embeddings(protocol)
    va = VirtualAmplifier(protocol.amplifier, simulate, listen_markers=False, embeddings=embeddings)
    sf, c = va.sfreq, va.n_eeg
    e = protocol.epochs
    win = epoch_window(e, sf)
    start_off, length = win.start, win.length
    pre_s = max(pre_s, -start_off / sf)  # a block's first epoch, margin included, starts inside the rendered signal
    if trials is None:
        trials = [(t.run, t.block, t.trial, t.class_id, Path(t.image).name) for t in schedule.trials]
    blocks: dict[tuple[int, int], list] = {}
    for tr in trials:
        blocks.setdefault((tr[0], tr[1]), []).append(tr)
    soa = protocol.paradigm.image_s
    data, labels, runs, blks, times, trial_no = [], [], [], [], [], []
    t = 10.0
    for (run, block), trs in blocks.items():
        va.add_marker({"event": "block_start", "block": block}, t)
        onsets = [t + k * soa for k in range(len(trs))]
        for tr, on in zip(trs, onsets):
            mk = {"event": "stim_on", "class": tr[3], "trial": tr[2]}
            if len(tr) > 4 and tr[4] is not None:
                mk["image"] = tr[4]
            va.add_marker(mk, on)
        t_first = t - pre_s
        n = int(round((len(trs) * soa + pre_s + 1.0 + e.tmax + max(e.margin_s, e.right_margin_s or 0)) * sf))
        x = np.zeros((va.n_out, n), np.float32)
        x[:c] = va._make_block(n)
        va._apply_events(x, t_first)
        for (_r, _b, trial, cls, *_img), on in zip(trs, onsets):
            a = int(round((on - t_first) * sf)) + start_off
            data.append(x[:c, a:a + length])
            labels.append(cls)
            runs.append(run)
            blks.append(block)
            times.append(t_first + (a - start_off) / sf)
            trial_no.append(trial)
        t = t_first + n / sf + 5.0
    return EpochSet(data=np.stack(data), labels=np.array(labels), sfreq=sf, tmin=start_off / sf,
                    channel_names=va.labels[:c], runs=np.array(runs), blocks=np.array(blks),
                    sessions=np.zeros(len(labels), int), onsets=np.array(times), trials=np.array(trial_no),
                    montage=protocol.amplifier.montage)
