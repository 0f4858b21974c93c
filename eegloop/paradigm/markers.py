"""The marker stream: JSON strings on an LSL outlet, stamped at the screen flip.

Schema (every marker is one JSON object with an ``event`` key):

==================  ==========================================================
event               other keys
==================  ==========================================================
``session_start``   ``protocol``, ``frame_rate_hz``
``run_start``       ``run``
``block_start``     ``run``, ``block`` (pushed on the flip of the block's first image)
``stim_on``         ``run``, ``block``, ``trial``, ``class``, ``image`` (file name)
``block_end``       ``run``, ``block`` (on the flip that removes the last image)
``pause_start``     ``run``, ``block``, ``duration_s``
``pause_end``       ``run``, ``block``
``run_end``         ``run``
``session_end``     ``status`` (``completed`` or ``aborted``)
``stim_on``         in feedback blocks also ``feedback`` (true) and ``feedback_trial`` (the trial an
                    image belongs to: one image each in the cue format, a burst in the rsvp format)
``fb_image_on``     feedback image shown: ``trial``, ``predicted``, ``class``, ``source``
==================  ==========================================================

Example: ``{"event":"stim_on","run":1,"block":3,"trial":17,"class":"n02106662","image":"n02106662_1234.JPEG"}``

The LSL timestamp of each marker is the flip's time in LSL's clock (taken in
the ``callOnFlip`` callback, within microseconds of the flip).
"""
from __future__ import annotations

import json

__all__ = ["make_marker_outlet", "marker_json"]


def marker_json(event: str, **fields) -> str:
    return json.dumps({"event": event, **fields}, separators=(",", ":"))


def make_marker_outlet(name: str, source_id: str | None = None):
    """An irregular-rate string outlet named ``name`` (type ``Markers``)."""
    from ..lsl import ensure_configured

    ensure_configured()
    import pylsl

    import uuid

    # a unique source id: an in-process consumer resolves exactly this outlet, never a stale one of the same name
    source_id = source_id or f"eegloop-{name}-{uuid.uuid4().hex[:12]}"
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id)
    info.desc().append_child_value("schema", "eegloop markers v1 (JSON)")
    return pylsl.StreamOutlet(info)
