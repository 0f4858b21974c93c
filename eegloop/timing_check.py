"""``eegloop check-timing``: measure the display's marker-to-photon delay with a photodiode.

A lab tapes a photodiode over the paradigm's patch (bottom-left corner, ``paradigm.photodiode_size_px``)
and wires it to an auxiliary input of the amplifier (``timing.photodiode_channel``). The check flashes the
patch ``timing.check_trials`` times with a flip-locked marker each, records the stream as a visit would,
finds every flash's onset in the photodiode channel (:func:`~eegloop.recorder.timing.photon_onset`) and
reports the delays: their median is the ``timing.static_offset_ms`` to put in the protocol, their spread
the display's jitter. ``--simulate`` runs it against the virtual amplifier, whose photodiode follows the
patch after ``amplifier.simulate.display_latency_ms`` ± ``display_jitter_ms``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from ._logging import logger
from .errors import EegloopError
from .progress import verbose
from .protocol import Protocol, SimulateConfig

__all__ = ["check_timing"]


@verbose
def check_timing(protocol: Protocol, simulate: bool = False, trials: Optional[int] = None,
                 progress: Callable[[str], None] | None = None, verbose: bool | str | int | None = None):
    """Flash the photodiode patch, record, and summarise the marker-to-photon delays.

    Parameters
    ----------
    progress : callable | None
        Receives the progress line instead of the ``eegloop.progress`` logger (:mod:`eegloop.progress`).
    verbose : bool | str | int | None
        eegloop's log level for the call (``False``: silent but for problems; ``None``: as it is).

    Returns
    -------
    TimingSummary
        Median, spread and every delay; ``suggested_offset_ms`` is the value for ``timing.static_offset_ms``.
    """
    return _check_timing(protocol, simulate, trials, progress)


def _check_timing(protocol: Protocol, simulate: bool, trials: Optional[int], progress):
    from .lsl import configure_lsl
    from .progress import Reporter
    from .recorder.simulator import PHOTODIODE_LABEL
    from .recorder.timing import summarize
    from .rig import Rig
    from .roles.messages import (BeginRun, Connect, EndRun, FlashTest, OpenWindow, StartRecording, StopRecording,
                                 WaitMarkers)

    say = Reporter(progress, bus=False)
    amp, tm = protocol.amplifier, protocol.timing
    if simulate:
        amp = dataclasses.replace(amp, simulate=dataclasses.replace(amp.simulate or SimulateConfig(), photodiode=True))
        if tm.photodiode_channel is None:
            tm = dataclasses.replace(tm, photodiode_channel=PHOTODIODE_LABEL)
    if tm.photodiode_channel is None:
        raise EegloopError("timing.photodiode_channel: name the channel the photodiode is wired to "
                           "(check-timing measures the delay in it)")
    n = int(trials if trials is not None else tm.check_trials)
    if not 5 <= n <= 10_000:
        raise EegloopError(f"--trials: 5 to 10000, got {n}")
    proto = protocol.replace(amplifier=amp, timing=tm,
                             paradigm=dataclasses.replace(protocol.paradigm, photodiode=True, fixation=False))
    configure_lsl(amp.lsl_scope)
    # the same processes as a visit: the presenter (its priority) flashes, the acquisition records the photodiode
    with Rig(proto, simulate=simulate) as rig:
        rig.stream = rig.acquisition.call(Connect(marker_source_id=rig.marker_id, eeg_source_id=rig.eeg_source_id),
                                          timeout=None)
        if rig.amplifier is not None and not rig.amplifier.call(WaitMarkers(), timeout=None):
            logger.warning("the simulator did not connect to the marker stream")
        rig.acquisition.call(StartRecording(None, None))
        rig.acquisition.call(BeginRun(1))
        d = rig.presenter.call(OpenWindow(), timeout=None)
        say(f"timing check: {n} flashes, {tm.check_interval_s:g} s apart, photodiode in channel "
            f"{tm.photodiode_channel!r} (display {d.frame_rate:.1f} Hz{', software-paced' if d.paced else ''}; "
            f"{d.scheduling})")
        pending = rig.presenter.request(FlashTest(n, tm.check_interval_s))
        rig.wait(pending)
        rig.check()
        rig.acquisition.call(EndRun(), timeout=60)
        delays = rig.acquisition.call(StopRecording(), timeout=60).photon_delays_ms
    res = summarize(delays, n, tm.static_offset_ms)
    if res is None:
        raise EegloopError(f"timing.photodiode_channel: no photodiode onset found in channel {tm.photodiode_channel!r} "
                           f"after any of the {n} flashes; check that the sensor sits on the patch (bottom-left "
                           "corner) and is wired to that channel (timing.invert for a falling signal)")
    return res
