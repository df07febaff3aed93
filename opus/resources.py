"""Where the templates and static files are: the one place that knows, whether Opus runs from a
source checkout, an installed wheel or the PyInstaller binary."""

from __future__ import annotations

import sys
from pathlib import Path


def package_dir() -> Path:
    """The `opus` package folder; inside the binary, the folder PyInstaller unpacked it to."""
    bundle = getattr(sys, "_MEIPASS", None)  # set by PyInstaller's bootloader
    if bundle is not None:
        return Path(bundle) / "opus"
    return Path(__file__).resolve().parent


def templates_dir() -> Path:
    return package_dir() / "templates"


def static_dir() -> Path:
    return package_dir() / "static"
