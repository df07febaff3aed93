"""The in-memory view of every poll that the vote path checks against (no read on the vote
path): loaded from SQLite at start, updated by rooms.py after each commit."""

from __future__ import annotations

from collections.abc import Callable
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
    """The in-memory view of every poll. `on_status` hears each change of a poll's status
    (None: the poll is gone) before the vote path sees it: the ledger keeps only the votes of
    polls that are not closed."""

    def __init__(self, on_status: Callable[[str, str | None], None] | None = None) -> None:
        self.polls: dict[str, PollView] = {}
        self._on_status = on_status

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
        self._status(row["id"], row["status"])
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

    def refresh(self, db: Database, poll_ids: list[str]) -> None:
        """Read these polls again (changed by another box of the venue); gone ones go."""
        read: dict[str, tuple[Row, list[str]] | None] = {}
        with db.read() as conn:
            for poll_id in poll_ids:
                rows = fetchall(
                    conn,
                    "SELECT id, room_id, kind, status, allow_change, hide_results, time_limit_s,"
                    " opened_at FROM polls WHERE id = ?",
                    (poll_id,),
                )
                options = fetchall(
                    conn, "SELECT id FROM options WHERE poll_id = ? ORDER BY position", (poll_id,)
                )
                read[poll_id] = (rows[0], [o[0] for o in options]) if rows else None
        # After the read: a status change may read the database again (the ledger's).
        for poll_id, found in read.items():
            if found is None:
                self.remove(poll_id)
            else:
                self.put(*found)

    def update(self, poll_id: str, **changes: Any) -> None:
        if "status" in changes:
            self._status(poll_id, changes["status"])
        self.polls[poll_id] = replace(self.polls[poll_id], **changes)

    def remove(self, poll_id: str) -> None:
        """A deleted poll (or one of a deleted room)."""
        if poll_id in self.polls:
            self._status(poll_id, None)
            del self.polls[poll_id]

    def _status(self, poll_id: str, status: str | None) -> None:
        known = self.polls.get(poll_id)
        if self._on_status is not None and status != (known.status if known else None):
            self._on_status(poll_id, status)
