"""Rooms, polls, voters and results: the host's operations and the attendee's reads.

Every state change commits together with its outbox event. The in-memory view of polls that
the vote path checks against (`Catalog`) is loaded at start and updated after each commit.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from opus import events, outbox
from opus.auth import Voter
from opus.db import Database, Row, fetchall, placeholders
from opus.errors import BadRequest, Conflict, NotFound, Unprocessable

# Letters and digits that cannot be confused when read aloud or off a projector
# (no 0/O, 1/I/L, 5/S, 2/Z, 8/B, U/V): 8 characters give about 10^11 codes.
CODE_ALPHABET = "34679ACDEFGHJKMNPQRTWXY"
CODE_LENGTH = 8

KINDS = ("single", "multiple")
MAX_TITLE = 200
MAX_QUESTION = 500
MAX_LABEL = 200
MIN_OPTIONS, MAX_OPTIONS = 2, 30


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str:
    """Codes are shown as ABCD-EFGH; people type them in any case, with or without the dash."""
    return "".join(ch for ch in raw.upper() if ch.isalnum())


def display_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


@dataclass(frozen=True, slots=True)
class PollView:
    """What the vote path needs to know about a poll, without a database read."""

    id: str
    room_id: str
    kind: str
    status: str
    option_ids: frozenset[str]
    allow_change: bool
    hide_results: bool

    @property
    def results_hidden(self) -> bool:
        """Results are shown to attendees and screens only when this is False."""
        return self.hide_results and self.status != "closed"


class Catalog:
    """The in-memory view of every poll."""

    def __init__(self) -> None:
        self.polls: dict[str, PollView] = {}

    async def load(self, db: Database) -> None:
        options: dict[str, set[str]] = {}
        for row in await db.fetchall("SELECT id, poll_id FROM options"):
            options.setdefault(row["poll_id"], set()).add(row["id"])
        for row in await db.fetchall(
            "SELECT id, room_id, kind, status, allow_change, hide_results FROM polls"
        ):
            self.put(row, options.get(row["id"], set()))

    def put(self, row: Row | dict[str, Any], option_ids: set[str] | frozenset[str]) -> None:
        self.polls[row["id"]] = PollView(
            id=row["id"],
            room_id=row["room_id"],
            kind=row["kind"],
            status=row["status"],
            option_ids=frozenset(option_ids),
            allow_change=bool(row["allow_change"]),
            hide_results=bool(row["hide_results"]),
        )

    def set_status(self, poll_id: str, status: str) -> None:
        self.polls[poll_id] = replace(self.polls[poll_id], status=status)


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None:
        if not required:
            return ""
        raise Unprocessable(f"'{name}' is required.", code="invalid_field")
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string.", code="invalid_field")
    value = value.strip()
    if not value:
        raise Unprocessable(f"'{name}' must not be empty.", code="invalid_field")
    if len(value) > limit:
        raise Unprocessable(f"'{name}' is longer than {limit} characters.", code="too_long")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false.", code="invalid_field")
    return value


class Rooms:
    def __init__(
        self, db: Database, catalog: Catalog, node_id: str, on_commit: Callable[[], None]
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.node_id = node_id
        self._on_commit = on_commit  # wakes the outbox relay

    def _event(self, kind: str, data: dict[str, Any], actor: str) -> events.Envelope:
        return events.envelope(kind, data, source=self.node_id, actor=actor)

    # -- host ----------------------------------------------------------------------------

    async def create_room(self, body: dict[str, Any], actor: str = "host") -> dict[str, Any]:
        title = _text(body, "title", MAX_TITLE)
        room = {"id": events.uuid7(), "title": title, "created_at": events.now_iso()}
        with self.db.write() as conn:
            for _ in range(10):
                code = new_code()
                taken = fetchall(conn, "SELECT 1 FROM rooms WHERE code = ?", (code,))
                if not taken:
                    break
            room["code"] = code
            conn.execute(
                "INSERT INTO rooms (id, code, title, created_at)"
                " VALUES (:id, :code, :title, :created_at)",
                room,
            )
            outbox.add(conn, [self._event(events.ROOM_CREATED, dict(room), actor)])
        self._on_commit()
        return await self.room(room["id"], include_drafts=True)

    async def create_poll(
        self, room_id: str, body: dict[str, Any], actor: str = "host"
    ) -> dict[str, Any]:
        question = _text(body, "question", MAX_QUESTION)
        kind = body.get("kind", "single")
        if not isinstance(kind, str):
            raise BadRequest("'kind' must be a string.", code="invalid_field")
        if kind not in KINDS:
            raise Unprocessable(
                f"'kind' must be one of: {', '.join(KINDS)}.", code="invalid_kind"
            )
        labels = body.get("options")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise BadRequest("'options' must be a list of labels.", code="invalid_field")
        labels = [label.strip() for label in labels]
        if not MIN_OPTIONS <= len(labels) <= MAX_OPTIONS:
            raise Unprocessable(
                f"A poll has {MIN_OPTIONS} to {MAX_OPTIONS} options.", code="option_count"
            )
        if any(not label or len(label) > MAX_LABEL for label in labels):
            raise Unprocessable(
                f"Every option needs a label of 1 to {MAX_LABEL} characters.", code="invalid_field"
            )
        if len(set(labels)) != len(labels):
            raise Unprocessable("Two options have the same label.", code="duplicate_option")
        allow_change = _flag(body, "allow_change")
        hide_results = _flag(body, "hide_results")
        poll_id = events.uuid7()
        options = [{"id": events.uuid7(), "label": label} for label in labels]
        with self.db.write() as conn:
            room = fetchall(conn, "SELECT id FROM rooms WHERE id = ?", (room_id,))
            if not room:
                raise NotFound("No room has this id.", code="room_not_found")
            (position,) = (
                fetchall(
                    conn, "SELECT COUNT(*) FROM polls WHERE room_id = ?", (room_id,)
                )
            )[0]
            poll = {
                "id": poll_id,
                "room_id": room_id,
                "position": position,
                "question": question,
                "kind": kind,
                "status": "draft",
                "allow_change": int(allow_change),
                "hide_results": int(hide_results),
                "created_at": events.now_iso(),
            }
            conn.execute(
                "INSERT INTO polls (id, room_id, position, question, kind, status, allow_change,"
                " hide_results, created_at) VALUES (:id, :room_id, :position, :question, :kind,"
                " :status, :allow_change, :hide_results, :created_at)",
                poll,
            )
            conn.executemany(
                "INSERT INTO options (id, poll_id, position, label) VALUES (?, ?, ?, ?)",
                [(o["id"], poll_id, i, o["label"]) for i, o in enumerate(options)],
            )
            conn.executemany(
                "INSERT INTO tallies (option_id, poll_id, votes) VALUES (?, ?, 0)",
                [(o["id"], poll_id) for o in options],
            )
            data = {**poll, "options": options}
            outbox.add(conn, [self._event(events.POLL_CREATED, data, actor)])
        self.catalog.put(poll, {o["id"] for o in options})
        self._on_commit()
        return await self.poll(poll_id)

    async def set_status(self, poll_id: str, status: str, actor: str = "host") -> dict[str, Any]:
        """Open or close a poll. Opening an open poll (or closing a closed one) changes nothing."""
        allowed_from = {"open": ("draft",), "closed": ("open",)}[status]
        stamp = {"open": "opened_at", "closed": "closed_at"}[status]
        kind = {"open": events.POLL_OPENED, "closed": events.POLL_CLOSED}[status]
        with self.db.write() as conn:
            rows = fetchall(conn, "SELECT * FROM polls WHERE id = ?", (poll_id,))
            if not rows:
                raise NotFound("No poll has this id.", code="poll_not_found")
            current = rows[0]["status"]
            if current != status:
                if current not in allowed_from:
                    raise Conflict(
                        f"A {current} poll cannot be {'opened' if status == 'open' else 'closed'}.",
                        code="invalid_transition",
                    )
                now = events.now_iso()
                conn.execute(
                    f"UPDATE polls SET status = ?, {stamp} = ? WHERE id = ?",
                    (status, now, poll_id),
                )
                data: dict[str, Any] = {
                    "poll_id": poll_id,
                    "room_id": rows[0]["room_id"],
                    "status": status,
                }
                if status == "closed":
                    data["results"] = self._results(conn, poll_id)
                outbox.add(conn, [self._event(kind, data, actor)])
        self.catalog.set_status(poll_id, status)
        self._on_commit()
        return await self.poll(poll_id)

    # -- reads ---------------------------------------------------------------------------

    async def room(self, room_id: str, *, include_drafts: bool) -> dict[str, Any]:
        row = await self.db.fetchone("SELECT * FROM rooms WHERE id = ?", (room_id,))
        if row is None:
            raise NotFound("No room has this id.", code="room_not_found")
        polls = await self.db.fetchall(
            "SELECT id FROM polls WHERE room_id = ? ORDER BY position", (room_id,)
        )
        shown = [await self.poll(p["id"]) for p in polls]
        if not include_drafts:
            shown = [p for p in shown if p["status"] != "draft"]
        return {
            "id": row["id"],
            "code": row["code"],
            "code_display": display_code(row["code"]),
            "title": row["title"],
            "created_at": row["created_at"],
            "polls": shown,
        }

    async def room_by_code(self, code: str) -> Row:
        row = await self.db.fetchone(
            "SELECT * FROM rooms WHERE code = ?", (normalize_code(code),)
        )
        if row is None:
            raise NotFound("No room has this code. Check the code on the screen.",
                           code="room_not_found")
        return row

    async def poll(self, poll_id: str) -> dict[str, Any]:
        row = await self.db.fetchone("SELECT * FROM polls WHERE id = ?", (poll_id,))
        if row is None:
            raise NotFound("No poll has this id.", code="poll_not_found")
        options = await self.db.fetchall(
            "SELECT id, label FROM options WHERE poll_id = ? ORDER BY position", (poll_id,)
        )
        return {
            "id": row["id"],
            "room_id": row["room_id"],
            "question": row["question"],
            "kind": row["kind"],
            "status": row["status"],
            "allow_change": bool(row["allow_change"]),
            "hide_results": bool(row["hide_results"]),
            "options": [{"id": o["id"], "label": o["label"]} for o in options],
            "total_votes": row["total_votes"],
            "created_at": row["created_at"],
            "opened_at": row["opened_at"],
            "closed_at": row["closed_at"],
        }

    async def results(self, poll_id: str) -> dict[str, Any]:
        row = await self.db.fetchone(_POLL_TOTALS, (poll_id,))
        if row is None:
            raise NotFound("No poll has this id.", code="poll_not_found")
        return _results_body(row, await self.db.fetchall(_OPTION_TALLIES, (poll_id,)))

    def _results(self, conn: sqlite3.Connection, poll_id: str) -> dict[str, Any]:
        """The same, inside a write transaction (the final results of a closing poll)."""
        row = fetchall(conn, _POLL_TOTALS, (poll_id,))[0]
        return _results_body(row, fetchall(conn, _OPTION_TALLIES, (poll_id,)))

    async def counted_votes(self, poll_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT event_id, voter_id, choice, counted_at FROM votes WHERE poll_id = ?"
            " ORDER BY accepted_ns",
            (poll_id,),
        )
        return [
            {
                "event_id": r["event_id"],
                "voter_id": r["voter_id"],
                "option_ids": json.loads(r["choice"]),
                "counted_at": r["counted_at"],
            }
            for r in rows
        ]

    # -- attendees -----------------------------------------------------------------------

    async def join(self, code: str, known: Voter | None = None) -> Voter:
        """A voter for the room; someone who already joined it (their token or cookie) stays
        the same voter, so joining again never gives a second vote."""
        room = await self.room_by_code(code)
        if known is not None and known.room_id == room["id"]:
            return known
        voter = Voter(events.uuid7(), room["id"])
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO voters (id, room_id, created_at) VALUES (?, ?, ?)",
                (voter.voter_id, voter.room_id, events.now_iso()),
            )
        return voter

    async def receipts(self, event_ids: list[str]) -> list[Row]:
        return await self.db.fetchall(
            "SELECT event_id, voter_id, status, reason FROM processed_events"
            f" WHERE event_id IN ({placeholders(event_ids)})",
            event_ids,
        )


_POLL_TOTALS = "SELECT id, status, total_votes FROM polls WHERE id = ?"
_OPTION_TALLIES = (
    "SELECT o.id, o.label, t.votes FROM options o JOIN tallies t ON t.option_id = o.id"
    " WHERE o.poll_id = ? ORDER BY o.position"
)


def _results_body(poll: Row, options: list[Row]) -> dict[str, Any]:
    total = poll["total_votes"]
    return {
        "poll_id": poll["id"],
        "status": poll["status"],
        "total_votes": total,
        "options": [
            {
                "id": o["id"],
                "label": o["label"],
                "votes": o["votes"],
                "percent": round(100 * o["votes"] / total, 1) if total else 0.0,
            }
            for o in options
        ],
    }
