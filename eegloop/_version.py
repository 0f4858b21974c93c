"""eegloop's version, in a module of its own so that parts of the package can read it without importing
``eegloop/__init__`` (which re-exports it)."""
__version__ = "0.1.0"
