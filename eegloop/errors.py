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


def clip_text(text, limit: int = 200) -> str:
    """``text`` for a one-line message: non-printable characters escaped, at most ``limit`` characters
    (cut with '…')."""
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)[: limit + 1])
    return s if len(s) <= limit else s[: max(limit - 1, 1)] + "…"


def short_repr(value, limit: int = 80) -> str:
    """A bounded, one-line ``repr`` of ``value`` for error messages.

    Never builds the full text of a huge, deeply nested or self-referential
    structure (``reprlib`` with small limits), never converts a huge integer to
    decimal, and cuts the result to ``limit`` characters with '…'.
    """
    import reprlib

    class _Short(reprlib.Repr):
        def repr_int(self, x, level):
            if x.bit_length() > 128:  # str() of a long int is slow and refused past 4300 digits
                return f"<integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
            return repr(x)

        def repr_bytes(self, x, level):
            s = repr(x[: self.maxstring])
            return s if len(x) <= self.maxstring else s + "…"

        repr_bytearray = repr_bytes

    r = _Short()
    r.maxlevel = 3
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 6
    r.maxstring, r.maxother, r.maxlong = max(limit, 8), max(limit, 8), 40
    try:
        s = r.repr(value)
    except Exception:  # a value whose repr fails: name its type only
        s = f"<{type(value).__name__}>"
    return clip_text(s, limit)
