"""One server per data dir. A running server holds an exclusive lock on `<data dir>/opus.lock`;
`opus restore` takes the same lock, so it cannot swap the files under a server, and a server
cannot start in the middle of a restore. The kernel drops the lock when the process ends,
however it ends (`kill -9` and power cuts too): a stale lock file never blocks a start."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_FILE = "opus.lock"
_WAIT_S = 2.0  # a probe (`opus doctor`, `opus admin token`) holds the lock for microseconds


@dataclass(frozen=True, slots=True)
class Holder:
    """What the process holding the lock wrote into the file."""

    pid: int | None
    port: int | None
    started_at: str | None

    def describe(self) -> str:
        parts = [f"pid {self.pid}" if self.pid else "", f"port {self.port}" if self.port else ""]
        return ", ".join(p for p in parts if p) or "an unknown process"


class DataDirLocked(Exception):
    def __init__(self, data_dir: Path, holder: Holder) -> None:
        super().__init__(f"{data_dir} is in use by a running Opus ({holder.describe()})")
        self.holder = holder


class DataDirLock:
    """The lock as a context manager: `with DataDirLock(dir, port=8080): ...`."""

    def __init__(self, data_dir: Path, *, wait_s: float = _WAIT_S, **info: Any) -> None:
        self.data_dir = data_dir
        self._wait_s = wait_s
        self._info = info
        self._fd: int | None = None

    def acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read(fd)
                    os.close(fd)
                    raise DataDirLocked(self.data_dir, holder) from None
                time.sleep(0.05)
        record = {
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self._info,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        # The file stays: deleting it would race with a process that has just opened it.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def holder(data_dir: Path) -> Holder | None:
    """The running server that holds `data_dir`, or None when no process does."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        # A shared lock is refused only while someone holds the exclusive one.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        found = _read(fd)
        os.close(fd)
        return found
    os.close(fd)
    return None


def _read(fd: int) -> Holder:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(info, dict):
            return Holder(info.get("pid"), info.get("port"), info.get("started_at"))
    return Holder(None, None, None)
