"""Loading a protocol: YAML into the schema's dataclasses, every value's type and bounds checked.

An error names the file and the field path (``protocols/x.yaml: paradigm.image_s: must be > 0, got -0.5``);
after the fields, :mod:`.checks` checks them against each other.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import ProtocolError, clip_text, short_repr
from .checks import _cross_checks
from .safe_yaml import parse_yaml_text, read_yaml_file
from .schema import Protocol

__all__ = ["load_protocol", "protocol_from_dict", "stored_protocol"]


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list,):
        return "a list"
    if origin in (dict,):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return str(tp)


def _convert(value: Any, tp: Any, path: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return _convert(value, non_none[0], path, meta)
    if value is None:
        raise ProtocolError(f"{path}: must be {_type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProtocolError(f"{path}: must be a mapping (section), got {short_repr(value)}")
        return _build(tp, value, path)
    if origin is Literal:
        if value not in args:
            raise ProtocolError(f"{path}: must be {_type_name(tp)}, got {short_repr(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{path}: must be a list, got {short_repr(value)}")
        # numeric bounds of a list field apply to each element
        return [_convert(v, args[0], f"{path}[{i}]", meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{path}: must be a mapping, got {short_repr(value)}")
        return {
            str(_convert(k, args[0], f"{path}", {}) if not isinstance(k, (int, float)) else k): _convert(
                v, args[1], _join(path, k), {}
            )
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{path}: must be true or false, got {short_repr(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{path}: must be an integer, got {short_repr(value)}")
        _check_range(value, path, meta)
        return value
    if tp is float:
        try:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            ok = False
        if not ok:
            hint = ""
            if isinstance(value, str) and re.fullmatch(r"[+-]?\d+[eE][+-]?\d+", value.strip()):
                hint = f" (YAML 1.1 reads {value.strip()} as text: write it with a point, e.g. 1.0e9)"
            raise ProtocolError(f"{path}: must be a number, got {short_repr(value)}{hint}")
        _check_range(float(value), path, meta)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ProtocolError(f"{path}: must be a string, got {short_repr(value)}")
        return value
    raise TypeError(f"unsupported protocol type {tp} at {path}")  # pragma: no cover - schema bug


def _check_range(v, path: str, meta: dict) -> None:
    for key, op, ok in (
        ("ge", ">=", lambda a, b: a >= b),
        ("gt", ">", lambda a, b: a > b),
        ("le", "<=", lambda a, b: a <= b),
        ("lt", "<", lambda a, b: a < b),
    ):
        bound = meta.get(key)
        if bound is not None and not ok(v, bound):
            raise ProtocolError(f"{path}: must be {op} {bound}, got {short_repr(v)}")


def _build(cls, data: dict, path: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1) if isinstance(key, str) and len(key) < 100 else []
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ProtocolError(f"{_join(path, key)}: unknown field{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            value = data[name]
            tp = hints[name]
            # a section given as `simulate: {}` or `simulate: true` means "defaults"
            if value is True and _optional_dataclass(tp):
                value = {}
            kwargs[name] = _convert(value, tp, _join(path, name), dict(f.metadata))
    return cls(**kwargs)


def _optional_dataclass(tp) -> bool:
    return any(dataclasses.is_dataclass(a) for a in typing.get_args(tp))


def _join(path: str, key) -> str:
    if not (isinstance(key, str) and len(key) <= 64 and key.isprintable()):
        key = short_repr(key, 40)  # a key from the file: bounded, one line
    return f"{path}.{key}" if path else key


def protocol_from_dict(data: dict | None, source: str | None = None) -> Protocol:
    """Validate a mapping (as read from YAML) into a :class:`Protocol`.

    Parameters
    ----------
    data : dict | None
        The protocol's contents; missing fields take their defaults.
    source : str | None
        File name used in error messages and to resolve relative paths.
    """
    where = f"{clip_text(source, 1000)}: " if source else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}the protocol must be a YAML mapping of sections, got {type(data).__name__}")
    try:
        proto = _build(Protocol, data, "")
    except ProtocolError as exc:
        raise ProtocolError(f"{where}{exc}") from None
    proto = dataclasses.replace(proto, source=source)
    _cross_checks(proto)
    return proto


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol YAML file.

    Raises
    ------
    ProtocolError
        With one line naming the file, the field path and what is wrong.
    """
    path = Path(path)
    data = read_yaml_file(path, clip_text(str(path), 1000), "protocol file")
    return protocol_from_dict(data, source=str(path))


def stored_protocol(text: str, where: str = "the stored protocol", *, tolerant: bool = False) -> Protocol:
    """The protocol stored with a session: its complete YAML text, as :meth:`Protocol.to_yaml` wrote it.

    The one reader of a stored protocol (reports, the BIDS export, the database's epochs).

    Parameters
    ----------
    text : str
        The stored YAML (``SessionInfo.protocol_yaml``).
    where : str
        Starts the message of a YAML error (e.g. ``session 3's protocol``).
    tolerant : bool
        False: validated as a protocol file is; any problem raises :class:`~eegloop.errors.ProtocolError` with
        one line. True: never raises, for readers that need a field or two (a report's montage, a session's
        classes): a text that is not YAML or not a mapping gives the defaults, each field that does not validate
        (and each unknown one) is left at its default, and the fields are not checked against each other.

    Returns
    -------
    Protocol
        Without a source: relative paths in it resolve against the current folder.
    """
    if not tolerant:
        return protocol_from_dict(parse_yaml_text(text, where))
    try:
        data = parse_yaml_text(text, where)
    except ProtocolError:
        data = None
    return _salvage(Protocol, data if isinstance(data, dict) else {})


def _salvage(cls, data: dict):
    """``cls`` built from the fields of ``data`` that validate; the others keep their defaults (never raises)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal") or f.name not in data:
            continue
        tp, value = hints[f.name], data[f.name]
        section = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
        if value is True and _optional_dataclass(tp):  # `simulate: true` means "defaults", as in _build
            value = {}
        try:
            if section and isinstance(value, dict):
                kwargs[f.name] = _salvage(section[0], value)
            else:
                kwargs[f.name] = _convert(value, tp, f.name, dict(f.metadata))
        except ProtocolError:
            pass
    return cls(**kwargs)
