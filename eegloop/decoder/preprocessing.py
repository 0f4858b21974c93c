"""Preprocessing: one code path for training, evaluation and live decoding.

Per epoch (the recorder cuts epochs with margins on both sides so that
zero-phase filters have context): notch (``notch_hz`` ± ``notch_width_hz``/2),
Butterworth band-pass (``bandpass_hz``, ``bandpass_order``), both zero-phase
(or, with ``preprocessing.causal``, forward only: no signal after the window is
needed, so an epoch can be decoded the moment its window ends);
the mean of the baseline window (``epochs.baseline``) subtracted when one is set;
crop to the analysis window [``tmin``, ``tmax``]; per-channel standardisation
(each channel of each epoch to zero mean, unit variance — needs no statistics
from other epochs, so one epoch online gives exactly the numbers it gives
offline); then the representation the student expects:

- ``stft``: magnitude of the short-time Fourier transform, Hann windows of
  ``stft_window_ms`` every ``stft_hop_ms``, frequency bins up to the band-pass
  high edge -> (channels, freqs, times). At 1 kHz, 40 ms windows give 25 Hz
  bins: only 0, 25, 50, 75 Hz (see papers/README: keep the paper's setting
  reproducible, do not treat it as the best one).
- ``wavelet``: db4 wavelet decomposition (PyWavelets), each level's
  coefficients magnitude resampled to a common length -> (channels, levels, times).
- ``erp``: the filtered signal averaged in bins of ``erp_bin_ms`` -> (channels, 1, bins):
  slow evoked responses (N170, P300) that a magnitude spectrum would lose.
- ``time``: the filtered, standardised signal -> (channels, times) (time-domain baselines).
- ``series``: the ``time`` signal resampled (scipy's anti-aliased ``resample_poly``) to the lowest integer
  fraction of ``sfreq`` still at least 2.5 x the band-pass high edge (256 Hz with a 30 Hz edge: 85 Hz;
  1 kHz with 70 Hz: 200 Hz) -> (channels, times): the 1-D CNN baseline's input, a third to a fifth of the work.
- ``image``: the same signal as one 2-D picture -> (1, channels, times), time binned to at most 64
  points (Table 1's CNN on raw EEG).

:func:`preprocess` takes (n, channels, times) and returns float32 features;
:func:`preprocess_one` is the same function on a single epoch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
import os

import numpy as np
from scipy.signal import butter, iirnotch, sosfilt, sosfilt_zi, tf2sos

from ..protocol import EpochsConfig, PreprocessingConfig

__all__ = ["Preprocessor", "preprocess"]


@dataclass(frozen=True)
class Preprocessor:
    """Everything needed to turn an epoch into the student's input; saved with each model."""

    sfreq: float
    epoch_tmin: float  # time of the epoch's first sample relative to onset (negative with margins)
    tmin: float
    tmax: float
    notch_hz: float | None
    notch_width_hz: float
    bandpass_hz: tuple
    bandpass_order: int
    standardize: bool
    representation: str
    stft_window_ms: float
    stft_hop_ms: float
    erp_bin_ms: float = 50.0
    baseline: tuple | None = None  # [start, end] s relative to onset, subtracted after filtering (epochs.baseline)
    causal: bool = False  # forward-only filters (preprocessing.causal): no signal after the window needed

    @classmethod
    def from_protocol(cls, pre: PreprocessingConfig, epochs: EpochsConfig, sfreq: float,
                      epoch_tmin: float) -> "Preprocessor":
        return cls(sfreq=float(sfreq), epoch_tmin=float(epoch_tmin), tmin=epochs.tmin, tmax=epochs.tmax,
                   notch_hz=pre.notch_hz, notch_width_hz=pre.notch_width_hz, bandpass_hz=tuple(pre.bandpass_hz),
                   bandpass_order=pre.bandpass_order, standardize=pre.standardize,
                   representation=pre.representation, stft_window_ms=pre.stft_window_ms,
                   stft_hop_ms=pre.stft_hop_ms, erp_bin_ms=pre.erp_bin_ms,
                   baseline=tuple(epochs.baseline) if epochs.baseline else None, causal=pre.causal)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bandpass_hz"] = list(self.bandpass_hz)
        d["baseline"] = list(self.baseline) if self.baseline else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        d = dict(d)
        d["bandpass_hz"] = tuple(d["bandpass_hz"])
        d["baseline"] = tuple(d["baseline"]) if d.get("baseline") else None
        return cls(**d)

    def with_representation(self, rep: str, **changes) -> "Preprocessor":
        return Preprocessor.from_dict({**self.to_dict(), "representation": rep, **changes})

    # -- filters ------------------------------------------------------------------
    @cached_property
    def _filter(self) -> tuple[np.ndarray, np.ndarray]:
        sos = self._sos()
        return sos, sosfilt_zi(sos)

    def filtfilt(self, x: np.ndarray) -> np.ndarray:
        """Zero-phase notch + band-pass along the last axis (scipy's sosfiltfilt, odd padding), float32; with
        ``causal``, the same filters forward only (started in their steady state at the first sample), so that
        each output sample depends on the samples up to it alone."""
        sos, zi = self._filter
        if self.causal:
            zshape = (len(sos),) + (1,) * (x.ndim - 1) + (2,)
            z = zi.reshape(zshape).astype(np.float32)
            x = np.asarray(x, dtype=np.float32)
            y, _ = sosfilt(sos.astype(np.float32), x, axis=-1, zi=z * x[None, ..., :1])
            return y
        n = x.shape[-1]
        pad = min(3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum())), n - 1)
        left = 2 * x[..., :1] - x[..., pad:0:-1]
        right = 2 * x[..., -1:] - x[..., -2:-pad - 2:-1]
        ext = np.concatenate([left, x, right], axis=-1).astype(np.float32)
        zshape = (len(sos),) + (1,) * (x.ndim - 1) + (2,)
        z = zi.reshape(zshape).astype(np.float32)
        y, _ = sosfilt(sos.astype(np.float32), ext, axis=-1, zi=z * ext[None, ..., :1])
        y = y[..., ::-1]
        y, _ = sosfilt(sos.astype(np.float32), y, axis=-1, zi=z * y[None, ..., :1])
        return y[..., ::-1][..., pad:pad + n]

    @cached_property
    def _dft(self) -> tuple[np.ndarray, np.ndarray]:
        win, _ = self.stft_params
        k = np.arange(len(self.stft_freqs()))
        n = np.arange(win)[:, None]
        w = np.hanning(win + 2)[1:-1][:, None]
        ang = 2 * np.pi * n * k[None, :] / win
        return (w * np.cos(ang)).astype(np.float32), (-w * np.sin(ang)).astype(np.float32)

    @cached_property
    def _resample_fir(self) -> np.ndarray:
        from scipy.signal import firwin

        k = self.series_factor
        return firwin(2 * 10 * k + 1, 1.0 / k, window=("kaiser", 5.0))

    def _sos(self) -> np.ndarray:
        parts = []
        nyq = self.sfreq / 2
        if self.notch_hz is not None and self.notch_hz < nyq:
            b, a = iirnotch(self.notch_hz, self.notch_hz / self.notch_width_hz, fs=self.sfreq)
            parts.append(tf2sos(b, a))
        lo, hi = self.bandpass_hz
        hi = min(hi, 0.99 * nyq)
        parts.append(butter(self.bandpass_order, [lo, hi], btype="band", fs=self.sfreq, output="sos"))
        return np.concatenate(parts)

    def window_slice(self, n_times: int) -> slice:
        a = int(round((self.tmin - self.epoch_tmin) * self.sfreq))
        b = a + int(round((self.tmax - self.tmin) * self.sfreq))
        if a < 0 or b > n_times:
            raise ValueError(f"analysis window [{self.tmin}, {self.tmax}] s is outside the epoch "
                             f"({self.epoch_tmin} s + {n_times} samples)")
        return slice(a, b)

    @property
    def stft_params(self) -> tuple[int, int]:
        win = max(2, int(round(self.stft_window_ms / 1000 * self.sfreq)))
        hop = max(1, int(round(self.stft_hop_ms / 1000 * self.sfreq)))
        return win, hop

    def stft_freqs(self) -> np.ndarray:
        win, _ = self.stft_params
        f = np.fft.rfftfreq(win, 1 / self.sfreq)
        df = f[1] - f[0]
        return f[f <= self.bandpass_hz[1] + df * 0.999]

    def output_shape(self, n_chans: int, n_times: int) -> tuple:
        sl = self.window_slice(n_times)
        L = sl.stop - sl.start
        if self.representation == "stft":
            win, hop = self.stft_params
            return (n_chans, len(self.stft_freqs()), 1 + (L - win) // hop)
        if self.representation == "wavelet":
            return (n_chans, _wavelet_levels(L) + 1, _wavelet_len(L))
        if self.representation == "erp":
            return (n_chans, 1, L // self._bin())
        if self.representation == "image":
            return (1, n_chans, L // max(1, -(-L // 64)))
        if self.representation == "series":
            return (n_chans, -(-L // self.series_factor))
        return (n_chans, L)

    @property
    def series_factor(self) -> int:
        """Decimation of the ``series`` representation: new rate >= 2.5 x the band-pass high edge."""
        return max(1, int(self.sfreq // (2.5 * min(self.bandpass_hz[1], self.sfreq / 2))))

    def _bin(self) -> int:
        return max(1, int(round(self.erp_bin_ms / 1000 * self.sfreq)))

    def _filtered_window(self, x: np.ndarray) -> np.ndarray:
        """Notch + band-pass, baseline subtracted, cropped to the analysis window (µV, not standardised)."""
        sl = self.window_slice(x.shape[-1])
        y = self.filtfilt(np.asarray(x, dtype=np.float32))
        out = y[..., sl]
        if self.baseline:
            a = int(round((self.baseline[0] - self.epoch_tmin) * self.sfreq))
            b = max(a + 1, int(round((self.baseline[1] - self.epoch_tmin) * self.sfreq)))
            out = out - y[..., a:b].mean(-1, keepdims=True)
        return out

    def peak_to_peak(self, data: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(n, channels, times) -> (n, channels) peak-to-peak amplitude of the filtered analysis window."""
        out = [np.ptp(self._filtered_window(data[i:i + chunk]), axis=-1) for i in range(0, len(data), chunk)]
        return np.concatenate(out) if out else np.zeros((0, data.shape[1]), np.float32)

    # -- the one path -------------------------------------------------------------
    def __call__(self, data: np.ndarray, chunk: int = 128) -> np.ndarray:
        """(n, channels, times) or (channels, times) -> float32 features."""
        single = data.ndim == 2
        x = data[None] if single else data
        out = self.many(x, {"x": (self.representation, self.standardize)}, chunk)["x"]
        return out[0] if single else out

    def many(self, data: np.ndarray, wanted: dict, chunk: int = 128) -> dict:
        """Several representations of (n, channels, times) epochs from one filtering pass.

        ``wanted`` maps a key to ``(representation, standardize)``; returns key -> float32 features,
        each exactly what ``with_representation(rep, standardize=...)(data)`` gives (filtering, the
        costly part, runs once: at 2000 x 128 x 1 s epochs about 4.5 s on 2 cores, not once a key).
        """
        self.window_slice(data.shape[-1])  # a clear error before any work
        # this instance where it already is the one asked for: its filter and DFT matrices are cached on it
        # (one epoch online must not redesign the filter: that alone cost ~1 ms)
        makers = {k: self if (rep, bool(std)) == (self.representation, self.standardize)
                  else self.with_representation(rep, standardize=bool(std)) for k, (rep, std) in wanted.items()}

        def run(i: int) -> dict:
            filt = self._filtered_window(data[i:i + chunk])
            z = None
            out = {}
            for k, p in makers.items():
                if p.standardize:
                    if z is None:
                        z = filt - filt.mean(-1, keepdims=True)
                        z /= z.std(-1, keepdims=True) + 1e-8
                    out[k] = p._represent(z)
                else:
                    out[k] = p._represent(filt)
            return out

        starts = list(range(0, len(data), chunk)) or [0]
        if len(starts) == 1:
            parts = [run(0)]
        else:  # scipy's filters and numpy's matmul release the GIL: use every core
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as ex:
                parts = list(ex.map(run, starts))
        return {k: np.concatenate([p[k] for p in parts]) for k in makers}

    def _represent(self, x: np.ndarray) -> np.ndarray:
        if self.representation == "time":
            return x.astype(np.float32)
        if self.representation == "series":
            from scipy.signal import resample_poly

            k = self.series_factor
            if k == 1:
                return x.astype(np.float32)
            # resample_poly's own anti-aliasing filter, designed once (designing it took a third of an epoch's
            # online preprocessing); the same numbers as resample_poly(x, 1, k) with its default window
            return resample_poly(x, 1, k, axis=-1, window=self._resample_fir.astype(x.dtype)).astype(np.float32)
        if self.representation == "image":  # the raw signal as one 2-D picture: channels x (at most 64) times
            b = max(1, -(-x.shape[-1] // 64))
            n = x.shape[-1] // b
            return x[..., :n * b].reshape(x.shape[:-1] + (n, b)).mean(-1)[..., None, :, :].astype(np.float32)
        if self.representation == "erp":
            b = self._bin()
            n = x.shape[-1] // b
            return x[..., :n * b].reshape(x.shape[:-1] + (n, b)).mean(-1)[..., None, :].astype(np.float32)
        if self.representation == "stft":
            win, hop = self.stft_params
            L = x.shape[-1]
            n_frames = 1 + (L - win) // hop
            idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
            frames = x[..., idx]  # (n, ch, frames, win)
            re = frames @ self._dft[0]  # only the kept bins: a DFT by matrix product, Hann window folded in
            im = frames @ self._dft[1]
            spec = np.sqrt(re * re + im * im)
            return np.ascontiguousarray(np.swapaxes(spec, -1, -2), dtype=np.float32)  # (n, ch, freqs, frames)
        if self.representation == "wavelet":
            import pywt

            L = x.shape[-1]
            level = _wavelet_levels(L)
            coeffs = pywt.wavedec(x, "db4", level=level, axis=-1)
            n_out = _wavelet_len(L)
            rows = []
            for c in coeffs:
                src = np.linspace(0, 1, c.shape[-1])
                dst = np.linspace(0, 1, n_out)
                a = np.abs(c)
                rows.append(np.apply_along_axis(lambda v: np.interp(dst, src, v), -1, a) if a.shape[-1] != n_out else a)
            return np.stack(rows, axis=-2).astype(np.float32)  # (n, ch, levels+1, n_out)
        raise ValueError(f"unknown representation {self.representation!r}")


def _wavelet_levels(L: int) -> int:
    import pywt

    return max(1, min(5, pywt.dwt_max_level(L, pywt.Wavelet("db4").dec_len)))


def _wavelet_len(L: int) -> int:
    return max(8, L // 16)


def preprocess(data: np.ndarray, pre: Preprocessor) -> np.ndarray:
    """Apply ``pre`` to epochs (n, channels, times); see :class:`Preprocessor`."""
    return pre(data)
