"""The old home of :mod:`eegloop.cli.types` (the command line's argument types), kept for its importers."""
from .cli.types import *  # noqa: F401,F403
from .cli.types import __all__  # noqa: F401
