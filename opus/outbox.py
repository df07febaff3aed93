"""The transactional outbox: events are written with the state change they describe, then a
relay publishes them to the hub and marks them sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterable

from opus import events as ev
from opus.db import Database, is_disk_full
from opus.events import NOTIFICATIONS_READ, POLL_VOTE_CAST, VOTER_JOINED, Event, now_iso
from opus.hub import Hub
from opus.metrics import Metrics

log = logging.getLogger(__name__)

_BATCH = 1000
_ROUTINE = frozenset({POLL_VOTE_CAST, VOTER_JOINED, NOTIFICATIONS_READ})
_KEEP_SENT_S = 3600


def add(conn: sqlite3.Connection, events: Iterable[Event], *, sent: bool = False) -> None:
    """Write events in the caller's transaction (so they commit with the state change).
    `sent`: the caller tells this box's views itself (votes): the rows are only the log."""
    now = now_iso()  # one transaction, one time: a worker's batch writes hundreds
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (event_id, event_type, envelope, created_at, sent_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [(e.event_id, e.type, ev.encode(e), now, now if sent else None) for e in events],
    )


def wire(envelope: bytes | str) -> bytes:
    """An outbox row's event as it travels between boxes (MessagePack; JSON rows, written
    before the upgrade, re-encoded)."""
    if isinstance(envelope, str):
        return ev.encode(ev.decode(envelope))
    return envelope


async def log_page(db: Database, after: int, limit: int) -> list[tuple[int, bytes]]:
    """This box's log after `after`, in order: every event it committed or learned."""
    rows = await db.fetchall(
        "SELECT seq, envelope FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    )
    return [(int(r[0]), wire(r[1])) for r in rows]


class Relay:
    def __init__(self, db: Database, hub: Hub, metrics: Metrics, *, keep_log: bool = False) -> None:
        self._db = db
        # In a venue the outbox is the box's log, kept whole: a peer that missed events its
        # stream no longer has is caught up from it.
        self._keep_log = keep_log
        self._hub = hub
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._stopping = False
        # Published, perhaps not yet marked sent (the mark failed: a full disk): not again.
        self._published_seq = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            try:
                while await self.relay_once():
                    pass
            except Exception as exc:
                if is_disk_full(exc):  # waits for space, without a traceback a tick
                    log.error("outbox relay: the disk is full; retrying")
                    await asyncio.sleep(5.0)
                else:
                    log.exception("outbox relay failed; retrying")
                    await asyncio.sleep(0.5)
            if self._stopping:
                return

    async def stop(self) -> None:
        """Relay what is left, then end run()."""
        self._stopping = True
        self._wake.set()

    async def relay_once(self) -> int:
        rows = await self._db.fetchall(
            "SELECT seq, envelope FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
            (_BATCH,),
        )
        if not rows:
            return 0
        votes_at_debug = log.isEnabledFor(logging.DEBUG)
        for row in rows:
            if row["seq"] <= self._published_seq:
                continue
            event = ev.decode(row["envelope"])
            published = self._hub.publish(event)
            self._published_seq = row["seq"]
            # One line per event; votes, joins and read marks (thousands a minute in a hall)
            # only at debug level.
            routine = event.type in _ROUTINE
            if published and (votes_at_debug or not routine):
                log.log(
                    logging.DEBUG if routine else logging.INFO,
                    "event %s %s actor=%s data=%s",
                    event.type,
                    event.event_id,
                    event.actor,
                    ev.as_json(event.data).decode(),
                )
        # The single writer commits rows in seq order, so these are all unsent rows up to it.
        with self._db.write() as conn:
            conn.execute(
                "UPDATE outbox SET sent_at = ? WHERE seq <= ? AND sent_at IS NULL",
                (now_iso(), rows[-1]["seq"]),
            )
        self._metrics.outbox_published.inc(len(rows))
        return len(rows)

    async def recently_sent(self, types: Iterable[str], seconds: float) -> list[Event]:
        """Events of these types written in the last `seconds` and already handed to the hub,
        oldest first."""
        wanted = list(types)
        rows = await self._db.fetchall(
            "SELECT envelope FROM outbox WHERE sent_at IS NOT NULL"
            f" AND event_type IN ({','.join('?' for _ in wanted)})"
            " AND created_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) ORDER BY seq",
            (*wanted, f"-{seconds} seconds"),
        )
        return [ev.decode(r["envelope"]) for r in rows]

    def prune(self, limit: int = 5000) -> int:
        """Forget up to `limit` events sent more than an hour ago (the database keeps the
        state itself); returns how many. A venue's box keeps them all (its log)."""
        if self._keep_log:
            return 0
        with self._db.write() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
                " WHERE sent_at IS NOT NULL AND created_at < strftime('%Y-%m-%dT%H:%M:%fZ',"
                " 'now', ?)"
                # A box that served in a venue: an event stays until its stream has it too.
                " AND seq <= COALESCE((SELECT seq FROM venue_published), 9223372036854775807)"
                " LIMIT ?)",
                (f"-{_KEEP_SENT_S} seconds", limit),
            )
        return int(cursor.rowcount)
