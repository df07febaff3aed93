"""PyInstaller's entry script for the single binary (outside the package, so that PyInstaller does
not put `opus/` itself on the path, where `opus/queue.py` would hide the standard `queue`)."""

from opus.cli import main

main()
