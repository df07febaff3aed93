"""`opus backup` and `opus restore`: the whole appliance state in one .tar.gz file.

A vote answered 202 lives in one of two databases: in the queue (`queue.db`) until a worker
applies it, then in `opus.db`. Two copies taken one after the other are two snapshots, so the
order matters. The queue is copied first (snapshot Q), then the database (snapshot D, later):

- a vote applied before Q is in D too (the database only gains votes);
- a vote still waiting at Q is in the queue copy; if it was applied between Q and D it is in
  both, and the restored server applies it again on start, which changes nothing (every
  applied event id is recorded with the vote, in the same transaction).

The other order would lose the votes applied between the two copies: done in the queue copy,
absent from the database copy. Each copy uses SQLite's online backup API, so both are
consistent while the server is serving and votes are flowing.

The archive also holds the secret that signs voter tokens (attendees' phones stay joined), the
admin token and the node id. A restore refuses while a server holds the data dir (lock.py),
checks every file, and moves the files it replaces aside instead of deleting them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from opus import __version__, db, files
from opus.lock import DataDirLock
from opus.queue import VoteQueue

DATABASES = ("queue.db", "opus.db")  # in this order: see the module's docstring
KEPT_FILES = ("secret", "admin_token", "node_id")
MANIFEST = "opus-backup.json"
FORMAT = 1


class BackupError(Exception):
    """A backup that cannot be made or a file that is not a usable backup."""


@dataclass(frozen=True, slots=True)
class Summary:
    created_at: str
    opus_version: str
    schema_version: int
    rooms: int
    polls: int
    votes: int  # counted votes in the database copy
    queued: int  # accepted votes still in the queue copy: counted when the server starts
    failed: int  # dead-lettered votes, kept as they were

    def describe(self) -> str:
        return (
            f"{self.rooms} rooms, {self.polls} polls, {self.votes} counted votes,"
            f" {self.queued} votes waiting in the queue, {self.failed} failed"
        )


def create(data_dir: Path, target: Path) -> Summary:
    """Write a backup of `data_dir` (served or not) to the .tar.gz file `target`."""
    if not (data_dir / "opus.db").is_file():
        raise BackupError(f"No database in {data_dir}: is this the server's data dir?")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".opus-backup-", dir=target.parent) as tmp:
        staging = Path(tmp)
        for name in DATABASES:
            if (data_dir / name).is_file():
                db.backup(data_dir / name, staging / name)
        for name in KEPT_FILES:
            if (data_dir / name).is_file():
                shutil.copy2(data_dir / name, staging / name)
        summary = _check(staging)
        (staging / MANIFEST).write_text(
            json.dumps({"format": FORMAT, **asdict(summary)}, indent=2) + "\n"
        )
        # Written beside the target and renamed: a backup that fails half-way never
        # replaces a good one.
        partial = staging / "archive.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            for name in (MANIFEST, *DATABASES, *KEPT_FILES):
                if (staging / name).is_file():
                    tar.add(staging / name, arcname=name)
        os.chmod(partial, 0o600)  # it holds the admin token and the token secret
        files.sync_file(partial)  # whole on disk before its name says it is a backup
        os.replace(partial, target)
        files.fsync_dir(target.parent)
    return summary


def read_summary(archive: Path) -> Summary:
    """The manifest of a backup file, without extracting it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            manifest = json.load(io.TextIOWrapper(member))
    except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
        raise BackupError(f"{archive} is not an Opus backup ({exc})") from None
    manifest.pop("format", None)
    return Summary(**manifest)


def restore(archive: Path, data_dir: Path) -> tuple[Summary, Path | None]:
    """Put a backup in place in `data_dir`; returns its summary and the folder where the
    replaced files were moved (None when there were none). Raises DataDirLocked while a
    server runs on `data_dir`."""
    made = read_summary(archive)  # refuse a file that is not a backup before touching anything
    with DataDirLock(data_dir, wait_s=0, restoring=str(archive)):
        with tempfile.TemporaryDirectory(prefix=".opus-restore-", dir=data_dir) as tmp:
            staging = Path(tmp)
            with tarfile.open(archive, "r:gz") as tar:
                names = set(tar.getnames())
                unexpected = names - {MANIFEST, *DATABASES, *KEPT_FILES}
                if unexpected or "opus.db" not in names:
                    raise BackupError(
                        f"{archive} is not an Opus backup (it holds {', '.join(sorted(names))})"
                    )
                tar.extractall(staging, filter="data")
            summary = _check(staging)
            aside = _move_aside(data_dir)
            for name in (*DATABASES, *KEPT_FILES):
                if (staging / name).is_file():
                    files.sync_file(staging / name)
                    os.replace(staging / name, data_dir / name)
            files.fsync_dir(data_dir)
    return replace(summary, created_at=made.created_at), aside


def _check(folder: Path) -> Summary:
    """Open every database in `folder`, check its integrity and count what it holds."""
    path = folder / "opus.db"
    try:
        with db.open_read_only(path) as conn:
            (verdict,) = conn.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise BackupError(f"the database copy is damaged: {verdict}")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > db.latest_version():
                raise BackupError(f"the backup's schema ({version}) is newer than this Opus")
            counts = [
                conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("rooms", "polls", "votes")
            ]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the database copy cannot be read: {exc}") from None
    queued = failed = 0
    if (folder / "queue.db").is_file():
        queue = VoteQueue(folder / "queue.db")
        try:
            stats = queue.stats()
        finally:
            queue.close()
        queued, failed = stats["ready"] + stats["claimed"], stats["failed"]
    return Summary(
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        opus_version=__version__,
        schema_version=version,
        rooms=counts[0],
        polls=counts[1],
        votes=counts[2],
        queued=queued,
        failed=failed,
    )


def _move_aside(data_dir: Path) -> Path | None:
    """Move the data dir's current state into `pre-restore-<time>/`; never delete it."""
    present = [
        p
        for name in (*DATABASES, *KEPT_FILES)
        for p in (data_dir / name, data_dir / f"{name}-wal", data_dir / f"{name}-shm")
        if p.exists()
    ]
    if not present:
        return None
    stamp = time.strftime("pre-restore-%Y%m%d-%H%M%S")
    aside, n = data_dir / stamp, 1
    while aside.exists():
        n += 1
        aside = data_dir / f"{stamp}-{n}"
    aside.mkdir()
    for path in present:
        os.replace(path, aside / path.name)
    files.fsync_dir(aside)
    return aside
