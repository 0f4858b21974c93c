"""The protocol's schema: one frozen dataclass per section, every field with its default, bounds and meaning.

:class:`Protocol` holds the sections; :func:`describe_schema` writes every field out (the self-describing
file). Validation lives in :mod:`.loading` (types and bounds) and :mod:`.checks` (fields against each other).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ..errors import ProtocolError, clip_text
from ..montage import DEFAULT_MONTAGE
from .design import Design, _design

__all__ = [
    "Protocol",
    "StimuliConfig",
    "ScreenConfig",
    "ParadigmConfig",
    "SimulateConfig",
    "AmplifierConfig",
    "EpochsConfig",
    "PreprocessingConfig",
    "TeacherConfig",
    "TrainingConfig",
    "EncoderConfig",
    "DecoderConfig",
    "FeedbackConfig",
    "SignalCheckConfig",
    "TimingConfig",
    "SessionConfig",
    "CHANNEL_TYPES",
    "DECODER_MODELS",
    "describe_schema",
]


def _f(default=dataclasses.MISSING, *, doc: str = "", ge=None, gt=None, le=None, lt=None, factory=None):
    """A dataclass field with a description and numeric bounds."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StimuliConfig:
    """Where the images are and what the classes are called."""

    folder: Optional[str] = _f(None, doc="folder with one sub-folder per class (relative to the protocol file)")
    manifest: Optional[str] = _f(None, doc="CSV with columns path,class (alternative to folder)")
    classes: dict[str, str] = _f(
        factory=dict, doc="class id -> display name used in prompts; empty: every sub-folder, named after it"
    )
    synthesize: bool = _f(False, doc="draw procedural images into `folder` when it is missing (demo)")
    synth_size_px: int = _f(256, ge=16, le=2048, doc="size of procedurally drawn images")
    extensions: list[str] = _f(
        factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"],
        doc="image file extensions (case-insensitive)",
    )


@dataclass(frozen=True)
class ScreenConfig:
    """PsychoPy window and monitor."""

    fullscreen: bool = _f(True, doc="full screen window")
    size: list[int] = _f(factory=lambda: [1280, 1024], ge=1, le=16384, doc="window size in pixels [width, height]")
    screen: int = _f(0, ge=0, le=64, doc="screen index")
    monitor: str = _f("testMonitor", doc="PsychoPy monitor name (calibration)")
    background: list[float] = _f(factory=lambda: [0.0, 0.0, 0.0], ge=-1, le=1, doc="background colour, rgb in -1..1")
    image_size_px: int = _f(400, ge=8, le=16384, doc="edge of the shown image in pixels")
    refresh_measure_frames: int = _f(60, ge=10, le=10_000, doc="frames used to measure the refresh rate at start")
    no_vsync_pace_hz: float = _f(
        60.0, gt=0, le=240,
        doc="if the measured rate is above 240 Hz there is no vertical sync (e.g. Xvfb): flips are paced in "
            "software at this rate so frames have one duration")


@dataclass(frozen=True)
class ParadigmConfig:
    """The block RSVP design (Ferrante et al. 2023 by default timings)."""

    block_s: float = _f(25.0, gt=0, le=600, doc="length of a block of images, seconds")
    image_s: float = _f(0.5, gt=0, le=60, doc="time each image is on screen, seconds")
    pause_s: float = _f(10.0, ge=0, le=3600, doc="pause after each block, seconds")
    images_per_class: int = _f(50, ge=1, le=100_000, doc="distinct images used per class")
    repeats: int = _f(1, ge=1, le=1000, doc="how often each image is shown in the session")
    runs: int = _f(4, ge=1, le=1000, doc="number of runs (one raw file each)")
    blocks_per_run: Optional[int] = _f(None, ge=1, le=100_000, doc="blocks per run; null: total blocks / runs")
    order: Literal["blocked", "interleaved"] = _f(
        "interleaved", doc="blocked: one class per block (the paper); interleaved: classes mixed (honest)"
    )
    seed: int = _f(0, ge=0, lt=2**32, doc="seed of the schedule (image choice and order)")
    fixation: bool = _f(True, doc="fixation cross during blocks and pauses")
    photodiode: bool = _f(False, doc="white patch in a corner on each onset, for timing validation")
    photodiode_size_px: int = _f(60, ge=4, le=16384, doc="edge of the photodiode patch in pixels")
    instructions: str = _f(
        "Look at the images. Keep your eyes on the centre.\n\nPress space to start.", doc="first screen"
    )
    wait_for_space: bool = _f(True, doc="space continues after instructions and pauses")
    screen: ScreenConfig = _f(factory=ScreenConfig, doc="window settings")


@dataclass(frozen=True)
class SimulateConfig:
    """The virtual amplifier's simulated subject."""

    snr: float = _f(0.15, ge=0, le=1000, doc="amplitude of class responses relative to the background")
    class_signal: float = _f(1.0, ge=0, le=1, doc="0: no class information at all (control)")
    erp_uv: float = _f(4.0, ge=0, le=1e6, doc="ERP amplitude (below 30 Hz), microvolts")
    block_drift: float = _f(0.0, ge=0, le=1e6, doc="per-block slow offset independent of class, microvolts (confound)")
    trial_jitter_ms: float = _f(10.0, ge=0, le=1000, doc="per-trial latency jitter of responses")
    noise_uv: float = _f(10.0, ge=0, le=1e6, doc="1/f background amplitude, microvolts")
    alpha_uv: float = _f(5.0, ge=0, le=1e6, doc="10 Hz alpha amplitude, microvolts")
    line_noise_uv: float = _f(20.0, ge=0, le=1e6, doc="50 Hz line noise amplitude, microvolts")
    drift_uv: float = _f(20.0, ge=0, le=1e6, doc="slow drift amplitude, microvolts")
    onset_channel: bool = _f(False, doc="add a channel 'STIM' that is 1 at each onset sample (alignment tests)")
    flat_channels: list[int] = _f(factory=list, ge=1, le=1024,
                                        doc="channels (1-based) that carry nothing: a lost electrode")
    noisy_channels: list[int] = _f(factory=list, ge=1, le=1024,
                                         doc="channels (1-based) with strong 50 Hz pick-up (a loose electrode)")
    drifting_channels: list[int] = _f(factory=list, ge=1, le=1024,
                                            doc="channels (1-based) drifting by hundreds of µV a second")
    saturated_channels: list[int] = _f(factory=list, ge=1, le=1024,
                                             doc="channels (1-based) clipped at the amplifier's range")
    high_impedance_channels: list[int] = _f(factory=list, ge=1, le=1024,
                                            doc="channels (1-based) whose simulated impedance is 120 kΩ")
    impedances: bool = _f(False, doc="also stream electrode impedances (kΩ) as an LSL stream named "
                                     "'<amplifier.stream_name>-impedance', type Impedance")
    photodiode: bool = _f(False, doc="add a channel 'Photo' (type misc) that follows the screen's photodiode patch")
    display_latency_ms: float = _f(0.0, ge=0, le=1000, doc="delay from a flip's marker to light on the screen: "
                                                          "the photodiode and the brain's response both follow it")
    display_jitter_ms: float = _f(0.0, ge=0, le=100, doc="trial-to-trial standard deviation of that delay")
    embedding_signal: float = _f(
        0.0, ge=0, le=1000, doc="image-embedding response, relative to snr: each image also evokes a fixed random "
                                "linear projection of its CLIP embedding (the teacher's model, or the tiny random "
                                "CLIP when its weights are not here), so unseen images can be identified (zero-shot); "
                                "0: off. class_signal: 0 removes it too")

    def __hash__(self) -> int:  # a cache key of the simulator's responses: the channel lists count as tuples
        return hash(tuple(tuple(v) if isinstance(v, list) else v
                          for v in (getattr(self, f.name) for f in dataclasses.fields(self))))
    chunk_ms: float = _f(10.0, ge=1, le=200, doc="pushes every chunk_ms milliseconds")
    latency_ms: float = _f(40.0, ge=0, le=2000, doc="how long the virtual amplifier holds samples before pushing "
                           "them, as a real amplifier's hardware and driver delay the signal (markers arriving "
                           "within this time still shape the samples around their onset); it adds one for one to "
                           "the stimulus-onset-to-feedback latency, so set it to your amplifier's to rehearse a visit")
    seed: int = _f(0, ge=0, lt=2**32, doc="seed of the simulated subject")
    subject: Optional[int] = _f(
        None, ge=0, lt=2**32,
        doc="one subject of a simulated population: `seed` fixes the class patterns all subjects share, "
            "`subject` this subject's own spatial mixing (how the shared sources project onto the channels), "
            "response latency (a shift of a few tens of ms) and background noise level, so that group learning "
            "can be tested where the truth is known; null: the single subject of `seed`, as before")


@dataclass(frozen=True)
class AmplifierConfig:
    """The EEG source: an LSL stream, or the virtual amplifier."""

    stream_name: str = _f("eegloop-sim", doc="LSL name of the EEG stream")
    stream_type: str = _f("EEG", doc="LSL type of the EEG stream")
    marker_stream_name: str = _f("eegloop-markers", doc="LSL name of the marker stream eegloop pushes")
    channels: int = _f(128, ge=1, le=1024, doc="expected number of EEG channels")
    sfreq: float = _f(1000.0, gt=0, le=100_000, doc="expected sampling rate, Hz")
    channel_names: list[str] = _f(factory=list, doc="channel labels; empty: taken from the stream")
    channel_types: dict[str, str] = _f(
        factory=dict, doc="channel label -> type (eeg, eog, ecg, emg, misc, stim, resp), overriding the stream's "
                          "own <type>; only eeg channels are decoded, the others are stored with the recording")
    montage: Optional[str] = _f(DEFAULT_MONTAGE, doc="electrode positions: an MNE standard montage name "
                                "(standard_1005, biosemi64, ...) or a file MNE reads (.elc, .sfp, .bvef, .csd ...), "
                                "relative to the protocol; null: none")
    resolve_timeout_s: float = _f(5.0, gt=0, le=600, doc="how long to look for a stream")
    source_id: Optional[str] = _f(
        None, doc="pin the EEG stream to this LSL source id (when several streams match name/type)")
    hostname: Optional[str] = _f(None, doc="pin the EEG stream to this host (when several streams match)")
    buffer_s: float = _f(30.0, gt=1, le=600, doc="seconds of signal the recorder keeps in memory for cutting epochs")
    stall_timeout_s: float = _f(5.0, gt=0, le=600, doc="no EEG samples for this long stops the visit (stream lost)")
    lsl_scope: Literal["machine", "link", "site", "organization", "global"] = _f(
        "machine", doc="LSL discovery scope: machine for one PC, link for an amplifier PC on the lab network"
    )
    simulate: Optional[SimulateConfig] = _f(None, doc="use the virtual amplifier with these settings")


@dataclass(frozen=True)
class EpochsConfig:
    """How epochs are cut around each stimulus onset."""

    tmin: float = _f(0.0, ge=-10, le=10, doc="start of the analysis window relative to onset, seconds")
    tmax: float = _f(0.5, ge=-10, le=10, doc="end of the analysis window relative to onset, seconds")
    margin_s: float = _f(0.25, ge=0, le=10, doc="extra signal kept on both sides for filtering")
    right_margin_s: Optional[float] = _f(
        None, ge=0, le=10, doc="signal kept after tmax, seconds; null: margin_s. An epoch is complete (and decoded "
                               "online) right_margin_s after tmax: with preprocessing.causal, 0 decodes it the moment "
                               "its window ends")
    baseline: Optional[list[float]] = _f(None, ge=-10, le=10, doc="[start, end] seconds to subtract, or null")
    reject_uv: Optional[float] = _f(
        None, gt=0, le=1e6, doc="drop epochs whose peak-to-peak amplitude (band-passed, any channel) exceeds this, "
                                "microvolts; null: keep all")
    flat_uv: Optional[float] = _f(
        None, gt=0, le=1e6, doc="drop epochs with a channel whose peak-to-peak amplitude is below this, microvolts "
                                "(a flat or disconnected electrode); null: keep all")


@dataclass(frozen=True)
class PreprocessingConfig:
    """Paper-exact preprocessing by default (§3.2)."""

    notch_hz: Optional[float] = _f(50.0, gt=0, le=50_000, doc="notch centre, Hz, or null for none")
    notch_width_hz: float = _f(2.0, gt=0, le=50_000, doc="notch width, Hz (49–51 Hz for 50 Hz)")
    bandpass_hz: list[float] = _f(factory=lambda: [14.0, 70.0], gt=0, le=50_000, doc="[low, high] Butterworth band, Hz")
    bandpass_order: int = _f(2, ge=1, le=10, doc="Butterworth order")
    standardize: bool = _f(True, doc="per-channel standardisation")
    causal: bool = _f(False, doc="forward-only (causal) notch and band-pass, the same offline and online: a sample's "
                                 "filtered value depends on the past only, so no signal after the window is needed "
                                 "(epochs.right_margin_s: 0); the filters delay the signal a little, which the "
                                 "decoder learns. false: zero-phase (the paper's)")
    representation: Literal["stft", "wavelet", "erp"] = _f(
        "stft", doc="input of the student: stft (paper), wavelet (db4), erp (signal averaged in erp_bin_ms bins, "
                    "for slow evoked responses)")
    erp_bin_ms: float = _f(50.0, gt=0, le=20_000, doc="bin width of the erp representation, ms")
    stft_window_ms: float = _f(40.0, gt=0, le=20_000, doc="STFT window, ms")
    stft_hop_ms: float = _f(20.0, gt=0, le=20_000, doc="STFT hop, ms")


@dataclass(frozen=True)
class TeacherConfig:
    """The CLIP image teacher (open_clip)."""

    enabled: bool = _f(True, doc="use knowledge distillation; false: plain cross-entropy")
    model: str = _f("ViT-B-32", doc="open_clip model name, or 'local-dir:PATH'")
    pretrained: Optional[str] = _f("openai", doc="open_clip pretrained tag or a local checkpoint path")


@dataclass(frozen=True)
class EncoderConfig:
    """The EEG -> image-embedding encoder (zero-shot decoding, retrieve/embedding feedback)."""

    enabled: bool = _f(False, doc="train the encoder in quick-train (on automatically for feedback modes retrieve "
                                  "and embedding); its targets are the teacher's CLIP image embeddings")
    filters: int = _f(40, ge=1, le=4096, doc="spatial filters (virtual channels) of the temporal-spatial convolution")
    attention_dim: int = _f(32, ge=0, le=4096, doc="size of the channel-attention keys; 0: no channel attention")
    hidden: int = _f(512, ge=8, le=16384, doc="width of the projection head")
    dropout: float = _f(0.3, ge=0, lt=1, doc="dropout")
    mse_weight: float = _f(0.0, ge=0, le=1000, doc="weight of an MSE term between predicted and target embeddings, "
                                                   "added to the contrastive loss")
    temperature: float = _f(0.07, gt=0, le=10, doc="initial temperature of the contrastive loss (learned)")
    lr: float = _f(3e-3, gt=0, le=10, doc="AdamW learning rate")
    weight_decay: float = _f(0.01, ge=0, le=10, doc="AdamW weight decay")
    batch_size: int = _f(128, ge=2, le=65536, doc="batch size (the contrastive loss compares within a batch)")
    max_epochs: int = _f(60, ge=1, le=100_000, doc="maximum training epochs")
    patience: int = _f(10, ge=1, le=100_000, doc="early stopping patience on the held-out blocks' loss, epochs")
    budget_s: float = _f(60.0, ge=0, le=86_400, doc="time budget of the encoder's training, seconds; 0: no limit")
    schedule: Literal["budget", "constant"] = _f(
        "budget", doc="budget: where max_epochs cannot fit budget_s at the first epoch's pace, lr decays linearly "
                      "to zero at the budget's end (as training.schedule); constant: lr throughout")
    test_share: float = _f(0.25, gt=0, lt=1, doc="evaluate --zero-shot: share of classes held out (when the data do "
                                                 "not name their test classes)")


@dataclass(frozen=True)
class TrainingConfig:
    """Student training (§3.5–3.6)."""

    alpha: float = _f(0.5, ge=0, le=1, doc="weight of cross-entropy; 1 - alpha on distillation")
    temperature: float = _f(1.0, gt=0, le=100, doc="distillation temperature T")
    lr: float = _f(3e-4, gt=0, le=10, doc="Adam learning rate")
    batch_size: int = _f(64, ge=1, le=65536, doc="batch size")
    grad_clip: float = _f(1.0, gt=0, le=1e6, doc="gradient norm clip")
    patience: int = _f(10, ge=1, le=100_000, doc="early-stopping patience on validation loss, epochs")
    max_epochs: int = _f(50, ge=1, le=100_000, doc="maximum training epochs")
    split: Literal["block", "run"] = _f("block", doc="cross-validation folds by whole block or whole run")
    n_folds: int = _f(5, ge=2, le=1000, doc="number of folds")
    precision: Literal["auto", "fp32", "bf16"] = _f(
        "auto", doc="auto: where the hardware has bfloat16 (CUDA, CPUs with AMX/AVX512-BF16), a few training steps "
                    "are timed both ways and the faster is used; else fp32")
    budget_s: float = _f(60.0, ge=0, le=86_400, doc="quick-train's time budget in seconds, everything included: "
                         "the network's epochs are planned from the measured seconds per epoch and training stops "
                         "at the budget with the best weights so far, saying so; 0: no limit")
    schedule: Literal["budget", "constant"] = _f(
        "budget", doc="learning rate over the epochs. budget: the paper's constant lr while its max_epochs fit "
                      "budget_s; where they do not (measured after the first epoch), the rest of the budget runs "
                      "at budget_lr decaying linearly to zero at the budget's end (budget-aware training, Li et "
                      "al. 2020), so the kept weights come from a settled net, not one cut mid-descent. constant: "
                      "lr throughout, cut at the budget")
    budget_lr: float = _f(1e-3, gt=0, le=10, doc="schedule budget: the learning rate the linear decay starts from "
                          "when the budget cannot hold max_epochs")
    quick_train_after_min: Optional[float] = _f(
        None, gt=0, le=1440, doc="start the quick-train after this many minutes of data; null: after the recording runs"
    )
    seed: int = _f(0, ge=0, lt=2**32, doc="training seed")


CHANNEL_TYPES = ("eeg", "eog", "ecg", "emg", "misc", "stim", "resp")  # MNE's names; only eeg is decoded
#: a group model's name (it names a folder, ``models/group-<name>/``): what ``pretrain --name`` and
#: ``decoder.group_model`` accept
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
DECODER_MODELS = ("auto", "kd_stft", "kd_erp", "kd_wavelet", "riemann", "lda_windowed", "lda_st", "logreg_windowed",
                  "vote", "eegnet", "shallow_fbcsp")


@dataclass(frozen=True)
class SignalCheckConfig:
    """The signal check before (and between) recordings: each channel pass, warn or fail."""

    seconds: float = _f(4.0, ge=1, le=600, doc="how much signal the check looks at")
    flat_uv: float = _f(0.5, ge=0, le=1e6, doc="fail: standard deviation below this (µV): no signal")
    rail_uv: float = _f(3000.0, gt=0, le=1e9, doc="fail: 1 % of samples at or beyond this magnitude (µV): saturated")
    line_warn_uv: float = _f(50.0, gt=0, le=1e6, doc="warn: line-noise amplitude (RMS µV at the line frequency)")
    line_fail_uv: float = _f(150.0, gt=0, le=1e6, doc="fail: line-noise amplitude (RMS µV)")
    rms_warn_uv: float = _f(75.0, gt=0, le=1e6, doc="warn: broadband 1-40 Hz RMS (µV)")
    rms_fail_uv: float = _f(200.0, gt=0, le=1e6, doc="fail: broadband 1-40 Hz RMS (µV)")
    drift_warn_uv_s: float = _f(50.0, gt=0, le=1e6, doc="warn: drift, slope of a straight-line fit (µV/s)")
    drift_fail_uv_s: float = _f(200.0, gt=0, le=1e6, doc="fail: drift (µV/s)")
    before_visit: bool = _f(True, doc="record and session check the signal first and refuse to start on a fail "
                                      "(--force records anyway); the result is stored with the session")
    impedance_stream: Optional[str] = _f(None, doc="LSL stream (name) of electrode impedances in kΩ, one channel "
                                                   "per electrode labelled as in the EEG stream; null: none")
    impedance_warn_kohm: float = _f(25.0, gt=0, le=1e6, doc="warn: electrode impedance above this (kΩ)")
    impedance_fail_kohm: float = _f(50.0, gt=0, le=1e6, doc="fail: electrode impedance above this (kΩ)")


@dataclass(frozen=True)
class TimingConfig:
    """Display timing: the photodiode, the marker-to-photon delay, and the offset applied when cutting epochs."""

    static_offset_ms: float = _f(0.0, ge=-1000, le=1000, doc="added to every stimulus marker's time before epochs "
                                 "are cut: the display's marker-to-photon delay (measure it: eegloop check-timing)")
    photodiode_channel: Optional[str] = _f(None, doc="label of the channel carrying a photodiode on the screen's "
                                           "patch (paradigm.photodiode); each stimulus's delay is then measured")
    max_delay_ms: float = _f(150.0, gt=0, le=2000, doc="a photodiode onset is looked for up to this long after "
                                                       "its marker")
    invert: bool = _f(False, doc="the photodiode's signal falls when the patch lights")
    check_trials: int = _f(60, ge=5, le=10_000, doc="flashes shown by eegloop check-timing")
    check_interval_s: float = _f(0.3, ge=0.1, le=10, doc="time between two flashes of eegloop check-timing")


@dataclass(frozen=True)
class DecoderConfig:
    """Which decoder the online loop uses."""

    model: Literal["auto", "kd_stft", "kd_erp", "kd_wavelet", "riemann", "lda_windowed", "lda_st", "logreg_windowed",
                   "vote", "eegnet", "shallow_fbcsp"] = _f(
        "auto", doc="auto: quick-train compares the candidates on honest inner folds and keeps the best; or pin one: "
                    "kd_stft (the paper's CNN), kd_erp, kd_wavelet, riemann (xDAWN covariances, tangent space, "
                    "logistic regression), lda_windowed (shrinkage LDA on 50 ms window means), lda_st (the same LDA, "
                    "shrunk towards a spatial x temporal covariance), logreg_windowed, "
                    "vote (the mean of those three's probabilities), eegnet and shallow_fbcsp (braindecode's "
                    "EEGNet and ShallowFBCSPNet on the time series)")
    candidates: list[str] = _f(
        factory=lambda: ["vote", "lda_st", "lda_windowed", "logreg_windowed", "riemann", "kd_erp", "kd_stft"],
        doc="what auto compares, in order of preference: the first within one standard error of the best is kept "
            "(vote: the mean of lda_windowed, logreg_windowed and riemann, scored from their folds at no extra fit; "
            "lda_st: LDA shrunk towards a spatial x temporal covariance)")
    select_budget_s: float = _f(30.0, gt=0, le=86_400, doc="time budget of the comparison, seconds: candidates "
                                                           "that would not finish in it are skipped (and listed); "
                                                           "quick-train's own fit comes on top")
    inner_folds: int = _f(3, ge=2, le=100, doc="inner folds (whole blocks or runs) of the comparison")
    evaluate_budget_s: float = _f(150.0, ge=0, le=864_000,
                                  doc="wall-clock target of `eegloop evaluate`, seconds: the networks share what "
                                      "the scikit-learn pipelines and auto leave (at least 40 %), and a fit that "
                                      "reaches its share stops (named in the report); 0: no limit")
    group_model: Optional[str] = _f(
        None, doc="a group model (`eegloop pretrain --name G`, `pretrain --list`) to start from: quick-train aligns "
                  "it to the subject on their own epochs (no labels needed), tunes its prior (the group's time "
                  "courses) to their labelled epochs, and blends it with the subject's own model (group_weight); "
                  "null: the subject's own model alone")
    group_weight: Optional[float] = _f(
        None, ge=0, le=1, doc="the group model's weight in the blend p = w p_group + (1 - w) p_own. null: chosen "
                              "among 1, 0.75, 0.5, 0.25, 0 on the same inner folds as the candidates (0: from "
                              "scratch wins; the better is kept); 1: zero calibration, the group model alone "
                              "(the subject's labels unused, no own model fitted); another number: fixed, p_group "
                              "then the group model tuned to the subject's labelled epochs where it keeps a prior "
                              "(null: the folds choose between it and the aligned one)")


@dataclass(frozen=True)
class FeedbackConfig:
    """Closed-loop feedback with generated images."""

    trials: int = _f(20, ge=1, le=100_000, doc="feedback trials")
    prompt: str = _f("an image of a {class}", doc="prompt template; {class} is the display name")
    generator: str = _f("stabilityai/sd-turbo", doc="diffusers model: cached hub id or local folder")
    steps: int = _f(1, ge=1, le=1000, doc="inference steps")
    guidance: float = _f(0.0, ge=0, le=100, doc="classifier-free guidance scale")
    size_px: int = _f(512, ge=8, le=16384, doc="generated image edge, pixels")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = _f("auto", doc="auto: fp16 on CUDA, fp32 on CPU")
    mode: Literal["live", "bank", "stimulus", "retrieve", "embedding"] = _f(
        "bank", doc="live: generate per trial; bank: pre-generate per class; stimulus: show a held-out image; "
                    "retrieve: the image nearest to the decoded CLIP embedding (encoder) among retrieve_folder's; "
                    "embedding: an image generated from the decoded embedding (embedding_generator)"
    )
    retrieve_folder: Optional[str] = _f(
        None, doc="retrieve: folder of candidate images at any depth, of any classes (trained or never trained); "
                  "null: the stimulus images")
    embedding_generator: Optional[str] = _f(
        None, doc="embedding: a diffusers pipeline that takes image embeddings (Stable unCLIP: a local folder or a "
                  "cached hub id); its image-embedding size must match the teacher's CLIP")
    bank_per_class: int = _f(4, ge=1, le=1000, doc="images per class in bank mode")
    cue_share: float = _f(0.1, ge=0, le=0.5, doc="share of each class's images kept out of quick-train and used as "
                                                 "the feedback cues, so feedback accuracy is an honest online "
                                                 "estimate; 0: cues may be training images (said in the report)")
    format: Literal["cue", "rsvp"] = _f(
        "cue", doc="cue: one held-out image, then its feedback; rsvp: a burst of rsvp_images held-out images of "
                   "the trial's class at the training pace (paradigm.image_s, back to back), each an epoch like "
                   "the training epochs, decided by their summed log-probabilities, then the feedback image")
    rsvp_images: int = _f(5, ge=1, le=1000, doc="images per feedback trial in the rsvp format")
    display_s: float = _f(1.5, gt=0, le=60, doc="how long the feedback image stays on screen")
    seed: int = _f(0, ge=0, lt=2**32, doc="generation seed")


    @property
    def images_per_trial(self) -> int:
        """Images (and epochs) in one feedback trial: ``rsvp_images`` in the rsvp format, else one."""
        return self.rsvp_images if self.format == "rsvp" else 1


@dataclass(frozen=True)
class SessionConfig:
    """The visit's phases: how much recording the quick-train and the feedback wait for."""

    calibration_min: Optional[float] = _f(
        None, gt=0, le=1440, doc="end the recording once this many minutes of stimuli are in (each block's images "
        "x image_s, pauses not counted; whole blocks, in the design's order, those of a resumed session counted), "
        "then quick-train and feedback begin: the later blocks are not shown (a shorter calibration, e.g. with a "
        "group model). null: every block of the design")


@dataclass(frozen=True)
class Protocol:
    """A complete, validated protocol. Immutable; build with :func:`load_protocol`."""

    name: str = _f("unnamed", doc="short name of the protocol")
    description: str = _f("", doc="free text")
    stimuli: StimuliConfig = _f(factory=StimuliConfig)
    paradigm: ParadigmConfig = _f(factory=ParadigmConfig)
    amplifier: AmplifierConfig = _f(factory=AmplifierConfig)
    epochs: EpochsConfig = _f(factory=EpochsConfig)
    preprocessing: PreprocessingConfig = _f(factory=PreprocessingConfig)
    teacher: TeacherConfig = _f(factory=TeacherConfig)
    training: TrainingConfig = _f(factory=TrainingConfig)
    encoder: EncoderConfig = _f(factory=EncoderConfig)
    decoder: DecoderConfig = _f(factory=DecoderConfig)
    feedback: FeedbackConfig = _f(factory=FeedbackConfig)
    signal_check: SignalCheckConfig = _f(factory=SignalCheckConfig)
    timing: TimingConfig = _f(factory=TimingConfig)
    session: SessionConfig = _f(factory=SessionConfig)
    source: Optional[str] = field(default=None, compare=False, metadata={"internal": True})

    # -- paths -----------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """Folder relative paths in the protocol are resolved against."""
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def resolve_path(self, p: str | None) -> Path | None:
        if p is None:
            return None
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    # -- conversions -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included (the self-describing form)."""
        d = _to_plain(self)
        d.pop("source", None)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @property
    def sha256(self) -> str:
        """Hash of the complete protocol (defaults included), for the database."""
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()

    def replace(self, **sections: Any) -> "Protocol":
        """A copy with whole sections or top-level fields replaced."""
        return dataclasses.replace(self, **sections)

    # -- design ----------------------------------------------------------------
    def design(self, n_classes: int | None = None) -> Design:
        """The design implied by the paradigm for ``n_classes`` classes.

        Raises :class:`ProtocolError` if the numbers do not fit together.
        """
        p = self.paradigm
        if n_classes is None:
            n_classes = len(self.stimuli.classes)
        if n_classes < 2:
            raise ProtocolError(
                f"{self._where()}stimuli.classes: the design needs at least 2 classes, got {n_classes}"
            )
        return _design(p, n_classes, self._where())

    def _where(self) -> str:
        return f"{clip_text(self.source, 1000)}: " if self.source else ""


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def describe_schema() -> str:
    """Every section and field with its default and meaning (the self-describing file)."""
    lines: list[str] = []

    def walk(cls, indent: int) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            sub = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
            pad = "  " * indent
            if sub:
                lines.append(f"{pad}{f.name}:  # {f.metadata.get('doc', '')}".rstrip(" #"))
                walk(sub[0], indent + 1)
            else:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                lines.append(f"{pad}{f.name}: {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}"
                             f"  # {f.metadata.get('doc', '')}")
    walk(Protocol, 0)
    return "\n".join(lines)
