"""Layer 1 against double votes: the in-memory record of the votes the vote path checks.

Ingest writes to it when a vote is accepted; workers tell it when a vote is settled. It keeps
the votes of polls that may still take one (and every vote not yet settled): a closed poll's
leave memory once settled, so a box that runs all semester holds what its open polls hold, not
every vote since it started. The rare checks on a closed poll (a retry of a vote, its receipt)
read SQLite, which has every vote; a reopened poll's votes are read back before it takes
another. At start it is rebuilt from SQLite (after the queue has been drained) from the polls
that are not closed, so an open poll's checks never need a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter

import msgspec

from opus import kinds
from opus.db import Database, Params, fetchall, placeholders
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


# What the ledger reads of the polls it keeps (the placeholder: which ones), by poll through
# the indexes on poll_id (`IN`, not a join: without statistics SQLite may plan a join as a
# scan of every vote).
_EVENTS = "SELECT event_id, poll_id, voter_id, choice FROM processed_events WHERE poll_id IN ({})"
_VOTES = "SELECT poll_id, voter_id, event_id, choice FROM votes WHERE poll_id IN ({})"
_UPVOTES = (
    "SELECT q.poll_id, u.voter_id, u.question_id, u.event_id FROM questions q"
    " JOIN upvotes u ON u.question_id = q.id WHERE q.poll_id IN ({})"
)
_OPEN = "SELECT id FROM polls WHERE status != 'closed'"


class Ledger:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.by_event: dict[str, Entry] = {}
        # (poll_id, voter_id) -> the event id of the voter's latest accepted vote
        self.by_key: dict[tuple[str, str], str] = {}
        # accepted, not yet settled by a worker: their receipts say "queued"
        self.pending: set[str] = set()
        # (poll_id, voter_id) -> Q&A questions asked: one voter may ask only so many
        self.asked: Counter[tuple[str, str]] = Counter()
        # poll id -> the ids of its votes in `by_event`: what to let go when it closes
        self._of_poll: dict[str, set[str]] = {}
        # closed (or deleted) polls: their votes are in SQLite, and here only until settled
        self._closed: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}

    def accept(self, event_id: str, entry: Entry) -> str | None:
        """Record an accepted vote; returns the event it displaced (to undo with `forget`)."""
        self._add(event_id, entry)
        self.pending.add(event_id)
        key = entry.key
        if key is None:
            return None
        previous = self.by_key.get(key)
        self.by_key[key] = event_id
        return previous

    def learned(self, event_id: str, entry: Entry) -> None:
        """Record a vote another box of the venue took (already applied here): its receipt
        can be read at this box, and the voter's next vote here is checked against it. A
        closed poll's stays in SQLite alone, as this box's own do once settled."""
        if entry.poll_id not in self._closed and self._add(event_id, entry):
            self._hold(event_id, entry)

    def forget(self, event_id: str, previous: str | None) -> None:
        """Undo `accept` for a vote whose durable write failed."""
        self.pending.discard(event_id)
        entry = self.by_event.get(event_id)
        if entry is None:
            return
        key = entry.key
        held = key is not None and self.by_key.get(key) == event_id
        self._drop(event_id)
        # The vote it displaced holds the key again, unless its poll closed meanwhile.
        if key is not None and held and previous is not None and previous in self.by_event:
            self.by_key[key] = previous

    def settled(self, event_ids: list[str]) -> None:
        self.pending.difference_update(event_ids)
        if self._closed:
            for event_id in event_ids:
                entry = self.by_event.get(event_id)
                if entry is not None and entry.poll_id in self._closed:
                    self._drop(event_id)  # a closed poll's last votes: SQLite answers for them
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

    def poll_changed(self, poll_id: str, status: str | None) -> None:
        """The catalog's news of a poll's status (None: deleted). A closed poll's votes leave
        memory, but for those not yet settled; a reopened poll's are read back from SQLite
        before it can take a vote (this runs before the catalog says it is open)."""
        if status in ("closed", None):
            if poll_id in self._closed:
                return
            self._closed.add(poll_id)
            for event_id in list(self._of_poll.get(poll_id, ())):
                if event_id not in self.pending:
                    self._drop(event_id)
        elif poll_id in self._closed:
            self._closed.discard(poll_id)
            with self._db.read() as conn:
                self._read(conn, "?", (poll_id,))

    def load(self) -> None:
        """Rebuild the ledger at start: the votes of the polls that are not closed (found by
        poll, through indexes: no read of every vote), and every dead-lettered vote."""
        with self._db.read() as conn:
            self._closed = {
                r[0] for r in fetchall(conn, "SELECT id FROM polls WHERE status = 'closed'")
            }
            self._read(conn, _OPEN, ())
            # Dead-lettered votes were acknowledged: they still hold the voter's place, in
            # closed polls too (they stay pending: no worker settles them).
            for row in fetchall(
                conn,
                "SELECT event_id, poll_id, voter_id, choice FROM delivery_failures WHERE dead = 1",
            ):
                entry = Entry(row["poll_id"], row["voter_id"], kinds.from_json(row["choice"]))
                self._add(row["event_id"], entry)
                self._hold(row["event_id"], entry)
                self.pending.add(row["event_id"])

    def recorded(self, event_ids: list[str]) -> dict[str, Entry]:
        """The votes SQLite has under these event ids (applied: counted or refused), whatever
        their polls: for the checks the ledger no longer answers, those of closed polls."""
        if not event_ids:
            return {}
        with self._db.read() as conn:
            rows = fetchall(
                conn,
                "SELECT event_id, poll_id, voter_id, choice FROM processed_events"
                f" WHERE event_id IN ({placeholders(event_ids)})",
                event_ids,
            )
        return {
            r["event_id"]: Entry(r["poll_id"], r["voter_id"], kinds.from_json(r["choice"]))
            for r in rows
        }

    def held(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The vote (event id) holding each key: from memory, and from SQLite for the keys of
        closed polls (a voter's counted vote, or upvote)."""
        found = {key: self.by_key[key] for key in keys if key in self.by_key}
        gone = [k for k in keys if k not in found and k[0] in self._closed]
        votes = [k for k in gone if "/" not in k[1]]
        upvotes = [(k[0], *k[1].split("/", 1)) for k in gone if "/" in k[1]]
        if not votes and not upvotes:
            return found
        with self._db.read() as conn:
            if votes:
                for r in fetchall(
                    conn,
                    f"{_pairs(votes)} SELECT poll_id, voter_id, event_id FROM k"
                    " JOIN votes ON votes.poll_id = k.a AND votes.voter_id = k.b",
                    [x for key in votes for x in key],
                ):
                    found[(r[0], r[1])] = r[2]
            if upvotes:
                polls = {(question, voter): poll for poll, voter, question in upvotes}
                for r in fetchall(
                    conn,
                    f"{_pairs(list(polls))} SELECT question_id, voter_id, event_id FROM k"
                    " JOIN upvotes ON upvotes.question_id = k.a AND upvotes.voter_id = k.b",
                    [x for pair in polls for x in pair],
                ):
                    found[(polls[(r[0], r[1])], f"{r[1]}/{r[0]}")] = r[2]
        return found

    def _add(self, event_id: str, entry: Entry) -> bool:
        """Keep a vote (not its key: each caller says who holds that); False when known."""
        if event_id in self.by_event:
            return False
        self.by_event[event_id] = entry
        self._of_poll.setdefault(entry.poll_id, set()).add(event_id)
        if entry.key is None:
            self.asked[(entry.poll_id, entry.voter_id)] += 1
        return True

    def _hold(self, event_id: str, entry: Entry) -> None:
        """The vote holds its key, unless another vote holds it already."""
        key = entry.key
        if key is not None:
            self.by_key.setdefault(key, event_id)

    def _drop(self, event_id: str) -> None:
        """Let a vote go, with its key when it holds one."""
        entry = self.by_event.pop(event_id)
        ids = self._of_poll[entry.poll_id]
        ids.discard(event_id)
        if not ids:
            del self._of_poll[entry.poll_id]
        key = entry.key
        if key is None:
            asker = (entry.poll_id, entry.voter_id)
            self.asked[asker] -= 1
            if self.asked[asker] <= 0:
                del self.asked[asker]
        elif self.by_key.get(key) == event_id:
            del self.by_key[key]

    def _read(self, conn: sqlite3.Connection, polls: str, params: Params) -> None:
        """Keep the votes of the polls `polls` lists, as SQLite has them; what is here already
        (votes not yet settled, newer than any counted one) stays as it is."""
        for row in fetchall(conn, _EVENTS.format(polls), params):
            entry = Entry(row["poll_id"], row["voter_id"], kinds.from_json(row["choice"]))
            self._add(row["event_id"], entry)
        for row in fetchall(conn, _VOTES.format(polls), params):
            # A counted vote has its receipt; in case one does not, the row says what it was.
            entry = Entry(row["poll_id"], row["voter_id"], kinds.from_json(row["choice"]))
            self._add(row["event_id"], entry)
            self._hold(row["event_id"], entry)
        for row in fetchall(conn, _UPVOTES.format(polls), params):
            entry = Entry(row["poll_id"], row["voter_id"], Upvote(row["question_id"]))
            self._add(row["event_id"], entry)
            self._hold(row["event_id"], entry)


def _pairs(pairs: list[tuple[str, str]]) -> str:
    # A join from the pairs, not `(a, b) IN (VALUES ...)`: SQLite plans that as a scan of the
    # whole table (as apply.py found).
    return f"WITH k(a, b) AS (VALUES {','.join('(?, ?)' for _ in pairs)})"
