"""The operator console: a local web page for the experimenter during a visit.

:class:`Console` subscribes to the visit's event bus (:mod:`eegloop.bus`), keeps what the page needs —
the last 10 s of every EEG channel at display rate, per-channel quality every second, the phase, the counts,
the feedback trials — and serves it with Starlette under uvicorn in a background thread: the page, its
script (from the package: no CDN) and one server-sent-event stream updated 10 times a second. The
controls (pause after the current block, resume, abort) reach the paradigm through :data:`eegloop.bus.CONTROLS`.

It binds to 127.0.0.1 unless told otherwise; bound elsewhere, every request needs the random token printed in
the URL, and every control action needs it wherever it binds.
"""
from .server import Console

__all__ = ["Console"]
