"""eegloop: closed-loop EEG visual-decoding experiments, end to end.

protocol -> paradigm + recorder -> database -> decoder -> feedback.
"""
from ._logging import logger, set_log_level
from .errors import EegloopError, ProtocolError

__version__ = "0.1.0"

__all__ = ["__version__", "logger", "set_log_level", "EegloopError", "ProtocolError"]
