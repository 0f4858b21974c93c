"""eegloop.decoder (see the module docstrings inside)."""
