"""The power-cut disk proves itself before it judges Opus: unsynced data is gone after a cut,
synced data stays, renames and truncation behave, and SQLite without fsync loses commits on it
(so a test built on it can fail) while SQLite with fsync at every commit loses none."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from faults.conftest import Figures
from faults.powercut import PowerCutDisk, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


def _write(path: Path, data: bytes, *, sync: bool, mode: str = "wb") -> None:
    with path.open(mode) as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def _after_cut(disk: PowerCutDisk) -> None:
    disk.cut()
    disk.unmount()
    disk.mount()


def test_unsynced_writes_are_gone_after_a_cut_and_synced_ones_stay(tmp_path: Path) -> None:
    with PowerCutDisk(tmp_path) as disk:
        kept, lost = disk.path / "kept", disk.path / "lost"
        _write(kept, b"durable " * 1000, sync=True)
        _write(kept, b"appended but not synced", sync=False, mode="ab")
        _write(lost, b"never synced", sync=False)
        # Before the cut every reader sees everything written.
        assert kept.read_bytes().endswith(b"appended but not synced")
        assert lost.read_bytes() == b"never synced"
        files, dropped = disk.cut()
        assert files == 2 and dropped > 0
        with pytest.raises(OSError):  # the disk answers nothing after the power went
            kept.read_bytes()
        disk.unmount()
        disk.mount()
        assert kept.read_bytes() == b"durable " * 1000
        assert lost.exists() and lost.read_bytes() == b""  # its name was durable, not its data


def test_a_rename_keeps_what_was_synced_before_it(tmp_path: Path) -> None:
    with PowerCutDisk(tmp_path) as disk:
        whole, empty = disk.path / "whole", disk.path / "empty"
        _write(disk.path / "whole.tmp", b"secret-1", sync=True)
        os.replace(disk.path / "whole.tmp", whole)
        _write(disk.path / "empty.tmp", b"secret-2", sync=False)  # write_text, no fsync
        os.replace(disk.path / "empty.tmp", empty)
        _after_cut(disk)
        assert whole.read_bytes() == b"secret-1"
        assert empty.read_bytes() == b""  # what the issue found in secret and admin_token
        assert sorted(p.name for p in disk.path.iterdir()) == ["empty", "whole"]


def test_truncation_is_undone_by_a_cut_unless_synced(tmp_path: Path) -> None:
    with PowerCutDisk(tmp_path) as disk:
        a, b = disk.path / "a", disk.path / "b"
        original = bytes(range(256)) * 40  # 10,240 bytes: two pages and a half
        for f in (a, b):
            _write(f, original, sync=True)
        for f in (a, b):
            with f.open("r+b") as handle:
                handle.truncate(100)
                handle.seek(5000)
                handle.write(b"after the hole")  # 100..5000 must read as zeros
                handle.flush()
                if f is b:
                    os.fsync(handle.fileno())
        expected_b = original[:100] + bytes(4900) + b"after the hole"
        assert a.read_bytes() == expected_b == b.read_bytes()
        _after_cut(disk)
        assert a.read_bytes() == original
        assert b.read_bytes() == expected_b


_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = " + sys.argv[2])
conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, pad TEXT)")
n = 0
while True:
    n += 1
    conn.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 300))
    print(n, flush=True)  # acknowledged: the commit returned
"""


def _acknowledged_then_cut(disk: PowerCutDisk, synchronous: str, commits: int) -> tuple[int, int]:
    """A writer commits one row at a time and says so after each commit; the power goes after
    `commits` acknowledgements. Returns (acknowledged, rows found after the cut)."""
    db = disk.path / f"{synchronous}.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db), synchronous],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert writer.stdout is not None
    acknowledged = 0
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= commits:
            break
    disk.cut()
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    # What it printed before the cut, and no later: commits after it could not happen.
    disk.unmount()
    disk.mount()
    conn = sqlite3.connect(db)
    try:
        (found,) = conn.execute("SELECT COUNT(*) FROM t").fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    except sqlite3.DatabaseError:
        found = 0  # a database lost whole: the cut took even its first pages
    finally:
        conn.close()
    return acknowledged, found


def test_sqlite_loses_commits_without_fsync_and_none_with_it(
    tmp_path: Path, figures: Figures
) -> None:
    with PowerCutDisk(tmp_path) as disk:
        for synchronous in ("OFF", "NORMAL", "FULL"):
            acknowledged, found = _acknowledged_then_cut(disk, synchronous, 300)
            figures.add(
                f"SQLite WAL synchronous={synchronous}, one cut",
                acknowledged=acknowledged,
                found=found,
            )
            if synchronous == "OFF":
                assert found < acknowledged, "a disk that loses nothing cannot test durability"
            elif synchronous == "FULL":
                assert found >= acknowledged
