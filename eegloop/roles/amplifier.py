"""The virtual amplifier's process: a simulated subject streaming EEG on LSL, as a real amplifier's vendor app
would (``--simulate``), so a simulated visit has the same process layout as a real one.

It follows the presenter's marker stream (pinned by source id) to shape the simulated responses; the visit's
acquisition process records it like any amplifier, pinned to its source id.
"""
from __future__ import annotations

from typing import Optional

from .child import Role
from .messages import WaitMarkers

__all__ = ["AmplifierRole"]


class AmplifierRole(Role):
    """Parameters: the protocol (``amplifier`` and ``amplifier.simulate``), the marker stream to follow and the
    EEG stream's source id."""

    name = "amplifier"

    def __init__(self, link, protocol, marker_source_id: Optional[str], source_id: str):
        super().__init__(link)
        from ..lsl import ensure_configured

        ensure_configured()
        from ..recorder.simulator import VirtualAmplifier
        from ..rig import simulated_embeddings

        amp = protocol.amplifier
        self.sim = VirtualAmplifier(amp, amp.simulate, marker_source_id=marker_source_id,
                                    embeddings=simulated_embeddings(protocol), source_id=source_id).start()

    def info(self) -> str:
        return self.sim.source_id

    def on_WaitMarkers(self, cmd: WaitMarkers) -> bool:
        return self.sim.markers_connected.wait(cmd.timeout)

    def close(self) -> None:
        self.sim.stop()
