"""The ``eegloop`` command line (:func:`main`, the console script and ``python -m eegloop``)."""
from .app import build_parser, main

__all__ = ["build_parser", "main"]
