"""Read ``.npy`` files that hold pickles without ever running code from them.

``np.save`` of a dict (as THINGS-EEG2 ships its data) writes a 0-d object array whose payload is a
pickle, and a full unpickler runs whatever a pickle asks for: a data file can carry a program. Here
nothing in a file is ever executed:

* the header is read with :mod:`numpy.lib.format` (``read_magic``, ``read_array_header_1_0``/``2_0``; the
  rare 3.0 header is parsed with :func:`ast.literal_eval`, as NumPy does);
* an array of plain values (numbers, strings, records without objects) is read with pickles off, exactly
  as NumPy reads it;
* an object payload is unpickled by :class:`SafeUnpickler`, whose ``find_class`` admits only what rebuilds
  NumPy arrays, dtypes and scalars (lists, dicts, tuples, strings and numbers need no global at all) and
  refuses anything else with a one-line error naming the global;
* the result is then walked: only dict, list, tuple, str, int, float, bool, None, NumPy arrays of plain
  values (or object arrays of these) and NumPy scalars pass.

Every problem (missing file, not a .npy file, truncated or garbled data, a refused global, an object
that is not plain data) is one error line naming the file.
"""
from __future__ import annotations

import ast
import importlib
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .errors import EegloopError, clip_text

__all__ = ["UnsafePickleError", "SafeUnpickler", "load_npy", "plain_data_problem"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that :class:`SafeUnpickler` does not admit (``name`` says which)."""

    def __init__(self, name: str):
        super().__init__(f"refused global {name}")
        self.name = name


def _numpy_attr(module_tail: str, name: str):
    """``numpy._core.<tail>.<name>`` (NumPy 2) or ``numpy.core.<tail>.<name>`` (NumPy 1), whichever exists."""
    for mod in (f"numpy._core.{module_tail}", f"numpy.core.{module_tail}"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    return None


def _admitted() -> dict[tuple[str, str], Any]:
    """Every global a ``np.save``d pickle of arrays, dtypes and scalars uses, under NumPy 1 and 2 names."""
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for tail, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
        obj = _numpy_attr(tail, name)
        if obj is not None:
            out[(f"numpy.core.{tail}", name)] = obj
            out[(f"numpy._core.{tail}", name)] = obj
    return out


_ADMITTED = _admitted()


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays, dtypes and scalars and nothing else.

    ``find_class`` returns only ``numpy.ndarray``, ``numpy.dtype`` and NumPy's own ``_reconstruct``,
    ``scalar`` and ``_frombuffer`` (under ``numpy.core`` and ``numpy._core``); any other global raises
    :class:`UnsafePickleError`. Persistent ids are refused too (the base class has no ``persistent_load``).
    """

    def find_class(self, module: str, name: str):
        try:
            return _ADMITTED[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(f"{module}.{name}") from None


_PLAIN = (str, int, float, bool, type(None))


def _describe(x) -> str:
    t = type(x)
    return f"a {t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else f"a {t.__qualname__}"


def plain_data_problem(obj) -> str | None:
    """What in ``obj`` is not plain data (e.g. ``"a set"``), or None when all of it is.

    Plain: dict, list, tuple, str, int, float, bool, None, NumPy arrays without objects, object arrays of
    plain data, NumPy scalars without objects. Walked without recursion (any depth, cycles visited once).
    """
    stack = [obj]
    seen: set[int] = set()
    while stack:
        x = stack.pop()
        t = type(x)
        if t in _PLAIN:
            continue
        if t in (dict, list, tuple) or t is np.ndarray:
            if id(x) in seen:
                continue
            seen.add(id(x))
        if t is dict:
            stack.extend(x.keys())
            stack.extend(x.values())
        elif t is list or t is tuple:
            stack.extend(x)
        elif t is np.ndarray:
            if x.dtype.hasobject:
                if x.dtype != np.dtype(object):
                    return "a structured array with object fields"
                stack.extend(x.flat)
        elif isinstance(x, np.generic) and not x.dtype.hasobject:
            continue
        else:
            return _describe(x)
    return None


def _read_header(fh, version: tuple[int, int], max_header_size: int = 10000) -> np.dtype:
    """The dtype the header of a .npy file declares (the file left at the start of its data)."""
    if version == (1, 0):
        return npy_format.read_array_header_1_0(fh, max_header_size=max_header_size)[2]
    if version == (2, 0):
        return npy_format.read_array_header_2_0(fh, max_header_size=max_header_size)[2]
    if version == (3, 0):  # like 2.0, UTF-8 text; numpy.lib.format has no public reader for it
        raw = fh.read(4)
        if len(raw) != 4:
            raise ValueError("EOF while reading the header length")
        (n,) = struct.unpack("<I", raw)
        if n > max_header_size:
            raise ValueError(f"header of {n} bytes, more than {max_header_size}")
        text = fh.read(n)
        if len(text) != n:
            raise ValueError(f"EOF in the header ({len(text)} of {n} bytes)")
        d = ast.literal_eval(text.decode("utf-8"))
        if not isinstance(d, dict) or not {"descr", "fortran_order", "shape"} <= set(d):
            raise ValueError("the header is not a dict with descr, fortran_order and shape")
        return npy_format.descr_to_dtype(d["descr"])
    raise ValueError(f"unknown .npy format version {version[0]}.{version[1]}")


_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError,
                OverflowError, MemoryError, RecursionError, UnicodeDecodeError, struct.error, SyntaxError,
                ImportError)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {clip_text(first, limit)}" if first else type(exc).__name__


def load_npy(path: str | Path, what: str = ".npy file", error: type[Exception] = EegloopError,
             unwrap: bool = False):
    """Read a ``.npy`` file; a pickled payload is rebuilt by :class:`SafeUnpickler`, never executed.

    Parameters
    ----------
    path : str | Path
        The file.
    what : str
        What the file should be, for messages (``"THINGS-EEG2 EEG file"``).
    error : type of Exception
        The error class raised, with one line naming the file and the problem.
    unwrap : bool
        Return the content of a 0-d object array (what ``np.save`` of a dict writes) instead of the array.

    Returns
    -------
    object
        The array, or with ``unwrap`` the object a 0-d object array holds (e.g. the saved dict).

    Raises
    ------
    error
        The file is missing or unreadable, not a .npy file, truncated or garbled, its pickle needs a
        global other than NumPy's array, dtype and scalar constructors (the message names it), or the
        result holds anything but plain data.
    """
    path = Path(path)
    name = clip_text(str(path), 300)
    try:
        if not path.is_file():  # a folder, a FIFO (which would block), nothing
            exists = path.exists()
            raise error(f"{name}: {'is not a regular file' if exists else 'file not found'}")
        fh = open(path, "rb")
    except ValueError:  # a NUL byte in the name
        raise error(f"{name}: file not found") from None
    except OSError as exc:
        raise error(f"{name}: cannot read the file ({clip_text(exc.strerror or type(exc).__name__, 100)})") from None
    with fh:
        try:
            version = npy_format.read_magic(fh)
        except ValueError as exc:
            raise error(f"{name}: not a NumPy .npy file ({_first_line(exc, 120)})") from None
        try:
            dtype = _read_header(fh, version)
        except _LOAD_ERRORS as exc:
            raise error(f"{name}: not a {what} (damaged .npy header: {_first_line(exc, 120)})") from None
        try:
            if not dtype.hasobject:
                fh.seek(0)
                obj = npy_format.read_array(fh, allow_pickle=False)
            else:
                obj = SafeUnpickler(fh).load()
        except UnsafePickleError as exc:
            raise error(f"{name}: refused: its pickle calls {clip_text(exc.name, 100)}, and eegloop never runs "
                        f"code from a data file (a {what} may hold only NumPy arrays, numbers, strings, lists "
                        "and dicts)") from None
        except (OSError, *_LOAD_ERRORS) as exc:
            raise error(f"{name}: not a readable {what} (truncated or damaged: {_first_line(exc)})") from None
    problem = plain_data_problem(obj)
    if problem is not None:
        raise error(f"{name}: refused: it holds {clip_text(problem, 100)}; a {what} may hold only NumPy arrays, "
                    "numbers, strings, lists and dicts")
    if unwrap and type(obj) is np.ndarray and obj.ndim == 0 and obj.dtype == np.dtype(object):
        obj = obj[()]
    return obj
