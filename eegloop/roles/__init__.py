"""One process per role of a visit: presenter, acquisition, virtual amplifier, decode/generate worker.

The visit's own process (the orchestrator, :mod:`eegloop.session`) starts them through
:class:`eegloop.rig.Rig`, talks to them with the typed messages of :mod:`.messages`, and watches them
(:mod:`.child`). Scheduling for the presenter (real-time priority, a core of its own): :mod:`.priority`.
"""
from .child import Child, ChildFailed, Role

__all__ = ["Child", "ChildFailed", "Role"]
