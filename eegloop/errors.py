"""Errors a user can act on.

The CLI prints an :class:`EegloopError` as one line and exits non-zero; any
other exception is a bug and keeps its traceback.
"""


class EegloopError(Exception):
    """Base class for errors with a message meant for the user."""


class ProtocolError(EegloopError):
    """A protocol file is invalid; the message names the file and the field."""


class DatabaseError(EegloopError):
    """The database cannot be used as asked (unknown subject, bad URL, ...)."""


class StreamError(EegloopError):
    """An LSL stream is missing, mismatched or stalled."""


class ModelNotAvailableError(EegloopError):
    """Model weights (CLIP teacher, generator) are not available locally."""
