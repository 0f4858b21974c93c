"""Names a package exports but imports on first use (PEP 562), so importing the package stays light."""
from __future__ import annotations

import sys
from importlib import import_module
from typing import Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` for ``names`` (public name -> the module,
    relative to ``package``, that defines it); a name, once loaded, is kept in the package's namespace;
    ``dir()`` lists the package's ``__all__``."""

    def __getattr__(name: str):
        mod = names.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{mod}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list:
        return sorted(getattr(sys.modules[package], "__all__", names))

    return __getattr__, __dir__
