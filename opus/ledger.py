"""Layer 1 against double votes: the in-memory record of every accepted vote.

Ingest writes to it when a vote is accepted; workers tell it when a vote is settled. It is
rebuilt from SQLite at start (after the queue has been drained), so it never needs a read on
the vote path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import msgspec

from opus import kinds
from opus.db import Database
from opus.kinds import Choice, Question, Upvote

QUEUED_SCHEMA = 1  # the version of a queued vote's layout


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """An accepted vote; on the queue, as MessagePack: `[schema, poll, voter, choice]`."""

    poll_id: str
    voter_id: str
    choice: Choice

    @property
    def key(self) -> tuple[str, str] | None:
        """What one voter may hold only once: their vote on a poll, or their upvote of a
        question; a Q&A question has no such key (ask as many as you like)."""
        match self.choice:
            case Question():
                return None
            case Upvote(question_id):
                return (self.poll_id, f"{self.voter_id}/{question_id}")
        return (self.poll_id, self.voter_id)

    def payload(self) -> bytes:
        """The queue message: the same vote always gives the same bytes (idempotent puts)."""
        return _encode((QUEUED_SCHEMA, self))


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple[int, Entry]).decode


def read_queued(data: bytes | str) -> Entry:
    """A vote as the queue holds it. Messages queued before votes were typed are the JSON
    `{"p": poll, "v": voter, "c": canonical choice}`: still read after an upgrade."""
    if isinstance(data, str):
        old = json.loads(data)
        return Entry(old["p"], old["v"], kinds.from_json(old["c"]))
    schema, entry = _decode(data)
    if schema > QUEUED_SCHEMA:
        raise ValueError(f"a queued vote of layout {schema}; this version reads {QUEUED_SCHEMA}")
    return entry


class Ledger:
    def __init__(self) -> None:
        self.by_event: dict[str, Entry] = {}
        # (poll_id, voter_id) -> the event id of the voter's latest accepted vote
        self.by_key: dict[tuple[str, str], str] = {}
        # accepted, not yet settled by a worker: their receipts say "queued"
        self.pending: set[str] = set()
        # (poll_id, voter_id) -> Q&A questions asked: one voter may ask only so many
        self.asked: Counter[tuple[str, str]] = Counter()
        self._waiters: dict[str, asyncio.Future[None]] = {}

    def accept(self, event_id: str, entry: Entry) -> str | None:
        """Record an accepted vote; returns the event it displaced (to undo with `forget`)."""
        key = entry.key
        self.by_event[event_id] = entry
        self.pending.add(event_id)
        if key is None:
            self.asked[(entry.poll_id, entry.voter_id)] += 1
            return None
        previous = self.by_key.get(key)
        self.by_key[key] = event_id
        return previous

    def learned(self, event_id: str, entry: Entry) -> None:
        """Record a vote another box of the venue took (already applied here): its receipt
        can be read at this box, and the voter's next vote here is checked against it."""
        if event_id in self.by_event:
            return
        self.by_event[event_id] = entry
        key = entry.key
        if key is None:
            self.asked[(entry.poll_id, entry.voter_id)] += 1
        else:
            self.by_key.setdefault(key, event_id)

    def forget(self, event_id: str, previous: str | None) -> None:
        """Undo `accept` for a vote whose durable write failed."""
        entry = self.by_event.pop(event_id, None)
        self.pending.discard(event_id)
        if entry is None:
            return
        key = entry.key
        if key is None:
            self.asked[(entry.poll_id, entry.voter_id)] -= 1
        elif self.by_key.get(key) == event_id:
            if previous is None:
                del self.by_key[key]
            else:
                self.by_key[key] = previous

    def settled(self, event_ids: list[str]) -> None:
        self.pending.difference_update(event_ids)
        if self._waiters:
            for event_id in event_ids:
                waiter = self._waiters.pop(event_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def wait_settled(self, event_id: str, limit_s: float) -> bool:
        """Wait until a worker has settled this vote (counted or rejected), at most `limit_s`
        seconds; returns whether it was."""
        if event_id not in self.pending:
            return True
        waiter = self._waiters.get(event_id)
        if waiter is None:
            waiter = self._waiters[event_id] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), limit_s)
        if not waiter.done():
            self._waiters.pop(event_id, None)
        return waiter.done()

    async def load(self, db: Database) -> None:
        for row in await db.fetchall(
            "SELECT event_id, poll_id, voter_id, choice FROM processed_events"
        ):
            entry = Entry(row["poll_id"], row["voter_id"], kinds.from_json(row["choice"]))
            self.by_event[row["event_id"]] = entry
            if entry.key is None:
                self.asked[(entry.poll_id, entry.voter_id)] += 1
        for row in await db.fetchall("SELECT poll_id, voter_id, event_id FROM votes"):
            self.by_key[(row["poll_id"], row["voter_id"])] = row["event_id"]
        for row in await db.fetchall(
            "SELECT q.poll_id, u.voter_id, u.question_id, u.event_id"
            " FROM upvotes u JOIN questions q ON q.id = u.question_id"
        ):
            self.by_key[(row["poll_id"], f"{row['voter_id']}/{row['question_id']}")] = row[
                "event_id"
            ]
        # Dead-lettered votes were acknowledged: they still hold the voter's place.
        for row in await db.fetchall(
            "SELECT event_id, poll_id, voter_id, choice FROM delivery_failures WHERE dead = 1"
        ):
            entry = Entry(row["poll_id"], row["voter_id"], kinds.from_json(row["choice"]))
            self.by_event[row["event_id"]] = entry
            if entry.key is not None:
                self.by_key.setdefault(entry.key, row["event_id"])
            self.pending.add(row["event_id"])
