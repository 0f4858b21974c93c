"""The presenter process: the subject's window, the frame loop and the marker outlet — nothing else heavy.

It holds a :class:`~eegloop.paradigm.presentation.Presenter` (PsychoPy window, flip-locked LSL markers), the
images of the next block, and one command/status channel to the visit. It raises its own scheduling priority
before the window opens (:mod:`.priority`; the GL driver's threads inherit it) and its X server's when that is an
Xvfb of this machine, and logs one line when the OS refuses. Feedback images come from the worker process over
their own queue; the frame loop only picks up images that are ready.

Between commands the window keeps showing the screen the visit set (:class:`~.messages.SetScreen`: the rest
screen and its countdown), flipping at the frame rate and watching for Escape.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from .._logging import logger
from .._worker import Worker
from ..bus import Screen
from ..errors import EegloopError
from .child import Role
from .messages import (Abort, BlockShown, CloseWindow, Display, EscapePressed, Fail, FeedbackBlock, FlashTest,
                       FeedbackBlockShown, FeedbackShown, OpenWindow, Pause, PausedAfter, PushMarker, Resume, Resumed,
                       RunShown, SetScreen, ShowRun, ShowText, TrialShown, Interrupted)

__all__ = ["PresenterRole", "NEUTRAL_MESSAGE", "PAUSED_MESSAGE"]

NEUTRAL_MESSAGE = "The recording has stopped.\n\nPlease stay seated; the experimenter will be with you."
PAUSED_MESSAGE = "Paused.\n\nThe experimenter will continue in a moment."


class PresenterRole(Role):
    """Parameters: the protocol, the marker outlet's source id (chosen by the visit, so the amplifier and the
    recorder can pin it before the window exists), the queue feedback images arrive on, the X server to raise
    with the presenter (an Xvfb's pid, or None) and the cores to pin both to (None: no pinning)."""

    name = "presenter"
    controls = (Abort, Pause, Resume, Fail)
    idle_s = 0.005

    def __init__(self, link, protocol, marker_source_id: str, images=None, x_server: Optional[int] = None,
                 cores: Optional[list] = None):
        super().__init__(link)
        from ..lsl import ensure_configured

        ensure_configured()
        from ..paradigm.markers import make_marker_outlet
        from ..paradigm.presentation import Presenter

        self.protocol = protocol
        self.outlet = make_marker_outlet(protocol.amplifier.marker_stream_name, marker_source_id)
        self.pres = Presenter(protocol, self.outlet, preload_llvm=False)  # no torch in this process
        from psychopy import core, event, visual  # noqa: F401 - imported now, while the other processes start

        self.images = images
        self.x_server, self.cores = x_server, cores
        self.paused = threading.Event()
        self.failure: Optional[str] = None
        self.screen: Optional[str] = None
        self._raised_x = False
        self.scheduling = ("presenter: window not open yet", "normal")
        self._escape_told = False
        self._last_keys = 0.0
        self._loop_since: Optional[float] = None  # a frame loop (run, feedback block, flashes) running since
        # feedback images are taken off their queue by a thread of their own: reading a large message from a pipe
        # waits for all of it (and forever if its writer died mid-way); the frame loop only looks at this dict
        self.arrived: dict = {}
        self._arrived_lock = threading.Lock()
        if images is not None:
            Worker.of(self._take_images, "eegloop-images").start()

    def _take_images(self, _worker: Worker) -> None:
        while True:  # until the worker's end of the channel closes
            try:
                img = self.images.get()
            except (EOFError, OSError, ValueError):
                return
            with self._arrived_lock:
                self.arrived[img.trial] = img

    def stalled(self) -> Optional[float]:
        since = self._loop_since
        if since is None:
            return None
        return time.monotonic() - max(self.pres.last_flip_monotonic, since)

    def _loop(self, fn, *args):
        """Run a frame loop, watched: the heartbeat says how long ago its last frame was."""
        self._loop_since = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._loop_since = None

    def info(self) -> str:
        return self.outlet.get_info().source_id()

    # -- controls (the reader thread: flags only) --------------------------------------------------------------
    def on_Abort(self, _cmd: Abort) -> None:
        self.pres.request_abort()

    def on_Pause(self, _cmd: Pause) -> None:
        self.paused.set()

    def on_Resume(self, _cmd: Resume) -> None:
        self.paused.clear()

    def on_Fail(self, cmd: Fail) -> None:
        self.failure = self.failure or cmd.reason

    # -- the window --------------------------------------------------------------------------------------------
    def on_OpenWindow(self, _cmd: OpenWindow) -> Display:
        from .priority import pin, raise_priority

        p = self.pres
        if p.win is None:
            sched = raise_priority(0, "presenter")
            lines = [sched.line]
            if self.x_server is not None and sched.policy == "fifo":
                xs = raise_priority(self.x_server, "its X server (Xvfb)")
                self._raised_x = xs.policy == "fifo"
                if not self._raised_x:
                    lines.append(xs.line)
            if self.cores:
                ok = pin(0, self.cores) and (self.x_server is None or pin(self.x_server, self.cores))
                lines.append(f"core {','.join(map(str, self.cores))} of its own" if ok else "pinning refused")
            self.scheduling = ("; ".join(lines) + (" and its X server" if self._raised_x else ""), sched.policy)
            (logger.info if sched.policy == "fifo" else logger.warning)("%s", self.scheduling[0])
            p.open()
            import gc

            gc.collect()
            gc.freeze()  # what the window and PsychoPy made lives as long as the process: no collection walks it again
            p.health = lambda: self.failure
            p.on_trial_shown = self._shown
            self.outlet.wait_for_consumers(2.0)
        return Display(p.frame_rate, p.measured_rate, p.paced, p.frames_per_image, *self.scheduling)

    def _shown(self, trial, block, t: float) -> None:
        self.link.emit(TrialShown(block.run, block.block, trial.trial, trial.class_id, t))

    def on_ShowText(self, cmd: ShowText) -> None:
        from ..paradigm.presentation import RecordingFailed

        self.link.emit(Screen(cmd.text))
        try:
            self._loop(self.pres.show_text, cmd.text, cmd.wait_space, cmd.duration)
        except RecordingFailed:
            self._neutral()
            raise

    def on_SetScreen(self, cmd: SetScreen) -> None:
        if cmd.text is not None and cmd.text != self.screen:
            self.link.emit(Screen(cmd.text))
        self.screen = cmd.text
        self._escape_told = False

    def on_PushMarker(self, cmd: PushMarker) -> None:
        self.pres.push_now(cmd.event, **cmd.fields)

    def idle(self) -> None:
        """Between commands: the screen the visit set, at the frame rate, and Escape."""
        p = self.pres
        if p.win is None:
            time.sleep(0.01)
            return
        from ..paradigm.presentation import Aborted

        try:
            if self.screen is not None:
                p.text.text = self.screen
                p.text.draw()
                p.flip()
                p.check_keys()
            elif time.monotonic() - self._last_keys > 0.05:
                self._last_keys = time.monotonic()
                p.check_keys()
            else:
                time.sleep(0.005)
        except Aborted:
            if not self._escape_told:
                self._escape_told = True
                self.link.emit(EscapePressed())
        except EegloopError:  # a failure reported while idle: the next command hears it
            pass

    def on_FlashTest(self, cmd: FlashTest) -> list:
        return self._loop(self.pres.flash_test, cmd.n, cmd.interval_s)

    def on_CloseWindow(self, _cmd: CloseWindow) -> None:
        self.screen = None
        self.pres.close()

    def close(self) -> None:
        from .priority import restore_priority

        try:
            self.pres.close()
        finally:
            if self._raised_x:
                restore_priority(self.x_server)
            self.outlet = self.pres.outlet = None

    # -- a run of blocks ---------------------------------------------------------------------------------------
    def on_ShowRun(self, cmd: ShowRun) -> RunShown:
        from ..paradigm.presentation import RecordingFailed

        p = self.pres
        p.capture_trials, p.captured = set(cmd.capture_trials), {}
        shown: list = []

        def on_block(block, timings):
            shown.extend(timings)
            self.link.emit(BlockShown(block.run, block.block, timings, p.dropped_frames))
            if self.paused.is_set():  # the operator asked for a pause after this block
                self.link.emit(PausedAfter(block.run, block.block))
                self.link.emit(Screen(PAUSED_MESSAGE))
                while self.paused.is_set():  # the window keeps flipping; Escape and abort still work
                    p.show_text(PAUSED_MESSAGE, duration=0.25)
                self.link.emit(Resumed(block.run, block.block))

        try:
            res = self._loop(p.run, cmd.run, on_block)
        except RecordingFailed as exc:
            partial = getattr(exc, "timings", [])
            shown += partial
            if partial:  # what the interrupted block showed is timed, like after Escape: sent before the message
                self.link.emit(Interrupted(cmd.run.run, partial[0].block, partial))
            self._neutral()
            return RunShown(cmd.run.run, shown, failed=self.failure or str(exc), dropped_frames=p.dropped_frames)
        return RunShown(cmd.run.run, res.timings, res.aborted, res.partial_block, captured=dict(p.captured),
                        dropped_frames=p.dropped_frames)

    def _neutral(self) -> None:
        """The subject sees a neutral message, not a frozen image, when the recording failed."""
        self.link.emit(Screen(NEUTRAL_MESSAGE))
        try:
            self.pres.show_text(NEUTRAL_MESSAGE, duration=2.0)
        except Exception as exc:  # the window must not hide the failure
            logger.warning("could not show the neutral message: %s", exc)

    # -- a feedback block --------------------------------------------------------------------------------------
    def on_FeedbackBlock(self, cmd: FeedbackBlock) -> FeedbackBlockShown:
        from ..paradigm.presentation import Aborted, RecordingFailed

        p = self.pres
        n = 0
        try:
            n = self._loop(self._feedback, cmd)
        except Aborted:
            return FeedbackBlockShown(n, aborted=True, frame_rate=p.frame_rate)
        except RecordingFailed as exc:
            self._neutral()
            return FeedbackBlockShown(n, failed=self.failure or str(exc), frame_rate=p.frame_rate)
        return FeedbackBlockShown(len(cmd.plan), frame_rate=p.frame_rate)

    def _feedback(self, cmd: FeedbackBlock) -> int:
        """Each trial's cue (or burst), fixation while its epoch is decoded and its image made (elsewhere), then
        the image at the next flip after it arrived."""
        from PIL import Image

        p = self.pres
        n_img = p.frames_per_image
        # every cue is loaded before the block and every bank image uploaded once: no disk access or texture
        # upload sits between an epoch and its feedback image
        cues = [[p.image_stim(st.path) for st in pt.images] for pt in cmd.plan]
        ready_stims = {str(path): p.image_stim(path) for path in cmd.preload}
        p.push_on_flip("block_start", run=cmd.run_index, block=cmd.block, feedback=True, mode=cmd.mode)
        p.flip()
        for k, pt in enumerate(cmd.plan):
            trial, cls = pt.trial, pt.class_id
            t_onset = float("nan")
            for cue, stim, image_trial in zip(cues[k], pt.images, pt.image_trials):
                t_onset = p.show_stim(cue, n_img, "stim_on", run=cmd.run_index, block=cmd.block, trial=image_trial,
                                      **{"class": cls}, image=stim.path.name, feedback=True, feedback_trial=trial)

            def ready() -> bool:
                return trial in self.arrived

            cue_path = str(pt.images[-1].path)
            if not p.hold_fixation_until(ready, cmd.timeout_s):
                logger.warning("feedback trial %d: no image in time; skipped", trial)
                self.link.emit(FeedbackShown(k, trial, cls, cue_path, t_onset, missing="image"))
                continue
            with self._arrived_lock:
                img = self.arrived.pop(trial)
                for old in [t for t in self.arrived if t < trial]:  # images of trials already skipped
                    del self.arrived[old]
            if img.error:
                raise EegloopError(f"generation failed: {img.error}")
            stim = ready_stims.get(str(img.path)) if img.pixels is None else None
            if stim is None:
                stim = p.image_stim(Image.fromarray(img.pixels) if img.pixels is not None else img.path)
            extra = {}
            if img.nearest is not None:  # what the marker stream says about the nearest image
                extra = dict(similarity=round(img.nearest["similarity"], 4), nearest=img.nearest["name"])
            t_on = p.show_stim(stim, cmd.display_frames, "fb_image_on", fixation=False, trial=trial,
                               predicted=img.predicted, **{"class": cls}, source=img.source, **extra)
            p.fixation.draw()
            p.flip()
            img.pixels = None  # the orchestrator needs the numbers, not the picture (the worker saved it)
            self.link.emit(FeedbackShown(k, trial, cls, cue_path, t_onset, img, t_on))
        p.push_on_flip("block_end", run=cmd.run_index, block=cmd.block, feedback=True)
        p.flip()
        return len(cmd.plan)
