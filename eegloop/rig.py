"""The recording rig of a visit: the marker outlet, the virtual amplifier (``--simulate``) and the recorder.

The recording (:func:`~eegloop.session.record_session`) and the feedback block
(:func:`~eegloop.feedback.loop.run_feedback`) assemble the same three parts; :class:`Rig` does it once, in
the order that loses nothing (the outlet first, so the simulator follows the markers from the first; the
recorder last, pinned to both) and tears them down in the safe order, each step even when the one before
failed: the recorder (its open run closed, its raw file flushed, its store drained), then the simulator, then
the outlet.
"""
from __future__ import annotations

from typing import Optional

from ._logging import logger

__all__ = ["Rig", "release_lsl", "simulated_embeddings"]


class Rig:
    """Marker outlet + optional virtual amplifier + recorder, as a context manager.

    Parameters
    ----------
    protocol : Protocol
    simulate : bool
        Start the virtual amplifier in this process (``amplifier.simulate`` settings).
    outlet : pylsl.StreamOutlet | None
        An existing marker outlet (a visit's window keeps one); default: a new one, closed with the rig.
    """

    def __init__(self, protocol, simulate: bool = False, outlet=None):
        self.protocol = protocol
        self.simulate = simulate
        self.outlet = outlet
        self._own_outlet = outlet is None
        self.sim = None
        self.rec = None

    @property
    def marker_id(self) -> str:
        return self.outlet.get_info().source_id()

    @property
    def eeg_source_id(self) -> Optional[str]:
        """The virtual amplifier's source id (pins the EEG stream to it), or None for a real amplifier."""
        return self.sim.source_id if self.sim is not None else None

    def start(self) -> "Rig":
        """The marker outlet and, with ``simulate``, the virtual amplifier following it."""
        from .paradigm.markers import make_marker_outlet
        from .recorder.simulator import VirtualAmplifier

        amp = self.protocol.amplifier
        release_lsl()  # a failed rig before this one (its traceback now dropped) still holding LSL ports
        if self.outlet is None:
            self.outlet = make_marker_outlet(amp.marker_stream_name)
        if self.simulate:
            self.sim = VirtualAmplifier(amp, amp.simulate, marker_source_id=self.marker_id,
                                        embeddings=simulated_embeddings(self.protocol)).start()
            if not self.sim.markers_connected.wait(10):
                logger.warning("the simulator did not connect to the marker stream")
        return self

    def connect(self, **recorder_kw):
        """The recorder, connected to this rig's EEG and marker streams (keywords: :class:`Recorder`'s)."""
        from .recorder.recorder import Recorder

        self.rec = Recorder(self.protocol, **recorder_kw).connect(marker_source_id=self.marker_id,
                                                                  eeg_source_id=self.eeg_source_id)
        return self.rec

    def close(self) -> None:
        """Stop the recorder (when still running), the simulator, and the outlet this rig made."""
        try:
            if self.rec is not None:
                try:
                    self.rec.stop()  # a second stop does nothing: callers that stopped it keep their result
                except Exception as exc:
                    logger.warning("closing the recorder: %s", exc)
        finally:
            try:
                if self.sim is not None:
                    self.sim.stop()
            finally:
                self.sim = None
                if self._own_outlet:
                    self.outlet = None  # the marker stream disappears with the rig
                release_lsl()

    def __enter__(self) -> "Rig":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def simulated_embeddings(protocol):
    """The stimuli's CLIP embeddings when the simulated subject responds to them (``embedding_signal``)."""
    sim = protocol.amplifier.simulate
    if sim is None or sim.embedding_signal <= 0:
        return None
    from .embeddings import stimulus_embeddings

    return stimulus_embeddings(protocol)


def release_lsl() -> None:
    """Give this process's finished LSL objects' ports back to the machine now.

    liblsl binds every outlet's service socket, and every query, to one of 32 ports (16572-16603); an outlet that
    finds them all taken gets a random port, where queries from other processes reach it only by chance (the
    discovery port 16571 delivers each query to the most recently opened outlet alone). After a failure, a
    traceback's frames keep the failed rig's inlets and outlets alive until Python's cyclic garbage collector
    happens to run: a resume in the same process, or the visit's feedback block, could then start an outlet
    nobody finds (seen in the test suite: "no marker stream ... found"). One collection when a rig starts (the
    failed one's traceback is gone by then) and when it closes returns them (a few ms each).
    """
    import gc

    gc.collect()
