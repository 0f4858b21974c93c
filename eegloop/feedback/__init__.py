"""eegloop.feedback (see the module docstrings inside)."""
