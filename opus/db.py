"""The only module that opens SQLite: one writer connection (every write in BEGIN IMMEDIATE),
one reader connection, WAL, and migrations tracked by PRAGMA user_version."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from opus import files

log = logging.getLogger(__name__)

Row = sqlite3.Row
Params = dict[str, Any] | Sequence[Any]

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE rooms (
        id TEXT PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE polls (
        id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        question TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'draft',
        allow_change INTEGER NOT NULL DEFAULT 0,
        hide_results INTEGER NOT NULL DEFAULT 0,
        total_votes INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        opened_at TEXT,
        closed_at TEXT
    );
    CREATE INDEX polls_room ON polls(room_id, position);
    CREATE TABLE options (
        id TEXT PRIMARY KEY,
        poll_id TEXT NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        label TEXT NOT NULL
    );
    CREATE INDEX options_poll ON options(poll_id, position);
    CREATE TABLE tallies (
        option_id TEXT PRIMARY KEY REFERENCES options(id) ON DELETE CASCADE,
        poll_id TEXT NOT NULL,
        votes INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE voters (
        id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    );
    -- One row per voter and poll: the unique key is the second layer against double votes.
    CREATE TABLE votes (
        poll_id TEXT NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
        voter_id TEXT NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        choice TEXT NOT NULL,
        accepted_ns INTEGER NOT NULL,
        counted_at TEXT NOT NULL,
        PRIMARY KEY (poll_id, voter_id)
    );
    -- Every event a worker has applied, with its outcome: the idempotency record and the receipt.
    CREATE TABLE processed_events (
        event_id TEXT PRIMARY KEY,
        poll_id TEXT NOT NULL,
        voter_id TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        choice TEXT NOT NULL,
        processed_at TEXT NOT NULL
    );
    -- Delivery attempts of queue messages that failed at least once.
    CREATE TABLE delivery_failures (
        message_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        poll_id TEXT NOT NULL,
        voter_id TEXT NOT NULL,
        choice TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        dead INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        event_type TEXT NOT NULL,
        envelope TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX outbox_unsent ON outbox(seq) WHERE sent_at IS NULL;
    """,
    2: """
    -- Durable notifications per voter: one per voter and event, whatever the re-deliveries.
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        voter_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        title TEXT NOT NULL,
        message TEXT NOT NULL,
        source_id TEXT NOT NULL,
        data TEXT,
        is_read INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        UNIQUE (event_id, voter_id)
    );
    CREATE INDEX notifications_voter ON notifications(voter_id, id);
    CREATE INDEX voters_room ON voters(room_id);
    """,
    3: """
    -- Poll kinds (see kinds.py): a rating's scale, a word cloud's blocked words (JSON list),
    -- a Q&A's moderation, a quiz's time limit and right answers, each quiz answer's points.
    ALTER TABLE polls ADD COLUMN scale INTEGER;
    ALTER TABLE polls ADD COLUMN blocked_words TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE polls ADD COLUMN moderated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE polls ADD COLUMN time_limit_s INTEGER;
    ALTER TABLE options ADD COLUMN correct INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE votes ADD COLUMN points INTEGER NOT NULL DEFAULT 0;
    -- Word-cloud counts: each answer's words, kept up to date as answers are counted.
    CREATE TABLE words (
        poll_id TEXT NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
        word TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (poll_id, word)
    ) WITHOUT ROWID;
    -- Q&A: a question's id is the event id of the vote that asked it.
    CREATE TABLE questions (
        id TEXT PRIMARY KEY,
        poll_id TEXT NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
        voter_id TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0,
        answered INTEGER NOT NULL DEFAULT 0,
        upvotes INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE INDEX questions_poll ON questions(poll_id);
    -- One upvote per voter and question: the unique key is the second layer, as for votes.
    CREATE TABLE upvotes (
        question_id TEXT NOT NULL REFERENCES questions(id) ON DELETE CASCADE,
        voter_id TEXT NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        PRIMARY KEY (question_id, voter_id)
    );
    CREATE INDEX votes_voter ON votes(voter_id);
    """,
    4: """
    -- The queue message a vote came in (ids that only grow, even when the wall clock goes
    -- back): a voter's changed vote replaces the one taken before it. NULL on older rows.
    ALTER TABLE votes ADD COLUMN queued_id TEXT;
    """,
    5: """
    -- The client address a voter joined from: the identity limits count it per room.
    ALTER TABLE voters ADD COLUMN address TEXT;
    CREATE INDEX voters_room_address ON voters(room_id, address);
    -- A room's passcode (NULL: joining needs only the code), and whether its screen shows it.
    ALTER TABLE rooms ADD COLUMN passcode TEXT;
    ALTER TABLE rooms ADD COLUMN show_passcode INTEGER NOT NULL DEFAULT 0;
    -- Host sessions ended by logging out, until they would have expired anyway.
    CREATE TABLE revoked_sessions (nonce TEXT PRIMARY KEY, expires INTEGER NOT NULL);
    """,
    6: """
    -- A venue of several boxes (replica.py). The clock stamps (events.py, `hlc`) of the latest
    -- change applied to each field of a room and of a question's moderation (a JSON object,
    -- see `last_writer_wins`), and to a poll: an older change from another box loses.
    ALTER TABLE rooms ADD COLUMN stamps TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE polls ADD COLUMN changed_hlc TEXT NOT NULL DEFAULT '';
    ALTER TABLE questions ADD COLUMN stamps TEXT NOT NULL DEFAULT '{}';
    -- The clock stamp of a poll's close: a vote stamped after it counts at no box. And each
    -- vote's own stamp, kept with its receipt (a vote replaced by one stamped after the close
    -- counts again when the close arrives).
    ALTER TABLE polls ADD COLUMN closed_hlc TEXT;
    ALTER TABLE processed_events ADD COLUMN hlc TEXT;
    ALTER TABLE processed_events ADD COLUMN taken_ns INTEGER;
    -- How far this box has applied each peer's stream (its sequence numbers), and how far it
    -- has published its own outbox to its NATS server.
    CREATE TABLE venue_peers (box TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE TABLE venue_published (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL);
    -- The events from other boxes applied here (each once, whichever peer relayed it).
    CREATE TABLE venue_applied (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
    -- The few events that notify, found without reading every vote's event.
    CREATE INDEX outbox_type ON outbox(event_type, seq);
    """,
    7: """
    -- Presenter-paced rooms: the host shows one poll at a time ('self': every open poll on
    -- every phone, as before), and which poll is shown now.
    ALTER TABLE rooms ADD COLUMN pace TEXT NOT NULL DEFAULT 'self';
    ALTER TABLE rooms ADD COLUMN shown_poll_id TEXT;
    -- A closed poll can be opened again: the clock stamp of its latest reopening, and of each
    -- close (a JSON list). A reopening voids the closes stamped before it, and `closed_hlc` is the
    -- earliest close after the latest reopening, the same at every box whatever the order.
    ALTER TABLE polls ADD COLUMN reopened_hlc TEXT;
    ALTER TABLE polls ADD COLUMN closes TEXT NOT NULL DEFAULT '[]';
    UPDATE polls SET closes = json_array(closed_hlc) WHERE closed_hlc IS NOT NULL;
    -- A room's look on the projector and the phones (look.py): 'auto' keeps each page's own.
    ALTER TABLE rooms ADD COLUMN theme TEXT NOT NULL DEFAULT 'auto';
    ALTER TABLE rooms ADD COLUMN accent TEXT NOT NULL DEFAULT '#4338ca';
    -- The room's language for its screen and for phones that chose none (NULL: each
    -- browser's own, i18n.py).
    ALTER TABLE rooms ADD COLUMN language TEXT;
    """,
    8: """
    -- The in-memory ledger keeps only the votes of polls that are not closed (ledger.py): at
    -- start it reads those polls' receipts by poll, as it does a reopened poll's (and a
    -- venue's close reads the votes stamped after it). Start-up also reads the newest queue
    -- id of the counted votes. An index for each, not a read of every vote.
    CREATE INDEX processed_events_poll ON processed_events(poll_id);
    CREATE INDEX votes_queued ON votes(queued_id);
    """,
    9: """
    -- The poll events whose notifications are all written (notifications.Notifier.fan_out):
    -- a restart soon after them does not write every voter's again. Kept a day.
    CREATE TABLE notified (
        event_id TEXT PRIMARY KEY,
        at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
}


def last_writer_wins(
    conn: sqlite3.Connection,
    table: str,
    row_id: str,
    fields: dict[str, object],
    stamp: str,
    marks: tuple[str, ...] = (),
) -> set[str] | None:
    """Set each field whose last change is older than `stamp` (per field: two boxes of a
    venue changing different fields both win); `marks` are changes with a stamp and no column
    (a room's poll order). Returns the names that won; None when the row does not exist."""
    rows = fetchall(conn, f"SELECT stamps FROM {table} WHERE id = ?", (row_id,))
    if not rows:
        return None
    stamps = json.loads(rows[0][0])
    won = {name for name in (*fields, *marks) if stamp > stamps.get(name, "")}
    if won:
        stamps.update(dict.fromkeys(won, stamp))
        newer = {name: fields[name] for name in won if name in fields}
        sets = "".join(f"{name} = :{name}, " for name in newer)
        conn.execute(
            f"UPDATE {table} SET {sets}stamps = :stamps WHERE id = :id",
            {**newer, "stamps": json.dumps(stamps, sort_keys=True), "id": row_id},
        )
    return won


class Database:
    """Writes: one plain sqlite3 connection, used on the event loop's thread, one short
    transaction at a time (BEGIN IMMEDIATE). Reads: an aiosqlite connection.

    Writes are synchronous on purpose. Each is a few statements on a local file and one WAL
    fsync at commit (synchronous=FULL), measured in tens to hundreds of microseconds; through
    aiosqlite every statement was a thread hop whose result waits for the GIL and then for
    its turn behind every HTTP callback, so under load a worker's batch took 20-30 ms and the
    workers fell behind. A write transaction never spans an await, so two of them can never
    interleave and no lock is needed. A worker's batch is the exception to the fsync at
    commit: it commits without one and waits for `sync()`, the fsync in a thread, so the loop
    does not wait on the disk for every batch.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    async def open(self) -> None:
        files.private_dir(self.path.parent)
        files.private_file(self.path)
        self._writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._writer.row_factory = sqlite3.Row
            self._writer.executescript(_PRAGMAS)
            # The writer runs on the event loop: its commits must not also copy the WAL into
            # the database (an automatic checkpoint, every 4 MB of WAL, held the loop 50-100
            # ms while a backlog drained). The housekeeping checkpoints in a thread instead.
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self._migrate(self._writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            await self._reader.executescript(_PRAGMAS)
        except BaseException:
            await self.close()  # an aiosqlite thread left open would keep the process alive
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        latest = max(MIGRATIONS)
        if version > latest:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this Opus ({latest})"
            )
        for number in sorted(n for n in MIGRATIONS if n > version):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("database migrated to version %d", number)

    async def close(self) -> None:
        # aiosqlite's thread is not a daemon: a connection left open keeps the process alive.
        if self._reader is not None:
            await self._reader.close()
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    @contextmanager
    def write(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. Never await inside it (see the class docstring).

        `synced=False`: the commit is not fsync'd on the loop (synchronous=NORMAL for it);
        nothing may rely on it surviving a power cut before `await sync()` returns."""
        assert self._writer is not None, "database is not open"
        conn = self._writer
        if not synced:  # the level applies to the connection's next commits
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (a full disk) may leave the transaction open, or SQLite may
            # already have rolled it back: either way the connection must be usable again.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            if not synced:
                conn.execute("PRAGMA synchronous = FULL")

    async def sync(self) -> None:
        """Make every commit so far durable, in a thread: the loop goes on meanwhile."""
        await asyncio.to_thread(sync_wal, self.path)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of a few small indexed queries, on the writer's connection: cheaper
        than a hop to the reader's thread. Never await inside it either."""
        assert self._writer is not None, "database is not open"
        conn = self._writer
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        assert self._reader is not None, "database is not open"
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


# synchronous=FULL: a commit is on disk (the WAL fsync'd) before it returns, so a room, poll or
# token is durable before its 201. A worker's batch commits with NORMAL and is made durable by
# `Database.sync()` (the fsync in a thread) before its queue messages are marked done. NORMAL
# alone lost such commits in power cuts (README, "What survives a power cut";
# tests/faults/test_powercut.py).
_PRAGMAS = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
PRAGMA temp_store = MEMORY;
"""


def sync_wal(path: Path) -> None:
    """What synchronous=FULL does inside a WAL commit, done afterwards from any thread: the
    -wal file's frames, up to the last commit, on disk (fdatasync). A WAL is never without its
    file while a connection is open; should it be, its pages are in the database file."""
    try:
        fd = os.open(f"{path}-wal", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def checkpoint(path: Path) -> None:
    """Copy a WAL file's pages into its database, from a connection of its own (call it in a
    thread). SQLite's automatic checkpoints are passive and give up while a reader holds an
    old snapshot, so a busy server's WAL can grow; this one, on a timer, catches up.

    (Measured: turning the automatic ones off, with this every 2 s or 30 s instead, made POST
    p99 two to ten times worse: a large WAL slows every read and commit.)"""
    conn = sqlite3.connect(path, timeout=1)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def fetchall(conn: sqlite3.Connection, sql: str, params: Params = ()) -> list[Row]:
    """A read inside a write transaction (sees the transaction's own changes)."""
    return list(conn.execute(sql, params).fetchall())


def placeholders(values: Iterable[Any]) -> str:
    return ",".join("?" for _ in values)


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full" (SQLITE_FULL): wait for space, do not give up."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@contextmanager
def open_read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a database file, for the operator's tools: it never
    creates, migrates or changes the file (a live server's WAL is read as it stands)."""
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def backup(source: Path, target: Path) -> None:
    """A consistent copy of a database that may be in use (SQLite's online backup API). One
    step: the copy is one snapshot, and in WAL mode the server goes on writing meanwhile. The
    copy is a self-contained file (no -wal beside it)."""
    src = sqlite3.connect(source.absolute().as_uri() + "?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def latest_version() -> int:
    return max(MIGRATIONS)
