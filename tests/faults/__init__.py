"""The fault suite (`make faults`): real servers under kill -9, SIGTERM, a full disk, bad
clients and clock jumps. A package, so its conftest does not clash with tests/conftest.py."""
