"""Argument types of the ``eegloop`` command line: every option's value is checked while it is parsed.

Each type is an ``argparse`` ``type=`` callable that carries its declared range (bounds, lengths, kinds of
path), so that a bad value is refused before any work with one line naming the option and what it accepts
(``eegloop: error: --speed: a number > 0 and at most 1000, got '0'``), and so that the contract test
(``tests/test_contract.py``) can derive bad values from the type itself. Every option of every command uses
one of them, or ``choices``.

The types:

- :class:`Number` and :class:`Integer`: finite numbers within bounds (``nan``, ``inf`` and huge numbers refused).
- :class:`Port`: a TCP port 0-65535; :class:`Host`: an IP address or a host name (syntax only; whether this
  machine can listen there is checked before the command starts, :func:`check_listen`).
- :class:`Text`: a bounded, printable, UTF-8 string (names, subject codes, URLs, model ids).
- :class:`CommaList`: ``a,b,c`` with no empty and no repeated items.
- :class:`InputFile`, :class:`InputFolder`, :class:`InputPath`: exist, are of the right kind, readable.
- :class:`OutputFile`, :class:`OutputFolder`, :class:`DataFolder`: of the right kind, in a folder this user can
  write in (probed by creating and removing a temporary file), before any work.
- :class:`UniqueItems`: an ``argparse`` action for ``nargs='+'`` options that refuses repeated values.
"""
from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from ..errors import clip_text

__all__ = ["ArgType", "Number", "Integer", "Port", "Host", "Text", "SubjectCode", "DatabaseUrl", "CommaList", "EventsMap",
           "InputFile", "InputFolder", "InputPath", "OutputFile", "OutputFolder", "DataFolder", "UniqueItems",
           "check_listen", "PATH_MAX_CHARS", "NAME_MAX_BYTES"]

PATH_MAX_CHARS = 4096  # Linux's PATH_MAX
NAME_MAX_BYTES = 255  # one file or folder name (NAME_MAX of Linux's file systems)


def _got(text: str) -> str:
    return repr(clip_text(text, 60)) if text else "an empty value"


def _g(x: float) -> str:
    """A bound for a message: 100000, 0.5, 1e+06 -> as a person writes it."""
    return str(int(x)) if abs(x) < 1e15 and float(x).is_integer() else f"{x:g}"


class ArgType:
    """Base of eegloop's argument types: ``type(text) -> value`` or :class:`argparse.ArgumentTypeError`.

    Subclasses set :attr:`kind` (what the contract test derives bad values from) and :meth:`describe`
    (what would be accepted, for the messages and ``--help``).
    """

    kind = "value"
    max_chars = PATH_MAX_CHARS

    def describe(self) -> str:
        raise NotImplementedError

    def refuse(self, text: str, why: Optional[str] = None) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(f"{why or 'must be ' + self.describe()}, got {_got(text)}")

    def text(self, text: str) -> str:
        """The checks every value passes: a string, at most :attr:`max_chars`, UTF-8, no control characters."""
        if not isinstance(text, str):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {type(text).__name__}")
        if len(text) > self.max_chars:
            raise self.refuse(text, f"must be {self.describe()}: at most {self.max_chars} characters, not {len(text)}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line (surrogate escapes)
            raise self.refuse(text, f"must be {self.describe()} in UTF-8 (it has bytes that are not UTF-8)") from None
        if any(not c.isprintable() for c in text):
            raise self.refuse(text, f"must be {self.describe()} without control characters")
        return text

    def __call__(self, text: str):
        raise NotImplementedError

    def __repr__(self) -> str:  # argparse names the type in some messages
        return f"{type(self).__name__}({self.describe()})"


# -- numbers ----------------------------------------------------------------------------------------------
class Number(ArgType):
    """A finite number in ``[lo, hi]`` (``lo_open``/``hi_open``: the bound itself excluded)."""

    kind = "number"
    max_chars = 64

    def __init__(self, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False, unit: str = ""):
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi
        self.lo, self.hi, self.lo_open, self.hi_open, self.unit = float(lo), float(hi), lo_open, hi_open, unit

    def describe(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        if self.lo_open or self.hi_open:
            return (f"a number {'>' if self.lo_open else '>='} {_g(self.lo)} and {'<' if self.hi_open else 'at most'} "
                    f"{_g(self.hi)}{u}")
        return f"a number from {_g(self.lo)} to {_g(self.hi)}{u}"

    def __call__(self, text: str) -> float:
        text = self.text(text)
        try:
            x = float(text.strip())
        except ValueError:
            raise self.refuse(text) from None
        if not math.isfinite(x):
            raise self.refuse(text)
        if x < self.lo or x > self.hi or (self.lo_open and x == self.lo) or (self.hi_open and x == self.hi):
            raise self.refuse(text)
        return x


class Integer(ArgType):
    """A whole number in ``[lo, hi]``."""

    kind = "integer"
    max_chars = 32  # int() of a 5000-digit string is refused by Python anyway, and slow before that

    def __init__(self, lo: int, hi: int, unit: str = ""):
        assert lo < hi
        self.lo, self.hi, self.unit = int(lo), int(hi), unit

    def describe(self) -> str:
        return f"a whole number from {_g(self.lo)} to {_g(self.hi)}" + (f" {self.unit}" if self.unit else "")

    def __call__(self, text: str) -> int:
        text = self.text(text)
        s = text.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", s):
            raise self.refuse(text)
        x = int(s)
        if not self.lo <= x <= self.hi:
            raise self.refuse(text)
        return x


class Port(Integer):
    """A TCP port: 0 (a free one) to 65535."""

    kind = "port"

    def __init__(self):
        super().__init__(0, 65535)

    def describe(self) -> str:
        return "a port from 0 (a free one) to 65535"


# -- text ---------------------------------------------------------------------------------------------------
class Text(ArgType):
    """A printable UTF-8 string of ``min_chars`` to ``max_chars`` characters, optionally matching ``pattern``."""

    kind = "text"

    def __init__(self, what: str, max_chars: int = 256, min_chars: int = 1, pattern: Optional[str] = None):
        assert 0 <= min_chars <= max_chars
        self.what, self.max_chars, self.min_chars = what, max_chars, min_chars
        self.pattern = re.compile(pattern) if pattern else None

    def describe(self) -> str:
        return f"{self.what} ({self.min_chars}-{self.max_chars} characters)"

    def __call__(self, text: str) -> str:
        text = self.text(text)
        if len(text) < self.min_chars or (self.min_chars and not text.strip()):
            raise self.refuse(text)
        if self.pattern is not None and not self.pattern.fullmatch(text):
            raise self.refuse(text)
        return text


class SubjectCode(Text):
    """A subject code: 1-64 letters and digits (a valid BIDS label). ``legacy``: codes added before that rule
    (with other printable characters) are accepted too; the command checks them against the database."""

    def __init__(self, legacy: bool = False):
        super().__init__("a subject code", 64, 1, None if legacy else r"[A-Za-z0-9]{1,64}")
        self.legacy = legacy

    def describe(self) -> str:
        return ("a pseudonymous subject code of 1-64 letters and digits only (A-Z, a-z, 0-9, e.g. S01"
                + (", or one added before that rule" if self.legacy else "") + ")")


class DatabaseUrl(Text):
    """``--db``: a SQLAlchemy URL. Never echoed in a refusal: it may hold a password."""

    kind = "db_url"

    def __init__(self):
        super().__init__("a database URL (e.g. sqlite:///eegloop.db, postgresql+psycopg://user@host/db)", 10_000)

    def refuse(self, text: str, why: Optional[str] = None) -> argparse.ArgumentTypeError:
        got = f"got {len(text)} characters" if text else "got an empty value"
        return argparse.ArgumentTypeError(f"{why or 'must be ' + self.describe()}, {got} (not shown: it may hold a "
                                          "password)")


class _ParsedMap(Text):
    """A ``KEY=VALUE,...`` option the importers parse: parsed (and refused) while the command line is, with the
    parser's own sentence (less its leading ``--option: ``)."""

    option = ""  # the option, as the parser's messages start with it
    parser_name = ""  # its parser in eegloop.recorder.importers

    def describe(self) -> str:
        return self.what

    def __call__(self, text: str) -> str:
        text = super().__call__(text)
        from ..errors import EegloopError
        from ..recorder import importers

        try:
            getattr(importers, self.parser_name)(text)
        except EegloopError as exc:
            msg, prefix = str(exc), f"{self.option}: "
            raise argparse.ArgumentTypeError(msg[len(prefix):] if msg.startswith(prefix) else msg) from None
        return text


class EventsMap(_ParsedMap):
    """``--events``: ``VALUE=CLASS,...`` or a YAML file, parsed (and refused) while the command line is."""

    kind, option, parser_name = "events", "--events", "parse_events"

    def __init__(self):
        super().__init__("marker value -> class: 'VALUE=CLASS,...' (e.g. 1=house,2=face) or a YAML file",
                         max_chars=100_000)


class ChannelTypesMap(_ParsedMap):
    """``--channel-types``: ``LABEL=TYPE,...``, parsed (and refused) while the command line is."""

    kind, option, parser_name = "channel types", "--channel-types", "parse_channel_types"

    def __init__(self):
        super().__init__("LABEL=TYPE,... (types: eeg, eog, ecg, emg, misc, stim, resp; e.g. 'Right AUX=misc')",
                         max_chars=100_000)


class Host(ArgType):
    """An IPv4 or IPv6 address or a host name (RFC 1123 syntax; all-numeric names must be IPv4 addresses)."""

    kind = "host"
    max_chars = 253
    _LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

    def describe(self) -> str:
        return "an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1) or a host name"

    def __call__(self, text: str) -> str:
        text = self.text(text)
        try:
            ipaddress.ip_address(text)
            return text
        except ValueError:
            pass
        labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
        if not text or not all(self._LABEL.fullmatch(lab) for lab in labels):
            raise self.refuse(text)
        if all(lab.isdigit() for lab in labels) or re.fullmatch(r"[0-9.]+", text):
            raise self.refuse(text, "must be an IPv4 address (four numbers 0-255, e.g. 127.0.0.1) or a host name")
        return text


class CommaList(ArgType):
    """``a,b,c``: items checked by ``item`` (a :class:`Text`), none empty, none repeated; returns a list."""

    kind = "list"

    def __init__(self, item: Text, noun: str, max_items: int = 1000):
        self.item, self.noun, self.max_items = item, noun, max_items
        self.max_chars = min(1_000_000, max_items * (item.max_chars + 1))

    def describe(self) -> str:
        return f"a comma-separated list of {self.noun}, each once, none empty"

    def __call__(self, text: str) -> list:
        text = self.text(text)
        items = [t.strip() for t in text.split(",")]
        if len(items) > self.max_items:
            raise self.refuse(text, f"must have at most {self.max_items} items, got {len(items)}")
        out: list = []
        for k, t in enumerate(items, start=1):
            if not t:
                raise self.refuse(text, f"item {k} is empty; give {self.describe()}")
            try:
                v = self.item(t)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"item {k}: {exc}") from None
            if v in out:
                raise self.refuse(text, f"{clip_text(v, 60)!r} is given twice; give {self.describe()}")
            out.append(v)
        return out


# -- paths --------------------------------------------------------------------------------------------------
def _kind_of(path: Path) -> Optional[str]:
    """'file', 'folder', 'other' (a FIFO, a device, a socket) or None (nothing there)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return "not-a-folder-above"
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return "folder"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "other"


def _probe_writable(folder: Path) -> Optional[str]:
    """None if this process can create a file in ``folder`` (tried: a temporary file created and removed;
    permission bits say nothing for root or on /proc), else why not."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".eegloop-probe-")
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    return p


class _PathType(ArgType):
    what = "path"

    def path(self, text: str) -> Path:
        text = self.text(text)
        if not text.strip():
            raise self.refuse(text)
        if "\x00" in text:
            raise self.refuse(text)
        long = next((part for part in Path(text).parts if len(part.encode("utf-8")) > NAME_MAX_BYTES), None)
        if long is not None:
            raise self.refuse(text, f"must be {self.describe()} whose names are at most {NAME_MAX_BYTES} bytes "
                                    f"(one has {len(long.encode('utf-8'))})")
        return Path(text)

    def describe(self) -> str:
        return self.what


class InputFile(_PathType):
    """An existing, readable regular file (``suffixes``: one of these endings, when given)."""

    kind = "in_file"

    def __init__(self, what: str = "an existing file", suffixes: Sequence[str] = ()):
        self.what, self.suffixes = what, tuple(s.lower() for s in suffixes)

    def __call__(self, text: str) -> Path:
        path = self.path(text)
        kind = _kind_of(path)
        if kind is None or kind == "not-a-folder-above":
            raise self.refuse(text, f"no such file; give {self.what}")
        if kind == "folder":
            raise self.refuse(text, f"is a folder; give {self.what}")
        if kind != "file":
            raise self.refuse(text, f"is not a regular file (a pipe or a device); give {self.what}")
        if self.suffixes and path.suffix.lower() not in self.suffixes:
            raise self.refuse(text, f"must be {self.what} ending in {' or '.join(self.suffixes)}")
        if not os.access(path, os.R_OK):
            raise self.refuse(text, f"cannot be read (permission denied); give {self.what}")
        return path


class InputFolder(_PathType):
    """An existing folder this process can read."""

    kind = "in_folder"

    def __init__(self, what: str = "an existing folder"):
        self.what = what

    def __call__(self, text: str) -> Path:
        path = self.path(text)
        kind = _kind_of(path)
        if kind != "folder":
            raise self.refuse(text, f"{'no such folder' if kind in (None, 'not-a-folder-above') else 'is not a folder'}"
                                    f"; give {self.what}")
        if not os.access(path, os.R_OK | os.X_OK):
            raise self.refuse(text, f"cannot be read (permission denied); give {self.what}")
        return path


class InputPath(_PathType):
    """An existing readable file or folder."""

    kind = "in_path"

    def __init__(self, what: str = "an existing file or folder"):
        self.what = what

    def __call__(self, text: str) -> Path:
        path = self.path(text)
        kind = _kind_of(path)
        if kind in (None, "not-a-folder-above"):
            raise self.refuse(text, f"no such file or folder; give {self.what}")
        if kind == "other":
            raise self.refuse(text, f"is not a regular file or a folder (a pipe or a device); give {self.what}")
        if not os.access(path, os.R_OK):
            raise self.refuse(text, f"cannot be read (permission denied); give {self.what}")
        return path


class OutputFile(_PathType):
    """A file to write: not a folder, ending in one of ``suffixes`` (when given), in an existing folder where
    this process can create files; an existing file is replaced whole (never truncated in place)."""

    kind = "out_file"

    def __init__(self, what: str = "a file to write", suffixes: Sequence[str] = ()):
        self.what, self.suffixes = what, tuple(s.lower() for s in suffixes)

    def describe(self) -> str:
        return self.what + (f" ending in {' or '.join(self.suffixes)}" if self.suffixes else "")

    def __call__(self, text: str) -> Path:
        path = self.path(text)
        kind = _kind_of(path)
        if kind == "folder":
            raise self.refuse(text, f"is a folder; give {self.describe()}")
        if kind == "other":
            raise self.refuse(text, f"is not a regular file (a pipe or a device); give {self.describe()}")
        if self.suffixes and path.suffix.lower() not in self.suffixes:
            raise self.refuse(text, f"must be {self.describe()}")
        parent = path.parent
        pkind = _kind_of(parent)
        if pkind != "folder":
            raise self.refuse(text, f"folder {clip_text(str(parent), 200)} "
                                    f"{'does not exist' if pkind in (None, 'not-a-folder-above') else 'is not a folder'}")
        why = _probe_writable(parent)
        if why is not None:
            raise self.refuse(text, f"cannot write in folder {clip_text(str(parent), 200)} ({why})")
        if kind == "file" and not os.access(path, os.W_OK):
            raise self.refuse(text, "exists and cannot be replaced (permission denied)")
        return path


class OutputFolder(_PathType):
    """A folder to write into: an existing folder, or one that can be created (its nearest existing parent is
    a folder where this process can create files); never a file."""

    kind = "out_folder"

    def __init__(self, what: str = "a folder to write into"):
        self.what = what

    def __call__(self, text: str) -> Path:
        path = self.path(text)
        kind = _kind_of(path)
        if kind in ("file", "other"):
            raise self.refuse(text, f"is a file, not a folder; give {self.what}")
        base = path if kind == "folder" else _nearest_existing(path)
        if _kind_of(base) != "folder":
            raise self.refuse(text, f"cannot create it: {clip_text(str(base), 200)} is not a folder")
        why = _probe_writable(base)
        if why is not None:
            raise self.refuse(text, f"cannot {'write in' if base == path else 'create it in'} "
                                    f"{clip_text(str(base), 200)} ({why})")
        return path


class DataFolder(OutputFolder):
    """``--data``: an existing folder, or one that can be created; never a file. (Whether a database is in it
    is the command's to say.)"""

    kind = "data_folder"

    def __init__(self):
        super().__init__("the data folder (an existing folder, or one eegloop can create)")

    def __call__(self, text: str) -> Path:
        path = self.path(text)
        if _kind_of(path) == "folder":  # an existing data folder may be read-only: reading commands need no more
            return path
        return super().__call__(text)


# -- lists of values (nargs) --------------------------------------------------------------------------------
class UniqueItems(argparse.Action):
    """``nargs='+'`` action: each value once (``--sessions 3 3`` is refused, not counted twice)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = []
        for v in values:
            if v in seen:
                raise argparse.ArgumentError(self, f"{clip_text(str(v), 60)!r} is given twice; give each once")
            seen.append(v)
        setattr(namespace, self.dest, list(values))


# -- where a server can listen -------------------------------------------------------------------------------
def check_listen(host: str, port: int, host_option: str = "--console-host", port_option: str = "--console-port"):
    """Before any work: can this machine listen on ``host``:``port``? One :class:`EegloopError` naming the
    option at fault: the host (not resolvable, not an address of this machine) or the port (in use, needs
    privileges)."""
    import errno
    import socket

    from ..errors import EegloopError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise EegloopError(f"{host_option}: cannot resolve {clip_text(host, 100)!r} "
                           f"({getattr(exc, 'strerror', None) or exc}); give an address of this machine "
                           "(e.g. 127.0.0.1 or 0.0.0.0)") from None
    family, socktype, proto, _, addr = infos[0]
    s = socket.socket(family, socktype, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a port in TIME_WAIT is free
        s.bind(addr)
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise EegloopError(f"{host_option}: {clip_text(host, 100)} is not an address of this machine "
                               f"({exc.strerror}); give one of its addresses (e.g. 127.0.0.1 or 0.0.0.0)") from None
        if exc.errno == errno.EADDRINUSE:
            raise EegloopError(f"{port_option}: port {port} is in use on {clip_text(host, 100)}; choose another "
                               "port, 0 for a free one, or --no-console") from None
        if exc.errno == errno.EACCES:
            raise EegloopError(f"{port_option}: port {port} needs privileges on this machine; choose one above "
                               "1023, or 0 for a free one") from None
        raise EegloopError(f"{host_option}: cannot listen on {clip_text(host, 100)}:{port} "
                           f"({exc.strerror or exc})") from None
    finally:
        s.close()
