"""Durable notifications per voter. POLL.CREATED and POLL.OPENED tell everyone who joined the
room, POLL.CLOSED tells everyone who voted, with the final result. The one for a created poll
does not carry its question: a draft (a quiz prepared before class) must not reach attendees
before the host opens it. The fan-out runs in its own task, in batches of SQL, never in a
request handler; a notification exists once per voter and event."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable

from opus import answers, events, outbox
from opus.db import Database, Row, fetchall, placeholders
from opus.errors import NotFound
from opus.events import now_iso

log = logging.getLogger(__name__)

_BATCH = 1000
_NOTIFIED_KEPT_S = 86400  # how long a poll event is remembered as notified (a day)
# The events that notify voters (app.py subscribes `fan_out` to them).
NOTIFIED_EVENTS = (events.POLL_CREATED, events.POLL_OPENED, events.POLL_CLOSED)
_LIST_LIMIT = answers.INBOX_SIZE

Push = Callable[[str, answers.Notification], None]  # (voter_id, notification)
Online = Callable[[str], list[str]]  # room_id -> voter ids with a socket open


def as_json(row: Row) -> answers.Notification:
    body: answers.Notification = {
        "id": row["id"],
        "title": row["title"],
        "message": row["message"],
        "type": row["type"],
        "source_id": row["source_id"],
        "is_read": bool(row["is_read"]),
        "created_at": row["created_at"],
    }
    if row["data"]:
        body["data"] = json.loads(row["data"])
    return body


def _closed_message(results: answers.Results) -> str:
    total = results["total_votes"]
    if not total:
        return "The poll closed with no votes."
    kind = results.get("kind")
    if kind == "text":
        top = ", ".join(w["word"] for w in results.get("words", [])[:5])
        return f"{total} answers. Most said: {top}." if top else f"{total} answers."
    if kind == "qa":
        return f"{total} questions asked."
    parts = [f"{o['label']} {o['votes']} ({o['percent']:g}%)" for o in results["options"]]
    if kind == "rating" and results.get("average") is not None:
        return f"Average {results['average']:g} from {total} ratings."
    if kind == "quiz":
        right = [o["label"] for o in results["options"] if o.get("correct")]
        return f"Right answer: {', '.join(right)}. " + ", ".join(parts)
    return "Final result: " + ", ".join(parts)


def note_id(event_id: str, voter_id: str) -> int:
    """A notification's id, the same at every box of a venue (48 bits: a JavaScript number
    holds it exactly)."""
    digest = hashlib.sha256(f"{event_id}/{voter_id}".encode()).digest()
    return int.from_bytes(digest[:6]) or 1


def mark(conn: sqlite3.Connection, read: events.ReadData) -> int:
    """Mark one notification, or every one up to `read.before`, read; returns how many."""
    if read.id is not None:
        cursor = conn.execute(
            "UPDATE notifications SET is_read = 1 WHERE id = ? AND voter_id = ?",
            (read.id, read.voter_id),
        )
    else:
        cursor = conn.execute(
            "UPDATE notifications SET is_read = 1 WHERE voter_id = ? AND is_read = 0"
            " AND created_at <= ?",
            (read.voter_id, read.before),
        )
    return max(cursor.rowcount, 0)


class Notifier:
    def __init__(
        self,
        db: Database,
        push: Push,
        online: Online,
        source: str = "",
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._push = push
        self._online = online
        self._source = source
        self._on_commit = on_commit

    async def fan_out(self, event: events.Event, only: list[str] | None = None) -> int:
        """Write the event's notification for every recipient (or for those of `only`, voter
        ids); returns how many were new."""
        if not isinstance(event, events.PollCreated | events.PollOpened | events.PollClosed):
            return 0
        if only is None and await self._db.fetchone(
            "SELECT 1 FROM notified WHERE event_id = ?", (event.event_id,)
        ):
            return 0  # told before a restart, or delivered twice
        poll_id, room_id = event.data.poll_id, event.data.room_id
        row = await self._db.fetchone("SELECT question FROM polls WHERE id = ?", (poll_id,))
        question = row["question"] if row else "A poll"
        # The room's voters when it happened: one who joins later (or before a replay at start,
        # app.py) is not told of a poll prepared or opened before they came.
        recipients = (
            "SELECT rowid, id FROM voters WHERE room_id = ? AND created_at <= ? AND rowid > ?"
        )
        scope: tuple[str, ...] = (room_id, event.timestamp)
        extra = None
        if isinstance(event, events.PollCreated):
            kind, title, message = "poll_created", "New poll", "The host has prepared a poll."
        elif isinstance(event, events.PollOpened):
            kind, title, message = "poll_opened", "Poll open", question
        else:
            final = event.data.results
            if final is None:  # every close carries its results (rooms.set_status)
                return 0
            kind, title = "poll_closed", f"Closed: {question}"
            message, extra = _closed_message(final), json.dumps(final)
            # Who voted; in a Q&A, who asked (each once: the insert ignores repeats).
            table = "questions" if final["kind"] == "qa" else "votes"
            recipients = f"SELECT rowid, voter_id FROM {table} WHERE poll_id = ? AND rowid > ?"
            scope = (poll_id,)
        if only is not None:
            who = "id" if not isinstance(event, events.PollClosed) else "voter_id"
            recipients += f" AND {who} IN (SELECT value FROM json_each(?))"
            scope = (*scope, json.dumps(only))
        created = 0
        after = -1
        while True:
            args = (*scope[:-1], after, scope[-1]) if only is not None else (*scope, after)
            batch = await self._db.fetchall(f"{recipients} ORDER BY rowid LIMIT {_BATCH}", args)
            if not batch:
                break
            after = batch[-1][0]
            with self._db.write() as conn:
                # The same id and time at every box of a venue: one inbox wherever the phone is.
                cursor = conn.executemany(
                    "INSERT OR IGNORE INTO notifications (id, voter_id, event_id, type, title,"
                    " message, source_id, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            note_id(event.event_id, r[1]),
                            r[1],
                            event.event_id,
                            kind,
                            title,
                            message,
                            poll_id,
                            extra,
                            event.timestamp,
                        )
                        for r in batch
                    ],
                )
                created += max(cursor.rowcount, 0)
        if only is None:
            with self._db.write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO notified (event_id, at) VALUES (?, ?)",
                    (event.event_id, now_iso()),
                )
                conn.execute(
                    "DELETE FROM notified WHERE at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)",
                    (f"-{_NOTIFIED_KEPT_S} seconds",),
                )
        if created:
            await self._push_online(event.event_id, room_id)
        return created

    async def catch_up(self, joined: dict[str, list[str]], voted: dict[str, list[str]]) -> int:
        """In a venue, a voter (or a vote) may arrive from another box after the event that
        notifies them was fanned out here: the recent events of those rooms (or polls) are
        fanned out again to those voters only (existing notifications are skipped). Every box
        then holds the same inbox. `joined`: room id -> voters new here; `voted`: closed poll
        id -> voters whose votes are new here."""
        created = 0
        for event in await self._recent():
            if isinstance(event, events.PollCreated | events.PollOpened):
                who = joined.get(event.data.room_id)
            elif isinstance(event, events.PollClosed):
                who = voted.get(event.data.poll_id)
            else:
                who = None
            if who:
                created += await self.fan_out(event, only=who)
        return created

    async def _recent(self) -> list[events.Event]:
        rows = await self._db.fetchall(
            "SELECT envelope FROM outbox WHERE event_type IN (?, ?, ?) AND sent_at IS NOT NULL"
            " ORDER BY seq",
            NOTIFIED_EVENTS,
        )
        return [events.decode(r["envelope"]) for r in rows]

    async def _push_online(self, event_id: str, room_id: str) -> None:
        online = self._online(room_id)
        for start in range(0, len(online), _BATCH):
            chunk = online[start : start + _BATCH]
            rows = await self._db.fetchall(
                "SELECT * FROM notifications WHERE event_id = ?"
                f" AND voter_id IN ({placeholders(chunk)})",
                [event_id, *chunk],
            )
            for row in rows:
                self._push(row["voter_id"], as_json(row))

    # -- the voter's inbox ----------------------------------------------------------------

    async def inbox(self, voter_id: str) -> answers.Inbox:
        rows = await self._db.fetchall(
            "SELECT * FROM notifications WHERE voter_id = ? ORDER BY created_at DESC, id DESC"
            " LIMIT ?",
            (voter_id, _LIST_LIMIT),
        )
        unread = await self._db.fetchone(
            "SELECT COUNT(*) FROM notifications WHERE voter_id = ? AND is_read = 0", (voter_id,)
        )
        return {"notifications": [as_json(r) for r in rows], "unread": unread[0] if unread else 0}

    async def mark_read(self, voter_id: str, notification_id: int | None) -> int:
        """Mark one notification (or all, with None) as read; returns how many changed."""
        read = events.ReadData(voter_id, notification_id, "" if notification_id else now_iso())
        with self._db.write() as conn:
            if notification_id is not None and not fetchall(
                conn,
                "SELECT 1 FROM notifications WHERE id = ? AND voter_id = ?",
                (notification_id, voter_id),
            ):
                raise NotFound(
                    "You have no notification with this id.", code="notification_not_found"
                )
            changed = mark(conn, read)
            # The venue's other boxes mark it read too.
            outbox.add(
                conn,
                [events.make(events.NOTIFICATIONS_READ, read, source=self._source, actor=voter_id)],
            )
        if self._on_commit is not None:
            self._on_commit()
        return changed if notification_id is None else 1
