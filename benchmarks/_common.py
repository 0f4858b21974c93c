"""Shared by the benchmark scripts."""
from __future__ import annotations


def cpu_name() -> str:
    """The CPU's model name (every timing is reported beside it): the package's own reading."""
    from eegloop._machine import cpu_model

    return cpu_model()
