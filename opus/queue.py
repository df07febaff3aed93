"""The durable vote queue: the only module that imports litequeue.

One LiteQueue handle, one connection. The group commit is synced: a 202 means the vote
survived a power cut. Its commit is made on the loop without an fsync (synchronous=NORMAL,
as every commit here), then `sync()` fdatasyncs the WAL in a thread before any vote of it is
answered: the loop does not wait on the disk for it. (NORMAL still syncs the WAL's header
on the loop, in the first commit after a checkpoint restarted the WAL: once a second at
most.) Claims and acknowledgements are never synced: losing one to a power cut only
re-delivers a vote, and re-delivery changes nothing (processed ids). That holds only because
a worker's commit to opus.db is synced before it marks the messages done (worker.py): a
"done" made durable by a later synced commit here, before the vote it stands for was durable
there, lost acknowledged votes in power cuts.

The SQLite calls are short and run on the event loop's thread, on purpose: measured here,
handing them to a thread cost more than doing them, because every return from SQLite to
Python in that thread waits for the GIL behind the busy event loop (a commit of 30 votes took
14-25 ms in a thread, 2 ms on the loop, fsync included). An fsync is one return, whatever the
batch: that one goes to a thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

from litequeue import LiteQueue, Message, MessageStatus

from opus import events, files
from opus.db import sync_wal

_BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Claim:
    message_id: str
    claim_id: int
    event_id: str
    data: bytes | str  # MessagePack (ledger.read_queued); JSON text if queued before it
    in_time_ns: int


class DuplicateKey(Exception):
    """An event id already in the queue with different data."""


class VoteQueue:
    def __init__(self, path: Path) -> None:
        files.private_dir(path.parent)
        files.private_file(path)
        self._path = path
        self._q = LiteQueue(path, timeout=_BUSY_TIMEOUT_S)
        # Its calls run on the event loop: no automatic checkpoints there (see db.py).
        self._q.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._q.conn.execute("PRAGMA synchronous = NORMAL")  # `sync()` is the group commit's
        # Message ids give the order in which votes were taken (claims follow it, and a
        # voter's changed vote replaces an earlier one by it): they must keep growing across
        # a restart even when the wall clock went back meanwhile. The database's counted
        # votes remember the ids of pruned messages (app.py).
        (newest,) = self._q.conn.execute('SELECT MAX(message_id) FROM "Queue"').fetchone()
        if newest:
            events.never_before(newest)

    def close(self) -> None:
        self._q.close()

    def put_many(self, items: list[tuple[str, bytes]]) -> list[Exception | None]:
        """Write (event_id, data) pairs in one transaction: the group commit (durable once
        `sync()` returns).

        Returns, per item, None when it is durable (new, or an identical replay) or
        DuplicateKey when the event id is already queued with other data (nothing is written
        for that one). The same rows as litequeue's put(data, idempotency_key=...), written
        with one look-up and one prepared insert for the whole batch.
        """
        rows = [(data, events.uuid7(), key) for key, data in items]
        return self._put_rows(items, rows, time.time_ns())

    async def sync(self) -> None:
        """Make every commit so far durable (the group commit's), in a thread."""
        await asyncio.to_thread(sync_wal, self._path)

    def _put_rows(
        self, items: list[tuple[str, bytes]], rows: list[tuple[bytes, str, str]], now: int
    ) -> list[Exception | None]:
        keys = json.dumps([key for key, _ in items])
        with self._q.transaction(mode="IMMEDIATE"):
            queued = dict(
                self._q.conn.execute(
                    'SELECT idempotency_key, data FROM "Queue"'
                    " WHERE idempotency_key IN (SELECT value FROM json_each(?))",
                    (keys,),
                ).fetchall()
            )
            self._q.conn.executemany(
                f"""
                INSERT OR IGNORE INTO "Queue"
                    (data, message_id, idempotency_key, status, in_time, lock_time, done_time)
                VALUES (?, ?, ?, {MessageStatus.READY.value}, {now}, NULL, NULL)
                """,
                # A conflicting key is already in the table: OR IGNORE leaves it out too.
                rows,
            )
        return [DuplicateKey(key) if queued.get(key, data) != data else None for key, data in items]

    def claim(self, limit: int) -> list[Claim]:
        """Claim up to `limit` ready messages in one transaction.

        litequeue's pop() claims one message per transaction (about 7k/s here); a batch claim
        is the same state change as pop() (LOCKED, lock_time, claim_id + 1) on the fixed
        `Queue` table it documents, done for many rows at once. Acknowledgements and retries
        go through litequeue's own calls, fenced by the claim id.
        """
        with self._q.transaction(mode="IMMEDIATE"):
            rows = self._q.conn.execute(
                f"""
                UPDATE "Queue" SET status = {MessageStatus.LOCKED.value},
                    lock_time = :now, claim_id = claim_id + 1
                WHERE rowid IN (
                    SELECT rowid FROM "Queue" WHERE status = {MessageStatus.READY.value}
                    ORDER BY message_id LIMIT :limit)
                RETURNING message_id, claim_id, idempotency_key, data, in_time
                """,
                {"now": time.time_ns(), "limit": limit},
            ).fetchall()
        claims = [
            Claim(
                r["message_id"], r["claim_id"], r["idempotency_key"] or "", r["data"], r["in_time"]
            )
            for r in rows
        ]
        claims.sort(key=lambda c: c.message_id)
        return claims

    def done(self, claims: list[Claim]) -> None:
        """Acknowledge a batch: litequeue's done(), fenced by each claim id, for all at once."""
        fences = json.dumps([[c.message_id, c.claim_id] for c in claims])
        with self._q.transaction(mode="IMMEDIATE"):
            self._q.conn.execute(
                f"""
                UPDATE "Queue" SET status = {MessageStatus.DONE.value}, done_time = :now
                WHERE status = {MessageStatus.LOCKED.value} AND (message_id, claim_id) IN (
                    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
                    FROM json_each(:fences))
                """,
                {"now": time.time_ns(), "fences": fences},
            )

    def retry(self, claim: Claim) -> bool:
        return bool(self._q.retry(claim.message_id, claim_id=claim.claim_id))

    def fail(self, claim: Claim) -> bool:
        return bool(self._q.mark_failed(claim.message_id, claim_id=claim.claim_id))

    def return_expired(self, seconds: float) -> int:
        """Give claims older than `seconds` back to the queue (0 at start: no worker lives).

        Claims stamped more than `seconds` in the future count as expired too: the wall
        clock went back since they were made. Without that, the claims a killed server held
        would wait, uncounted and unknown to the restarted one, until the clock caught up
        (litequeue's retry_expired compares with now only). Returning a claim a live worker
        still holds is safe: the claim id fences its acknowledgement, and applying a vote
        twice changes nothing (processed ids).
        """
        now = time.time_ns()
        margin = int(seconds * 1e9)
        with self._q.transaction(mode="IMMEDIATE"):
            cursor = self._q.conn.execute(
                f"""
                UPDATE "Queue" SET status = {MessageStatus.READY.value}, lock_time = NULL,
                    done_time = NULL
                WHERE status = {MessageStatus.LOCKED.value}
                    AND (:seconds <= 0 OR lock_time < :now - :margin
                         OR lock_time > :now + :margin)
                """,
                {"seconds": seconds, "now": now, "margin": margin},
            )
        return int(cursor.rowcount)

    def failed(self) -> list[Message]:
        return list(self._q.list_failed())

    def retry_failed(self, message_id: str | None = None) -> list[str]:
        """Put failed messages (all, or one) back to ready; returns the ids moved."""
        moved = []
        for m in self._q.list_failed():
            if message_id in (None, m.message_id) and self._q.retry(
                m.message_id, claim_id=m.claim_id
            ):
                moved.append(m.message_id)
        return moved

    def stats(self) -> dict[str, int]:
        return {
            "ready": self._q.ready_count(),
            "claimed": self._q.locked_count(),
            "done": self._q.done_count(),
            "failed": self._q.failed_count(),
        }

    def prune(self, limit: int = 5000, older_than_s: float = 0.0) -> int:
        """Delete up to `limit` done messages, applied more than `older_than_s` ago (failed
        ones stay until an operator retries them); returns how many. In chunks, so that no
        single delete stalls the loop."""
        cutoff = time.time_ns() - int(older_than_s * 1e9)
        with self._q.transaction(mode="IMMEDIATE"):
            cursor = self._q.conn.execute(
                f"""DELETE FROM "Queue" WHERE rowid IN (SELECT rowid FROM "Queue"
                WHERE status = {MessageStatus.DONE.value} AND done_time <= :cutoff
                LIMIT :limit)""",
                {"limit": limit, "cutoff": cutoff},
            )
        return int(cursor.rowcount)

    def failed_count(self) -> int:
        return int(self._q.failed_count())
