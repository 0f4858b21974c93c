"""eegloop.paradigm (see the module docstrings inside)."""
