"""Files Opus writes outside SQLite (the token secret, the admin token, the node id, backups,
exports), written whole: after a power cut a reader finds the old file or the new one, never an
empty or half-written one.

A file written and renamed without fsync can be empty after a power cut (the rename reached the
disk, its data did not); so can one written in place. Here a file is written beside its target,
fsync'd, renamed over it, and the directory fsync'd so that the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


class DamagedFile(Exception):
    """A file that Opus wrote once is empty or cut short: it is never used as it is."""


def fsync_dir(folder: Path) -> None:
    """Make the names in `folder` (a file created, renamed or deleted there) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(folder: Path) -> None:
    """The data dir: readable by its owner only (it holds the secret and every vote), whether
    or not systemd made it so."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # another user's folder: left as it is
        os.chmod(folder, 0o700)


def private_file(path: Path) -> None:
    """A database file, created 0600 before SQLite opens it (SQLite gives its -wal and -shm
    files the database's permissions)."""
    with contextlib.suppress(PermissionError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)


def write_whole(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` so that a power cut leaves either the old file or all of the new
    one: a temporary file beside it, fsync'd, renamed over it, the directory fsync'd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sync_file(path: Path) -> None:
    """fsync a file that was written by other means (a tar archive, an SQLite copy)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_or_create(
    path: Path, make: Callable[[], str], *, min_length: int, consequence: str
) -> str:
    """The one line kept in `path`, or a new one from `make()` written whole on first use.

    A file that exists but holds fewer than `min_length` characters was cut short (by a power
    cut before Opus wrote files whole, or by hand): it raises DamagedFile naming the file and
    what to do, and is never used. `consequence` says what deleting it costs.
    """
    try:
        value = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        value = make()
        write_whole(path, (value + "\n").encode())
        return value
    if len(value) < min_length:
        state = "empty" if not value else f"cut short ({len(value)} characters)"
        raise DamagedFile(
            f"{path} is {state}, so Opus will not use it. It was probably being written when"
            f" the power went. Restore the data dir from a backup (opus restore), or delete"
            f" {path} and start again: {consequence}."
        )
    return value
