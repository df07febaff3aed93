"""The durable vote queue: the only module that imports litequeue.

Two LiteQueue handles share one file. The *ingest* handle runs with synchronous=FULL and only
ever commits groups of votes, so a 202 means the vote survived a power cut. The *worker* handle
keeps litequeue's synchronous=NORMAL for claims and acknowledgements: losing one of those to a
power cut only re-delivers a vote, and re-delivery is harmless (processed event ids).

These methods block; callers run them in a thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from litequeue import IdempotencyConflict, LiteQueue, Message, MessageStatus

_BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Claim:
    message_id: str
    claim_id: int
    event_id: str
    data: str
    in_time_ns: int


class DuplicateKey(Exception):
    """An event id already in the queue with different data."""


class VoteQueue:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ingest = LiteQueue(path, timeout=_BUSY_TIMEOUT_S)
        self._ingest.conn.execute("PRAGMA synchronous = FULL")
        self._work = LiteQueue(path, timeout=_BUSY_TIMEOUT_S)
        # One group commit at a time; litequeue already serializes each handle's writes.
        self._ingest_lock = threading.Lock()

    def close(self) -> None:
        self._ingest.close()
        self._work.close()

    def put_many(self, items: list[tuple[str, str]]) -> list[Exception | None]:
        """Write (event_id, data) pairs in one synced transaction: the group commit.

        Returns, per item, None when it is durable (new or an identical replay) or the error
        that kept it out. An item that conflicts is dropped and the rest committed again,
        so one bad vote never costs the others theirs.
        """
        outcome: list[Exception | None] = [None] * len(items)
        pending = list(range(len(items)))
        with self._ingest_lock:
            while pending:
                bad: int | None = None
                try:
                    with self._ingest.transaction(mode="IMMEDIATE"):
                        for index in pending:
                            event_id, data = items[index]
                            try:
                                self._ingest.put(data, idempotency_key=event_id)
                            except IdempotencyConflict:
                                bad = index
                                raise
                    return outcome
                except IdempotencyConflict:
                    assert bad is not None
                    outcome[bad] = DuplicateKey(items[bad][0])
                    pending.remove(bad)
        return outcome

    def claim(self, limit: int) -> list[Claim]:
        """Claim up to `limit` ready messages in one transaction.

        litequeue's pop() claims one message per transaction (about 7k/s here); a batch claim
        is the same state change as pop() (LOCKED, lock_time, claim_id + 1) on the fixed
        `Queue` table it documents, done for many rows at once. Acknowledgements and retries
        go through litequeue's own calls, fenced by the claim id.
        """
        with self._work.transaction(mode="IMMEDIATE"):
            rows = self._work.conn.execute(
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
            Claim(r["message_id"], r["claim_id"], r["idempotency_key"] or "", r["data"],
                  r["in_time"])
            for r in rows
        ]
        claims.sort(key=lambda c: c.message_id)
        return claims

    def done(self, claims: list[Claim]) -> None:
        with self._work.transaction(mode="IMMEDIATE"):
            for c in claims:
                self._work.done(c.message_id, claim_id=c.claim_id)

    def retry(self, claim: Claim) -> bool:
        return bool(self._work.retry(claim.message_id, claim_id=claim.claim_id))

    def fail(self, claim: Claim) -> bool:
        return bool(self._work.mark_failed(claim.message_id, claim_id=claim.claim_id))

    def return_expired(self, seconds: float) -> int:
        """Give claims older than `seconds` back to the queue (0 at start: no worker lives)."""
        return int(self._work.retry_expired(seconds))

    def failed(self) -> list[Message]:
        return list(self._work.list_failed())

    def retry_failed(self, message_id: str | None = None) -> list[str]:
        """Put failed messages (all, or one) back to ready; returns the ids moved."""
        moved = []
        for m in self._work.list_failed():
            if message_id in (None, m.message_id) and self._work.retry(
                m.message_id, claim_id=m.claim_id
            ):
                moved.append(m.message_id)
        return moved

    def get(self, message_id: str) -> Message | None:
        return self._work.get(message_id)

    def ready_count(self) -> int:
        return int(self._work.ready_count())

    def stats(self) -> dict[str, int]:
        return {
            "ready": self._work.ready_count(),
            "claimed": self._work.locked_count(),
            "done": self._work.done_count(),
            "failed": self._work.failed_count(),
        }

    def prune(self) -> None:
        """Delete done messages (failed ones stay until an operator retries them)."""
        self._work.prune(include_failed=False)
