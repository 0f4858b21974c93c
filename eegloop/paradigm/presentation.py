"""PsychoPy presentation of the schedule, with flip-locked LSL markers.

:class:`Presenter` opens a real PsychoPy window, measures the refresh rate
(and logs it), and shows runs of blocks of images. Durations are counted in
frames of the measured rate. Each marker is pushed from ``win.callOnFlip`` with
the LSL time taken in that callback, i.e. at the flip. Images of the next block
are loaded during the pause, so nothing is read from disk inside a block.

Without vertical sync (Xvfb, some VMs) flips return as fast as the GPU draws
(~1000 Hz with jitter), so a "frame" has no fixed length. The presenter then
paces flips in software at ``screen.no_vsync_pace_hz`` and says so in the log;
with a real display (measured rate <= 240 Hz) it counts hardware frames.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._logging import logger
from ..errors import EegloopError
from ..lsl import local_clock
from ..protocol import Protocol
from .markers import marker_json
from .schedule import Block, Run

__all__ = ["Presenter", "TrialTiming", "RunResult", "Aborted", "RecordingFailed"]

VSYNC_MAX_HZ = 240.0


class Aborted(EegloopError):
    """The operator pressed Escape (or :meth:`Presenter.request_abort` was called).

    ``timings`` holds the timings of the trials of the interrupted block that were shown.
    """

    timings: list = []


class RecordingFailed(EegloopError):
    """The recording behind the paradigm failed (see :attr:`Presenter.health`); the paradigm stops."""

    timings: list = []


@dataclass
class TrialTiming:
    """Intended vs actual timing of one image."""

    trial: int
    run: int
    block: int
    intended_onset_lsl: float
    actual_onset_lsl: float
    marker_lsl: float
    intended_frames: int
    actual_frames: int
    duration_s: float
    dropped_frames: int

    def as_db(self) -> dict:
        return dict(intended_onset_lsl=self.intended_onset_lsl, actual_onset_lsl=self.actual_onset_lsl,
                    intended_frames=self.intended_frames, actual_frames=self.actual_frames,
                    duration_s=self.duration_s, dropped_frames=self.dropped_frames)


@dataclass
class RunResult:
    run: int
    timings: list[TrialTiming] = field(default_factory=list)
    aborted: bool = False
    partial_block: Optional[int] = None  # the block interrupted by Escape, if any


def _preload_llvm_users() -> None:
    """Load torch's compiler stack (triton bundles LLVM) before the GL driver does.

    Mesa's llvmpipe (Xvfb, VMs) loads its own LLVM into the process when the
    window opens; triton's LLVM loaded afterwards crashes the process (a
    segmentation fault the first time an optimizer is built). Loaded first,
    both coexist.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # pragma: no cover - torch without dynamo/triton: nothing to protect
        pass


class Presenter:
    """Show a schedule in a PsychoPy window and push flip-locked markers.

    Parameters
    ----------
    protocol : Protocol
        ``paradigm`` (timings, fixation, photodiode, screen) is used.
    outlet : pylsl.StreamOutlet | None
        Marker outlet (see :func:`~eegloop.paradigm.markers.make_marker_outlet`).
    capture_trials : set of int
        Trials whose drawn frame is read back from the window buffer into
        :attr:`captured` (tests, screenshots for reports).
    preload_llvm : bool
        Load torch's compiler stack before the GL driver (needed where torch also runs in this process).
    """

    def __init__(self, protocol: Protocol, outlet=None, capture_trials=(), preload_llvm: bool = True):
        self.protocol = protocol
        self.p = protocol.paradigm
        self.outlet = outlet
        self.capture_trials = set(capture_trials)
        self.preload_llvm = preload_llvm  # torch may run in this process too (not in the visit's presenter)
        self.captured: dict[int, "object"] = {}
        self.win = None
        self.frame_rate: float = float("nan")
        self.measured_rate: float = float("nan")
        self.paced = False
        self.frame_s = float("nan")
        self.flip_times: list[float] = []  # LSL clock
        self.last_flip_monotonic = 0.0
        self.dropped_frames = 0
        self._abort = False
        self._offset = 0.0  # LSL clock - PsychoPy clock
        self._next_tick: Optional[float] = None
        self._preloaded: dict[int, list] = {}
        self.marker_log: list[tuple[dict, float]] = []
        # checked before every flip: returns why the recording failed (or None); the paradigm then stops
        self.health: Optional[Callable[[], Optional[BaseException]]] = None
        # called after the flip that showed each image of a block: (trial, block, flip time in LSL's clock)
        self.on_trial_shown: Optional[Callable[[object, Block, float], None]] = None

    # -- window -------------------------------------------------------------------
    def open(self) -> "Presenter":
        """Open the window, create the fixed stimuli, measure the refresh rate."""
        from .display import ensure_display

        scr = self.p.screen
        ensure_display(tuple(scr.size))
        if self.preload_llvm:
            _preload_llvm_users()
        from psychopy import logging as plog

        plog.console.setLevel(plog.ERROR)
        from psychopy import core, visual

        self._core = core
        try:
            self.win = visual.Window(size=list(scr.size), fullscr=scr.fullscreen, screen=scr.screen,
                                     monitor=scr.monitor, color=list(scr.background), colorSpace="rgb", units="pix",
                                     allowGUI=False, waitBlanking=True, checkTiming=False)
        except Exception as exc:  # pyglet/GL errors become one line
            raise EegloopError(f"cannot open the PsychoPy window: {exc}") from None
        self.win.mouseVisible = False
        self.fixation = visual.TextStim(self.win, "+", height=28, color="white")
        self.text = visual.TextStim(self.win, "", height=26, color="white", wrapWidth=scr.size[0] * 0.8)
        w, h = scr.size
        s = self.p.photodiode_size_px
        self.patch = visual.Rect(self.win, width=s, height=s, pos=(-w / 2 + s / 2, -h / 2 + s / 2),
                                 fillColor="white", lineColor="white")
        # other threads (recorder, database writer, generator) hold the GIL for at most 1 ms at a time,
        # so a flip is never late by Python's default 5 ms switch interval
        import sys

        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(0.001)
        self._sync_clocks()
        self.measure_refresh()
        return self

    def _sync_clocks(self) -> None:
        pairs = []
        for _ in range(20):
            a = local_clock()
            b = self._core.getTime()
            c = local_clock()
            pairs.append((c - a, (a + c) / 2 - b))
        self._offset = min(pairs)[1]  # the tightest bracket

    def to_lsl(self, psychopy_time: float) -> float:
        return psychopy_time + self._offset

    def measure_refresh(self) -> float:
        """Flip blank frames and measure the rate; decide on software pacing."""
        n = self.p.screen.refresh_measure_frames
        ts = []
        for _ in range(n + 5):
            if self.p.fixation:
                self.fixation.draw()
            ts.append(self.win.flip())
        d = np.diff(ts[5:])
        self.measured_rate = float(1.0 / np.median(d))
        if self.measured_rate > VSYNC_MAX_HZ:
            self.paced = True
            self.frame_rate = float(self.p.screen.no_vsync_pace_hz)
            logger.warning("measured %.0f Hz: no vertical sync on this display; pacing flips at %.0f Hz in software",
                           self.measured_rate, self.frame_rate)
        else:
            self.paced = False
            self.frame_rate = self.measured_rate
            logger.info("refresh rate measured: %.2f Hz (over %d frames)", self.frame_rate, n)
        self.frame_s = 1.0 / self.frame_rate
        self.frames_per_image = max(1, int(round(self.p.image_s * self.frame_rate)))
        if abs(self.frames_per_image * self.frame_s - self.p.image_s) > 0.5 * self.frame_s + 1e-9:
            logger.warning("image_s %.3f s is not a whole number of frames at %.2f Hz; showing %d frames",
                           self.p.image_s, self.frame_rate, self.frames_per_image)
        self._next_tick = None
        return self.frame_rate

    def close(self) -> None:
        if self.win is not None:
            import sys

            self.win.close()
            self.win = None
            sys.setswitchinterval(getattr(self, "_switch", 0.005))

    # -- frames -------------------------------------------------------------------
    def flip(self) -> float:
        """Flip (paced when there is no vsync); returns the flip time in LSL's clock.

        Raises :class:`RecordingFailed` when :attr:`health` reports a failure.
        """
        if self.health is not None:
            err = self.health()
            if err is not None:
                self.health = None  # the neutral screen that follows must still flip
                raise RecordingFailed(f"the recording failed: {err}")
        if self.paced:
            now = self._core.getTime()
            if self._next_tick is None or now > self._next_tick + self.frame_s:
                self._next_tick = now
            while True:
                left = self._next_tick - self._core.getTime()
                if left <= 0:
                    break
                if left > 0.002:
                    time.sleep(left - 0.0015)
            t = self.win.flip()
            self._next_tick += self.frame_s
        else:
            t = self.win.flip()
        self.last_flip_monotonic = time.monotonic()
        t = self.to_lsl(t)
        if self.flip_times and t - self.flip_times[-1] > 1.5 * self.frame_s:
            self.dropped_frames += int(round((t - self.flip_times[-1]) / self.frame_s)) - 1
        self.flip_times.append(t)
        if len(self.flip_times) > 100_000:
            del self.flip_times[:50_000]
        return t

    def time_to_next_frame(self) -> float:
        """Seconds until the next frame can be shown (paced tick or next vertical blank)."""
        if self.paced and self._next_tick is not None:
            return self._next_tick - self._core.getTime()
        if not self.flip_times:
            return 0.0
        return self.flip_times[-1] + self.frame_s - local_clock()

    def wait_for_frame_or(self, ready: Callable[[], bool], margin_s: float = 0.006) -> None:
        """Sleep until ``margin_s`` before the next frame, returning early once ``ready()``.

        Lets a loop decide what to draw as late as possible, so an image that
        becomes ready mid-frame is on screen at the very next flip.
        """
        while self.time_to_next_frame() > margin_s and not ready():
            time.sleep(0.0005)

    def push_on_flip(self, event: str, **fields) -> None:
        """Push a marker stamped at the next flip."""
        self.win.callOnFlip(self._push, event, fields)

    def _push(self, event: str, fields: dict) -> None:
        ts = local_clock()
        msg = marker_json(event, **fields)
        if self.outlet is not None:
            self.outlet.push_sample([msg], ts)
        self.marker_log.append(({"event": event, **fields}, ts))

    def push_now(self, event: str, **fields) -> None:
        self._push(event, fields)

    def check_keys(self) -> list[str]:
        """The keys pressed since the last check (escape, space); raises :class:`Aborted` on Escape or on an
        abort requested by the operator (:meth:`request_abort`)."""
        from psychopy import event

        keys = event.getKeys(keyList=["escape", "space"])
        if "escape" in keys:
            self._abort = True
        if self._abort:
            raise Aborted("aborted by the operator (Escape)")
        return keys

    def request_abort(self) -> None:
        self._abort = True

    # -- building blocks for other loops (the feedback block) ----------------------
    def image_stim(self, image):
        """A stimulus of ``image`` (a path or a PIL image) at the paradigm's size, centred."""
        from psychopy import visual

        px = self.p.screen.image_size_px
        return visual.ImageStim(self.win, image=str(image) if isinstance(image, Path) else image, size=(px, px),
                                units="pix")

    def show_stim(self, stim, frames: int, event: str | None = None, fixation: bool = True, **fields) -> float:
        """Draw ``stim`` for ``frames`` flips (the fixation cross on top), the marker ``event`` locked to the
        first; returns that flip's LSL time."""
        t_first = float("nan")
        for f in range(max(1, frames)):
            stim.draw()
            if fixation:
                self.fixation.draw()
            if f == 0 and event:
                self.push_on_flip(event, **fields)
            t = self.flip()
            if f == 0:
                t_first = t
        return t_first

    def hold_fixation_until(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Keep the fixation cross on screen, flipping at the frame rate and checking keys, until ``ready()``
        (True) or ``timeout_s`` (False). ``ready`` is asked as late as possible before each flip."""
        t0 = time.monotonic()
        while True:
            self.wait_for_frame_or(ready)
            if ready():
                return True
            if time.monotonic() - t0 > timeout_s:
                return False
            self.fixation.draw()
            self.flip()
            self.check_keys()

    # -- screens -----------------------------------------------------------------
    def show_text(self, text: str, wait_space: bool = False, duration: float | None = None) -> None:
        """Show a message until space (if asked) or for ``duration`` seconds."""
        from psychopy import event

        self.text.text = text
        event.clearEvents()
        t0 = self._core.getTime()
        while True:
            self.text.draw()
            self.flip()
            keys = self.check_keys()
            if wait_space and "space" in keys:
                return
            if duration is not None and self._core.getTime() - t0 >= duration:
                return
            if not wait_space and duration is None:
                return

    def preload(self, block: Block) -> None:
        """Create the block's ImageStims now (reads and decodes the files)."""
        from psychopy import visual
        from PIL import Image

        px = self.p.screen.image_size_px
        stims = []
        for t in block.trials:
            with Image.open(t.image) as im:
                im = im.convert("RGB")
                w, h = im.size
                size = (px, px * h / w) if w >= h else (px * w / h, px)
                stims.append(visual.ImageStim(self.win, image=im.copy(), size=size, units="pix"))
        # each drawn once into the back buffer, which is then cleared (never shown): the texture upload and the
        # first use of the image shader happen here, in the pause, not on the block's first frames
        for stim in stims:
            stim.draw()
        self.win.clearBuffer()
        self._preloaded[block.block] = stims

    def pause(self, run: int, block: int, seconds: float, next_block: Block | None,
              on_tick: Callable[[float], None] | None = None) -> None:
        """Pause screen with a countdown; the next block is loaded meanwhile."""
        self.push_on_flip("pause_start", run=run, block=block, duration_s=seconds)
        t_end = self._core.getTime() + seconds
        loaded = next_block is None
        while True:
            left = t_end - self._core.getTime()
            if left <= 0:
                break
            self.text.text = f"Rest\n\n{int(np.ceil(left))}"
            self.text.draw()
            self.flip()
            self.check_keys()
            if not loaded:
                self.preload(next_block)
                loaded = True
            if on_tick:
                on_tick(left)
        if not loaded:
            self.preload(next_block)
        if self.p.wait_for_space and next_block is not None:
            self.show_text("Press space to continue", wait_space=True)
        self.push_on_flip("pause_end", run=run, block=block)
        if self.p.fixation:
            self.fixation.draw()
        self.flip()

    def run_block(self, block: Block) -> list[TrialTiming]:
        """Show one block; returns each trial's timing.

        Python's cyclic garbage collector is off during the block (a full collection of PsychoPy's objects takes
        longer than a frame); it runs again in the pause that follows."""
        import gc

        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run_block(block)
        finally:
            if enabled:
                gc.enable()

    def _run_block(self, block: Block) -> list[TrialTiming]:
        if block.block not in self._preloaded:
            self.preload(block)
        stims = self._preloaded.pop(block.block)
        n = self.frames_per_image
        diode_frames = max(1, int(round(0.05 * self.frame_rate)))
        onsets: list[float] = []
        markers: list[float] = []
        drops: list[int] = []
        def timings_so_far(t_end: float) -> list[TrialTiming]:
            ends = onsets[1:] + [t_end]
            out = []
            for i, trial in enumerate(block.trials[:len(onsets)]):
                dur = ends[i] - onsets[i]
                out.append(TrialTiming(
                    trial=trial.trial, run=block.run, block=block.block,
                    intended_onset_lsl=onsets[0] + i * n * self.frame_s, actual_onset_lsl=onsets[i],
                    marker_lsl=markers[i], intended_frames=n, actual_frames=int(round(dur / self.frame_s)),
                    duration_s=dur, dropped_frames=drops[i] if i < len(drops) else self.dropped_frames - d0))
            return out

        checks = 0
        try:
            for i, (trial, stim) in enumerate(zip(block.trials, stims)):
                d0 = self.dropped_frames
                for f in range(n):
                    stim.draw()
                    if self.p.fixation:
                        self.fixation.draw()
                    if self.p.photodiode and f < diode_frames:
                        self.patch.draw()
                    if f == 0:
                        if i == 0:
                            self.push_on_flip("block_start", run=block.run, block=block.block,
                                              trials=len(block.trials))
                        self.push_on_flip("stim_on", run=block.run, block=block.block, trial=trial.trial,
                                          **{"class": trial.class_id}, image=trial.image.name)
                        if trial.trial in self.capture_trials:
                            self.captured[trial.trial] = self.win.getMovieFrame(buffer="back")
                    t = self.flip()
                    if f == 0:
                        onsets.append(t)
                        markers.append(self.marker_log[-1][1])
                        if self.on_trial_shown is not None:
                            self.on_trial_shown(trial, block, t)
                    checks += 1
                    if checks % 8 == 0:  # Escape is looked for every 8 frames, whatever the image length
                        self.check_keys()
                drops.append(self.dropped_frames - d0)
        except (Aborted, RecordingFailed) as exc:
            # what was shown of the block is timed (up to now) and travels with the exception
            exc.timings = timings_so_far(local_clock()) if onsets else []
            raise
        # the flip that removes the last image ends the block
        self.push_on_flip("block_end", run=block.run, block=block.block)
        if self.p.fixation:
            self.fixation.draw()
        t_end = self.flip()
        return timings_so_far(t_end)

    def flash_test(self, n: int, interval_s: float) -> list[float]:
        """The timing check: light the photodiode patch ``n`` times, ``interval_s`` apart, for 50 ms each, with
        a ``stim_on`` marker (class ``flash``) locked to each flash's flip; returns the flips' LSL times.
        Escape aborts (:class:`Aborted`)."""
        from psychopy import visual

        diode_frames = max(1, int(round(0.05 * self.frame_rate)))
        per = max(diode_frames + 1, int(round(interval_s * self.frame_rate)))
        label = visual.TextStim(self.win, f"timing check: {n} flashes of the photodiode patch", height=22,
                                color="white")
        onsets = []
        checks = 0
        for k in range(n):
            for f in range(per):
                label.draw()
                if f < diode_frames:
                    self.patch.draw()
                if f == 0:
                    self.push_on_flip("stim_on", run=1, block=1, trial=k + 1, **{"class": "flash"})
                t = self.flip()
                if f == 0:
                    onsets.append(t)
                checks += 1
                if checks % 8 == 0:
                    self.check_keys()
        self.flip()
        return onsets

    def run(self, run: Run, on_block: Callable[[Block, list[TrialTiming]], None] | None = None,
            on_pause_tick: Callable[[float], None] | None = None) -> RunResult:
        """Show a run: blocks separated by pauses. Escape aborts (what was shown is kept)."""
        result = RunResult(run=run.run)
        if run.blocks:
            self.preload(run.blocks[0])
        self.push_on_flip("run_start", run=run.run)
        if self.p.fixation:
            self.fixation.draw()
        self.flip()
        current = None
        try:
            for k, block in enumerate(run.blocks):
                current = block
                timings = self.run_block(block)
                current = None
                result.timings.extend(timings)
                if on_block:
                    on_block(block, timings)
                nxt = run.blocks[k + 1] if k + 1 < len(run.blocks) else None
                if self.p.pause_s > 0:
                    self.pause(run.run, block.block, self.p.pause_s, nxt, on_pause_tick)
        except Aborted as exc:
            result.aborted = True
            if current is not None:
                result.partial_block = current.block
                result.timings.extend(exc.timings)
        self.push_on_flip("run_end", run=run.run, **({"status": "aborted"} if result.aborted else {}))
        if self.p.fixation:
            self.fixation.draw()
        self.flip()
        return result
