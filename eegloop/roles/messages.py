"""The small typed messages the processes of a visit exchange (pickled over pipes and queues).

Commands go from the orchestrator (the visit's own process) to one child and get one reply; events go from a
child to the orchestrator whenever something happens. Bus events (:mod:`eegloop.bus`: ``Stream``, ``Marker``)
also travel as they are and are published on the orchestrator's bus, where the console hears them.

========================  ===========================================================================
process                   commands (reply)                          events
========================  ===========================================================================
presenter                 OpenWindow (Display), ShowText, SetScreen,   TrialShown, BlockShown, PausedAfter,
                          PushMarker, ShowRun (RunShown),              Resumed, EscapePressed,
                          FeedbackBlock (FeedbackBlockShown),          FeedbackShown
                          FlashTest (onsets), CloseWindow;
                          controls: Abort, Pause,
                          Resume, Fail
acquisition               Connect (StreamDescription), StartRecording, RecorderFailed, Samples,
                          BeginRun, AddTimings, EndRun (run stats),    bus.Stream, bus.Marker
                          GetStats (RecorderStats), Subscribe,
                          Unsubscribe, StopRecording (Stopped)
amplifier                 (streams from its start), WaitMarkers (bool) -
worker                    LoadModel (ModelLoaded), PrepareFeedback     Say; FeedbackImage to the presenter
                          (FeedbackReady), StartDecoding,              (its own queue)
                          StopDecoding
========================  ===========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# -- presenter ----------------------------------------------------------------------------------------------------


@dataclass
class OpenWindow:
    """Open the window (after raising the process's priority), measure the refresh rate."""


@dataclass
class Display:
    frame_rate: float
    measured_rate: float
    paced: bool
    frames_per_image: int
    scheduling: str  # one line: the priority obtained or refused
    policy: str  # fifo, nice, high, normal


@dataclass
class ShowText:
    """Show a message until space (``wait_space``) or for ``duration`` s; Escape: the reply is ``Aborted``."""

    text: str
    wait_space: bool = False
    duration: Optional[float] = None


@dataclass
class SetScreen:
    """What the idle window shows between commands (a rest screen, its countdown): ``None`` keeps the last frame."""

    text: Optional[str]


@dataclass
class PushMarker:
    event: str
    fields: dict = field(default_factory=dict)


@dataclass
class ShowRun:
    run: Any  # eegloop.paradigm.schedule.Run
    capture_trials: tuple = ()


@dataclass
class RunShown:
    run: int
    timings: list  # TrialTiming
    aborted: bool = False
    partial_block: Optional[int] = None
    failed: Optional[str] = None  # the recording failed (Fail): the run stopped at the next frame
    captured: dict = field(default_factory=dict)  # trial -> the frame drawn (capture_trials)
    dropped_frames: int = 0


@dataclass
class FeedbackBlock:
    """A feedback block: each planned trial's cue (or burst), then the decoded image the worker sends."""

    plan: list  # eegloop.feedback.loop.PlannedTrial
    run_index: int
    block: int
    mode: str
    display_frames: int
    timeout_s: float
    preload: list = field(default_factory=list)  # image files known before the block (a bank)


@dataclass
class FeedbackBlockShown:
    trials: int
    aborted: bool = False
    failed: Optional[str] = None
    frame_rate: float = 0.0


@dataclass
class FlashTest:
    """The timing check: light the photodiode patch ``n`` times, ``interval_s`` apart (reply: the flips' LSL times)."""

    n: int
    interval_s: float


@dataclass
class CloseWindow:
    pass


@dataclass
class Abort:
    """The operator's abort (console button): the running command ends as after Escape."""


@dataclass
class Pause:
    """Pause after the current block (until :class:`Resume`)."""


@dataclass
class Resume:
    pass


@dataclass
class Fail:
    """The recording behind the paradigm failed: stop at the next frame and show the neutral message."""

    reason: str


@dataclass
class TrialShown:
    run: int
    block: int
    trial: int
    class_id: str
    onset_lsl: float


@dataclass
class BlockShown:
    run: int
    block: int
    timings: list  # TrialTiming of its images
    dropped_frames: int  # since the window opened


@dataclass
class Interrupted:
    """The recording failed mid-block: the timings of what the block showed (sent before the neutral message)."""

    run: int
    block: int
    timings: list


@dataclass
class PausedAfter:
    run: int
    block: int


@dataclass
class Resumed:
    run: int
    block: int


@dataclass
class EscapePressed:
    """Escape on the idle window (a rest screen)."""


@dataclass
class FeedbackShown:
    """One feedback trial as the subject saw it (``image`` None: nothing came in time, ``missing`` says what)."""

    index: int  # 0-based position in the plan
    trial: int
    true_class: str
    cue: str
    onset_lsl: float
    image: Optional["FeedbackImage"] = None
    on_screen_lsl: float = float("nan")
    missing: Optional[str] = None


# -- acquisition --------------------------------------------------------------------------------------------------


@dataclass
class Connect:
    markers: bool = True
    marker_source_id: Optional[str] = None
    eeg_source_id: Optional[str] = None
    timeout: Optional[float] = None
    expect_timings: bool = False
    forward_samples: bool = False  # the console's traces: every chunk to the orchestrator


@dataclass
class StreamDescription:
    channels: list  # {"name", "type", "unit"}
    ch_names: list
    eeg_idx: list
    eeg_names: list
    sfreq: float


@dataclass
class StartRecording:
    session_id: Optional[int]
    raw_dir: Optional[str]
    raw_prefix: str = "run"


@dataclass
class BeginRun:
    run: int
    expect_timings: Optional[bool] = None  # blocks wait for the paradigm's trial timings (None: as connected)


@dataclass
class AddTimings:
    run: int
    block: int
    rows: list


@dataclass
class EndRun:
    wait: bool = True
    status: str = "done"
    reason: Optional[str] = None


@dataclass
class GetStats:
    pass


@dataclass
class Subscribe:
    """Publish every valid epoch from now on to the epoch queue (bounded, drop-oldest, counted)."""


@dataclass
class Unsubscribe:
    pass


@dataclass
class StopRecording:
    status: str = "done"
    reason: Optional[str] = None


@dataclass
class Stopped:
    stats: Any  # RecorderStats
    raw_files: list
    blocks_stored: list  # (block index, block id, status, reason)
    photon_delays_ms: list = field(default_factory=list)  # marker to light, per stimulus (a photodiode channel)


@dataclass
class RecorderFailed:
    reason: str


@dataclass
class Samples:
    data: Any  # (channels, n) float32
    ts: Any


# -- amplifier ----------------------------------------------------------------------------------------------------


@dataclass
class WaitMarkers:
    """Wait until the simulated subject follows the marker stream (True) or ``timeout`` s passed (False).

    It returns as soon as the simulator follows; the default is long because following costs a resolve, opening
    the stream and a first clock offset (liblsl waits up to 5 s for each), and on a loaded machine 10 s were not
    enough: the first markers, and in ``check-timing`` the first flashes, were lost (seen in the suite under CI).
    Much of that was the resolve: one-shot 0.5 s queries reach only the outlet opened last on the machine, so the
    simulator now keeps a continuous resolver (0.75-1.15 s to follow, measured idle)."""

    timeout: float = 30.0


# -- worker ---------------------------------------------------------------------------------------------------------


@dataclass
class LoadModel:
    """Load the subject's latest decoder (the embedding modes: EEG encoder) and check it against the protocol."""

    subject: str
    mode: str


@dataclass
class ModelLoaded:
    model_id: int
    classes: list
    trained: Optional[list] = None  # sha256 of every image the model was trained on (None: it did not keep them)


@dataclass
class PrepareFeedback:
    """Build the image source (generator warm-up, bank) for the planned trials."""

    plan: list
    img_dir: str
    show_progress: bool = True


@dataclass
class FeedbackReady:
    model_id: int
    warmup_s: float
    n_classes: int
    candidates: int
    preload: list  # bank image files
    live: bool  # images generated after decoding (the presenter waits longer for them)


@dataclass
class StartDecoding:
    pass


@dataclass
class StopDecoding:
    pass


@dataclass
class WorkerFailed:
    """The worker's decode loop stopped (a bug): the feedback cannot go on."""

    reason: str


@dataclass
class Say:
    """A progress line for the terminal and the console."""

    text: str


@dataclass
class FeedbackImage:
    """What the worker decoded for one feedback trial and the image to show (a file, or the pixels of a generated
    one); its LSL times. ``error``: the generation failed."""

    trial: int
    probabilities: dict
    predicted: str
    probs_lsl: float
    epoch_complete_lsl: float
    source: str = ""  # generated, bank, stimulus, retrieved
    path: Optional[str] = None
    pixels: Any = None  # (h, w, 3) uint8, generated images only
    seed: Optional[int] = None
    ready_lsl: float = float("nan")
    embedding_lsl: Optional[float] = None
    retrieval: Optional[dict] = None  # Retrieval.to_json()
    nearest: Optional[dict] = None  # name, similarity, class, trained (marker fields, the progress line)
    scored: bool = True
    error: Optional[str] = None
