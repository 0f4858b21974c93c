"""The JSON beside every saved model's weights (a subject's decoder, its EEG encoder, a group model)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import EegloopError

__all__ = ["read_model_meta"]


def read_model_meta(path: Path, what: str = "model") -> dict:
    """The JSON beside a saved model's weights (``<path>.json``); one line when either file is missing."""
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise EegloopError(f"{what} file {path} (or its .json) not found")
    return json.loads(meta_path.read_text())
