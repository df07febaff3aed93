"""The in-memory view of every poll that the vote path checks against (no read on the vote
path): loaded from SQLite at start, updated by rooms.py after each commit."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from opus import events, kinds
from opus.db import Database, Row, fetchall


@dataclass(frozen=True, slots=True)
class PollView:
    """What the vote path needs to know about a poll, without a database read."""

    id: str
    room_id: str
    kind: str
    status: str
    options: tuple[str, ...]  # option ids in the poll's order (a rating's 1..N)
    option_ids: frozenset[str]  # the same, for the vote path's membership checks
    allow_change: bool
    hide_results: bool
    time_limit_s: int | None = None
    opened_at: float | None = None  # seconds since the epoch

    def past_deadline(self, now: float) -> bool:
        """A quiz with a time limit stops taking answers (after a short grace)."""
        if self.time_limit_s is None or self.opened_at is None:
            return False
        return now > self.opened_at + self.time_limit_s + kinds.QUIZ_GRACE_S

    @property
    def results_hidden(self) -> bool:
        """Results are shown to attendees and screens only when this is False."""
        return self.hide_results and self.status != "closed"


class Catalog:
    """The in-memory view of every poll."""

    def __init__(self) -> None:
        self.polls: dict[str, PollView] = {}

    async def load(self, db: Database) -> None:
        options: dict[str, list[str]] = {}
        for row in await db.fetchall("SELECT id, poll_id FROM options ORDER BY poll_id, position"):
            options.setdefault(row["poll_id"], []).append(row["id"])
        for row in await db.fetchall(
            "SELECT id, room_id, kind, status, allow_change, hide_results, time_limit_s,"
            " opened_at FROM polls"
        ):
            self.put(row, options.get(row["id"], []))

    def put(self, row: Row | dict[str, Any], options: list[str]) -> None:
        self.polls[row["id"]] = PollView(
            id=row["id"],
            room_id=row["room_id"],
            kind=row["kind"],
            status=row["status"],
            options=tuple(options),
            option_ids=frozenset(options),
            allow_change=bool(row["allow_change"]),
            hide_results=bool(row["hide_results"]),
            time_limit_s=row["time_limit_s"],
            opened_at=events.epoch(row["opened_at"]),
        )

    def refresh(self, conn: sqlite3.Connection, poll_ids: list[str]) -> None:
        """Read these polls again (changed by another box of the venue); gone ones go."""
        for poll_id in poll_ids:
            rows = fetchall(
                conn,
                "SELECT id, room_id, kind, status, allow_change, hide_results, time_limit_s,"
                " opened_at FROM polls WHERE id = ?",
                (poll_id,),
            )
            if not rows:
                self.polls.pop(poll_id, None)
                continue
            options = fetchall(
                conn, "SELECT id FROM options WHERE poll_id = ? ORDER BY position", (poll_id,)
            )
            self.put(rows[0], [o[0] for o in options])

    def update(self, poll_id: str, **changes: Any) -> None:
        self.polls[poll_id] = replace(self.polls[poll_id], **changes)
