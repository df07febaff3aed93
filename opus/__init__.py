"""Opus: a live-polling appliance."""

__version__ = "0.1.0"
