"""eegloop.recorder (see the module docstrings inside)."""
