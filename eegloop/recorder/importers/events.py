"""Events maps: which marker value is which class (``--events``), and the class of one marker."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ...errors import EegloopError, clip_text, short_repr
from ...protocol import read_yaml_file
from .recording import path_exists

MAX_CLASS_NAME = 128  # the longest class name an events map, a marker or a dataset may give
MAX_MARKER = 256  # the longest marker value an events map may give

IGNORE = "ignore"  # the class name that says: this marker value is not a stimulus


def parse_events(spec: str | None) -> dict[str, str]:
    """``"1=house,2=face"`` or a YAML file mapping marker value -> class.

    The class ``ignore`` marks a value that is not a stimulus (``start=ignore``): such markers are kept as
    events and counted, never epoched. The empty marker value some recorders write can only be ignored
    (YAML ``"": ignore``, or ``=ignore``).

    Raises :class:`EegloopError` naming ``--events`` (one line) for an empty or
    repeated marker value, an empty, over-long or control-character class name,
    and a YAML file that is missing, unreadable, over 1 MiB, not UTF-8, not
    valid YAML or not a flat mapping of scalars.
    """
    if not spec:
        return {}
    p = Path(spec)
    pairs: list[tuple[str, str, str]] = []  # (marker, class, what to show in a message)
    if p.suffix.lower() in (".yaml", ".yml") and ("=" not in spec or path_exists(p)):
        where = f"--events: {clip_text(spec, 200)}"
        data = read_yaml_file(p, where, "events file", EegloopError, unique_keys=True)
        if not isinstance(data, dict) or not data:
            got = "an empty file" if data is None else f"{short_repr(data, 60)}"
            raise EegloopError(f"{where}: must map marker values to classes (e.g. 1: house), got {got}")
        for k, v in data.items():
            for x in (k, v):
                if isinstance(x, bool) or not isinstance(x, (str, int, float)):
                    raise EegloopError(f"{where}: must map marker values to class names (plain values, e.g. "
                                       f"1: house), got {short_repr(k, 40)}: {short_repr(v, 40)}")
            pairs.append((str(k), str(v), f"{short_repr(k, 40)}: {short_repr(v, 40)}"))
    else:
        where = "--events"
        for part in spec.split(","):
            if "=" not in part:
                what = "an empty entry (two commas?)" if not part.strip() else short_repr(part, 60)
                raise EegloopError(f"--events: {what} is not VALUE=CLASS (e.g. 1=house,2=face)")
            k, v = part.split("=", 1)
            pairs.append((k.strip(), v.strip(), short_repr(part, 60)))
    out: dict[str, str] = {}
    for k, v, shown in pairs:
        if not k and v != IGNORE:
            raise EegloopError(f"{where}: empty marker value in {shown} (an empty marker can only be "
                               f"ignored: '=ignore', or \"\": ignore in a YAML file)")
        if not v:
            raise EegloopError(f"{where}: empty class name in {shown}")
        for what, x, most in (("marker value", k, MAX_MARKER), ("class name", v, MAX_CLASS_NAME)):
            if len(x) > most:
                raise EegloopError(f"{where}: {what} {short_repr(x, 40)} is longer than {most} characters")
            if not x.isprintable():
                raise EegloopError(f"{where}: {what} {short_repr(x, 40)} has control characters")
        if k in out:
            raise EegloopError(f"{where}: marker value {short_repr(k, 40)} is given twice")
        out[k] = v
    return out


def marker_class(value: str, events: dict[str, str]) -> Optional[str]:
    """Class of a marker value, '' for markers that are not stimuli (``ignore`` among them), None if unknown."""
    if value in events:
        return "" if events[value] == IGNORE else events[value]
    try:
        m = json.loads(value)
        if isinstance(m, dict) and "event" in m:
            return str(m.get("class", "")) if m["event"] == "stim_on" else ""
    except (ValueError, TypeError):
        pass
    return None
