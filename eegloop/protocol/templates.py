"""The protocol templates shipped with eegloop (``eegloop/protocols/*.yaml``: ``demo``, ``ferrante2023``, ...)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ProtocolError, short_repr

__all__ = ["TEMPLATES_DIR", "template_path", "templates"]


TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "protocols"  # shipped inside the package (package data)


def templates() -> list[str]:
    """Names of the protocol templates shipped with eegloop (``demo``, ``ferrante2023``, ...)."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml"))


def template_path(name: str) -> Path:
    """The shipped template ``name`` (e.g. ``ferrante2023``); one-line error naming the choices otherwise."""
    p = TEMPLATES_DIR / f"{name}.yaml"
    if name not in templates() or not p.is_file():
        raise ProtocolError(f"--from: no protocol template {short_repr(name, 60)}; choose from "
                            f"{', '.join(templates()) or 'none (the package was installed without its templates)'}")
    return p
