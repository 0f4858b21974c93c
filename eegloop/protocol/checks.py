"""Cross-checks of a protocol: fields that are valid alone but not together (one line naming the field)."""
from __future__ import annotations

from ..errors import ProtocolError, clip_text, short_repr
from .design import _design
from .schema import CHANNEL_TYPES, DECODER_MODELS, GROUP_NAME, Protocol


def _cross_checks(p: Protocol) -> None:
    """Check the fields of ``p`` against each other, in the order a reader meets the sections; the first
    problem raises :class:`~eegloop.errors.ProtocolError` naming the file and the field."""
    where = p._where()
    for check in (_check_stimuli, _check_screen, _check_amplifier, _check_timing, _check_epochs, _check_decoder,
                  _check_preprocessing, _check_feedback):
        check(p, where)
    if p.stimuli.classes:
        _design(p.paradigm, len(p.stimuli.classes), where)


def _window_samples(p: Protocol) -> int:
    """Samples in the analysis window ``epochs.tmin..tmax`` at ``amplifier.sfreq``."""
    return int(round((p.epochs.tmax - p.epochs.tmin) * p.amplifier.sfreq))


def _check_stimuli(p: Protocol, where: str) -> None:
    """Class ids and names fit the database; a folder or a manifest; what synthesize needs."""
    for cid, name in p.stimuli.classes.items():  # the database stores class ids in 128 characters
        if not cid or len(cid) > 128 or len(name) > 256:
            raise ProtocolError(f"{where}stimuli.classes: class id {clip_text(cid, 40)!r} must be 1-128 characters "
                                "and its name at most 256")
    if p.stimuli.folder is None and p.stimuli.manifest is None:
        raise ProtocolError(f"{where}stimuli: give a folder (one sub-folder per class) or a manifest CSV")
    if p.stimuli.folder is not None and p.stimuli.manifest is not None:
        raise ProtocolError(f"{where}stimuli.manifest: give either folder or manifest, not both")
    if p.stimuli.synthesize and p.stimuli.folder is None:
        raise ProtocolError(f"{where}stimuli.synthesize: needs stimuli.folder to draw into")
    if p.stimuli.synthesize and len(p.stimuli.classes) < 2:
        raise ProtocolError(f"{where}stimuli.classes: synthesize needs the class list (at least 2 classes)")


def _check_screen(p: Protocol, where: str) -> None:
    """The window's size and background colour have their lengths."""
    if len(p.paradigm.screen.size) != 2 or min(p.paradigm.screen.size) < 1:
        raise ProtocolError(
            f"{where}paradigm.screen.size: must be [width, height], got {short_repr(p.paradigm.screen.size)}")
    if len(p.paradigm.screen.background) != 3:
        raise ProtocolError(
            f"{where}paradigm.screen.background: must be [r, g, b], got {short_repr(p.paradigm.screen.background)}")


def _check_amplifier(p: Protocol, where: str) -> None:
    """Simulated channel faults name existing channels; channel names and types fit."""
    sim = p.amplifier.simulate
    for fld in ("flat_channels", "noisy_channels", "drifting_channels", "saturated_channels",
                "high_impedance_channels"):
        bad = [c for c in (getattr(sim, fld) if sim is not None else []) if not 1 <= c <= p.amplifier.channels]
        if bad:
            raise ProtocolError(f"{where}amplifier.simulate.{fld}: channel {bad[0]} is not one of 1.."
                                f"{p.amplifier.channels} (amplifier.channels)")
    if p.amplifier.channel_names and len(p.amplifier.channel_names) != p.amplifier.channels:
        raise ProtocolError(
            f"{where}amplifier.channel_names: {len(p.amplifier.channel_names)} names for "
            f"{p.amplifier.channels} channels"
        )
    for label, typ in p.amplifier.channel_types.items():
        if typ.lower() not in CHANNEL_TYPES:
            raise ProtocolError(f"{where}amplifier.channel_types: {clip_text(label, 40)!r} has type "
                                f"{short_repr(typ, 40)}; choose from {', '.join(CHANNEL_TYPES)}")


def _check_timing(p: Protocol, where: str) -> None:
    """A photodiode channel needs the photodiode patch on the screen."""
    if p.timing.photodiode_channel is not None and not p.paradigm.photodiode:
        raise ProtocolError(f"{where}timing.photodiode_channel: needs paradigm.photodiode: true (the patch the "
                            "sensor reads)")


def _check_epochs(p: Protocol, where: str) -> None:
    """The window fits the buffer and holds 2 samples; baseline inside it; flat below reject."""
    e = p.epochs
    if e.tmax <= e.tmin:
        raise ProtocolError(f"{where}epochs.tmax: must be > epochs.tmin ({e.tmin}), got {e.tmax}")
    amp = p.amplifier
    sf = amp.sfreq
    right = e.margin_s if e.right_margin_s is None else e.right_margin_s
    span = (e.tmax - e.tmin) + e.margin_s + right
    if span >= amp.buffer_s:
        raise ProtocolError(
            f"{where}epochs.tmax: the epoch {e.tmin:g}..{e.tmax:g} s plus its margins ({e.margin_s:g} s, {right:g} s) "
            f"({span:g} s) must be shorter than amplifier.buffer_s ({amp.buffer_s:g} s), got {e.tmax:g}"
        )
    n_win = _window_samples(p)
    if n_win < 2:
        raise ProtocolError(
            f"{where}epochs.tmax: the window {e.tmin:g}..{e.tmax:g} s holds {n_win} samples at amplifier.sfreq "
            f"{sf:g} Hz; it needs at least 2, got {e.tmax:g}"
        )
    if e.baseline is not None:
        if len(e.baseline) != 2 or not (e.tmin <= e.baseline[0] < e.baseline[1] <= e.tmax):
            raise ProtocolError(
                f"{where}epochs.baseline: must be [start, end] inside [{e.tmin}, {e.tmax}], "
                f"got {short_repr(e.baseline)}"
            )
    if e.reject_uv is not None and e.flat_uv is not None and e.flat_uv >= e.reject_uv:
        raise ProtocolError(f"{where}epochs.flat_uv: must be below epochs.reject_uv ({e.reject_uv:g}), "
                            f"got {e.flat_uv:g}")


def _check_decoder(p: Protocol, where: str) -> None:
    """The candidates are distinct known decoder names."""
    dc = p.decoder
    bad = [c for c in dc.candidates if c not in DECODER_MODELS or c == "auto"]
    if bad or not dc.candidates or len(set(dc.candidates)) != len(dc.candidates):
        raise ProtocolError(f"{where}decoder.candidates: a non-empty list of distinct names from "
                            f"{', '.join(DECODER_MODELS[1:])}, got {short_repr(dc.candidates)}")
    if dc.group_model is not None and not GROUP_NAME.fullmatch(str(dc.group_model)):
        raise ProtocolError(f"{where}decoder.group_model: a group model name (1-64 letters, digits, '-' or '_', "
                            f"starting with a letter or digit) or null, got {short_repr(dc.group_model)}")
    if dc.group_weight is not None and dc.group_model is None:
        raise ProtocolError(f"{where}decoder.group_weight: set without decoder.group_model (a weight of which "
                            "group model?)")


def _check_preprocessing(p: Protocol, where: str) -> None:
    """Band-pass and notch below Nyquist; STFT window and ERP bin fit the epoch."""
    pp, e, sf = p.preprocessing, p.epochs, p.amplifier.sfreq
    n_win = _window_samples(p)
    nyq = p.amplifier.sfreq / 2
    if len(pp.bandpass_hz) != 2 or not (0 < pp.bandpass_hz[0] < pp.bandpass_hz[1]):
        raise ProtocolError(f"{where}preprocessing.bandpass_hz: must be [low, high] with 0 < low < high")
    if pp.bandpass_hz[1] >= nyq:
        raise ProtocolError(
            f"{where}preprocessing.bandpass_hz: high edge {pp.bandpass_hz[1]} Hz must be below Nyquist "
            f"({nyq:g} Hz at amplifier.sfreq {p.amplifier.sfreq:g})"
        )
    if pp.bandpass_hz[0] >= 0.99 * nyq:  # the high edge is clipped to 0.99 x Nyquist when filtering
        raise ProtocolError(
            f"{where}preprocessing.bandpass_hz: low edge {pp.bandpass_hz[0]} Hz must be below 0.99 x Nyquist "
            f"({0.99 * nyq:g} Hz at amplifier.sfreq {p.amplifier.sfreq:g})"
        )
    if pp.notch_hz is not None and pp.notch_hz + pp.notch_width_hz / 2 >= nyq:
        raise ProtocolError(f"{where}preprocessing.notch_hz: {pp.notch_hz} Hz is at or above Nyquist ({nyq:g} Hz)")
    if pp.notch_hz is not None and pp.notch_hz - pp.notch_width_hz / 2 <= 0:
        raise ProtocolError(
            f"{where}preprocessing.notch_width_hz: a {pp.notch_width_hz:g} Hz wide notch at {pp.notch_hz:g} Hz "
            f"reaches 0 Hz, got {pp.notch_width_hz:g}"
        )
    win_len = e.tmax - e.tmin
    if pp.stft_window_ms / 1000 > win_len:
        raise ProtocolError(
            f"{where}preprocessing.stft_window_ms: {pp.stft_window_ms} ms is longer than the epoch ({win_len * 1000:g} ms)"
        )
    if pp.stft_hop_ms > pp.stft_window_ms:
        raise ProtocolError(f"{where}preprocessing.stft_hop_ms: must be <= stft_window_ms ({pp.stft_window_ms})")
    n_stft = max(2, int(round(pp.stft_window_ms / 1000 * sf)))  # as the preprocessor rounds it
    if n_stft > n_win:
        raise ProtocolError(
            f"{where}preprocessing.stft_window_ms: {n_stft} samples at {sf:g} Hz is longer than the epoch "
            f"({n_win} samples), got {pp.stft_window_ms:g}"
        )
    n_bin = max(1, int(round(pp.erp_bin_ms / 1000 * sf)))
    if pp.representation == "erp" and n_bin > n_win:
        raise ProtocolError(
            f"{where}preprocessing.erp_bin_ms: one bin ({n_bin} samples at {sf:g} Hz) is longer than the epoch "
            f"({n_win} samples), got {pp.erp_bin_ms:g}"
        )


def _check_feedback(p: Protocol, where: str) -> None:
    """The prompt template has its class placeholder."""
    if "{class}" not in p.feedback.prompt:
        raise ProtocolError(f"{where}feedback.prompt: must contain '{{class}}', got {short_repr(p.feedback.prompt)}")
