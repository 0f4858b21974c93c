"""Reading YAML from untrusted bytes: bounded in size, time, memory and message.

Protocol files, event maps and every other YAML eegloop reads go through :func:`read_yaml_file` or
:func:`parse_yaml_text`: any problem is one line naming where (a file, an option).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ProtocolError, clip_text, short_repr

__all__ = ["MAX_YAML_BYTES", "parse_yaml_text", "read_yaml_file"]


MAX_YAML_BYTES = 1 << 20  # 1 MiB: a protocol is a few kB
_MAX_INT_DIGITS = 4300  # Python's own limit for str <-> int conversion
_MAX_EXPANDED = 4_000_000  # values + characters after YAML aliases are followed


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose cost stays linear in the size of the text.

    Integers are limited to 4300 digits (as Python's ``int(str)``, also for hex,
    octal and sexagesimal forms), merge keys (``<<``) keep one entry per key (so
    chains of merges cannot grow exponentially), and with ``unique_keys`` a key
    given twice in one mapping is an error.
    """

    unique_keys = False

    def construct_yaml_int(self, node):
        if len(node.value) > _MAX_INT_DIGITS + 10:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of more than {_MAX_INT_DIGITS} digits", node.start_mark)
        try:
            value = super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"not an integer or one of more than {_MAX_INT_DIGITS} digits", node.start_mark) from None
        if value.bit_length() > 14_000:  # ~4200 decimal digits: str() of it stays possible
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of more than {_MAX_INT_DIGITS} digits", node.start_mark)
        return value

    def flatten_mapping(self, node):
        """PyYAML's merge (``<<``) with one entry per key and a bound on the total work."""
        if self.unique_keys:
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = str(self.construct_object(key_node))
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {short_repr(key, 60)}", key_node.start_mark)
                    seen.add(key)
        merge, own = [], []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.tag == "tag:yaml.org,2002:value":
                    key_node.tag = "tag:yaml.org,2002:str"
                own.append((key_node, value_node))
                continue
            if isinstance(value_node, yaml.MappingNode):
                subs = [value_node]
            elif isinstance(value_node, yaml.SequenceNode):
                subs = value_node.value[::-1]  # the first mapping listed wins
                for sub in subs:
                    if not isinstance(sub, yaml.MappingNode):
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"expected a mapping for merging, but found {sub.id}", sub.start_mark)
            else:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"expected a mapping or list of mappings for merging, but found {value_node.id}",
                    value_node.start_mark)
            for sub in subs:
                self.flatten_mapping(sub)
                self._merge_work = getattr(self, "_merge_work", 0) + len(sub.value)
                if self._merge_work > _MAX_EXPANDED:
                    raise yaml.constructor.ConstructorError(
                        None, None, "merge keys (<<) expand to too many entries", key_node.start_mark)
                merge.extend(sub.value)
        if not merge:
            node.value = own
            return
        # later entries win when the mapping is built: keep only the last of each key
        out, seen_keys = [], set()
        for key_node, value_node in reversed(merge + own):
            ident = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if ident not in seen_keys:
                seen_keys.add(ident)
                out.append((key_node, value_node))
        out.reverse()
        node.value = out


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _SafeLoader.construct_yaml_int)


def _expands_within(data: Any, budget: int) -> bool:
    """Whether ``data`` has at most ``budget`` values and characters, aliases followed (iteratively)."""
    stack, n = [data], 0
    while stack:
        x = stack.pop()
        n += 1
        if isinstance(x, (str, bytes)):
            n += len(x)
        elif isinstance(x, dict):
            n += len(x)
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            n += len(x)
            stack.extend(x)
        if n > budget:
            return False
    return True


def parse_yaml_text(text: str, where: str, error: type = ProtocolError, unique_keys: bool = False) -> Any:
    """The YAML document in ``text`` (safe tags only); any problem raises ``error`` with one line.

    ``where`` starts every message (a file name, ``--events: FILE``).
    """
    try:
        loader = _SafeLoader(text)  # the reader refuses control characters right here
        loader.unique_keys = unique_keys
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise error(f"{where}: {loc}not valid YAML ({clip_text(problem)})") from None
    except RecursionError:
        raise error(f"{where}: not valid YAML (nested too deeply)") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-02-30
        raise error(f"{where}: not valid YAML ({clip_text(str(exc) or type(exc).__name__)})") from None
    if not _expands_within(data, _MAX_EXPANDED):
        raise error(f"{where}: the YAML document expands to more than {_MAX_EXPANDED:,} values and characters "
                    "(aliases?)")
    return data


def read_yaml_file(path: str | Path, where: str, what: str = "file", error: type = ProtocolError,
                   unique_keys: bool = False) -> Any:
    """Read the YAML document in ``path``: at most 1 MiB of UTF-8; any problem raises ``error`` with one line."""
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"{where}: is a folder, not a file")
        if not path.is_file():
            if path.exists():
                raise error(f"{where}: is not a regular file")
            raise error(f"{where}: {what} not found")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise error(f"{where}: cannot read the {what} ({clip_text(exc.strerror or type(exc).__name__, 100)})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise error(f"{where}: {what} is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    return parse_yaml_text(text, where, error, unique_keys)
