"""Rooms, polls, voters and results: the host's operations and the attendee's reads.

Every state change commits together with its outbox event, then updates the in-memory view
of polls that the vote path checks against (catalog.py).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from opus import answers, bodies, events, i18n, kinds, look, outbox, replica, results
from opus.auth import Voter
from opus.bodies import MAX_PASSCODE, MAX_QUESTION, MAX_TITLE, MIN_PASSCODE
from opus.catalog import Catalog
from opus.codes import display_code, new_code, normalize_code
from opus.db import Database, Row, fetchall, last_writer_wins, placeholders
from opus.errors import Conflict, Forbidden, NotFound, Unprocessable
from opus.identity import IdentityLimits
from opus.kinds import KINDS

MODERATION_PAGE = 200  # questions the host's moderation list loads at once
PACES = ("presenter", "self")
# A quiz shown in a presenter-paced room starts this long after it is shown: phones and the
# screen count down to it, so nobody's time runs out before they see the question.
COUNT_IN_S = 3.0
# A room's settings when its body does not name them.
_ROOM_DEFAULTS: dict[str, Any] = {
    "passcode": None,
    "show_passcode": 0,
    "pace": "self",
    "theme": look.DEFAULT_THEME,
    "accent": look.DEFAULT_ACCENT,
    "language": None,
}


def _trimmed(value: str, name: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise Unprocessable(f"'{name}' must not be empty.", code="invalid_field")
    if len(value) > limit:
        raise Unprocessable(f"'{name}' is longer than {limit} characters.", code="too_long")
    return value


def _room_access(body: bodies.CreateRoom | bodies.RenameRoom) -> dict[str, Any]:
    """The passcode fields sent in a room's body: `passcode` (4 to 32 characters, or null
    or "" for none) and `show_passcode` (the screen shows it)."""
    changes: dict[str, Any] = {}
    if body.passcode is not msgspec.UNSET:
        value = (body.passcode or "").strip()
        if value and not MIN_PASSCODE <= len(value) <= MAX_PASSCODE:
            raise Unprocessable(
                f"A passcode has {MIN_PASSCODE} to {MAX_PASSCODE} characters.", code="invalid_field"
            )
        changes["passcode"] = value or None
    if body.show_passcode is not msgspec.UNSET:
        changes["show_passcode"] = int(body.show_passcode)
    if body.pace is not msgspec.UNSET:
        if body.pace not in PACES:
            raise Unprocessable("'pace' is 'presenter' or 'self'.", code="invalid_field")
        changes["pace"] = body.pace
    return changes


def _room_look(body: bodies.CreateRoom | bodies.RenameRoom) -> dict[str, Any]:
    """The look fields sent in a room's body: `theme` and `accent` (look.py), and its
    `language` (i18n.py)."""
    changes: dict[str, Any] = {}
    if body.theme is not msgspec.UNSET:
        changes["theme"] = look.check_theme(body.theme)
    if body.accent is not msgspec.UNSET:
        changes["accent"] = look.check_accent(body.accent)
    if body.language is not msgspec.UNSET:
        if body.language is not None and body.language not in i18n.LANGUAGES:
            raise Unprocessable(
                f"'language' is null or one of: {', '.join(i18n.LANGUAGES)}.", code="invalid_field"
            )
        changes["language"] = body.language
    return changes


def check_passcode(room: Row | dict[str, Any], given: str | None) -> None:
    """Joining a room that has a passcode needs it (403 passcode_required / wrong_passcode)."""
    expected = room["passcode"]
    if not expected:
        return
    if not given or not given.strip():
        raise Forbidden(
            "This room needs its passcode: the host shows it or tells it.", code="passcode_required"
        )
    if not secrets.compare_digest(given.strip().encode(errors="replace"), expected.encode()):
        raise Forbidden("That is not this room's passcode.", code="wrong_passcode")


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise Unprocessable(f"'kind' must be one of: {', '.join(KINDS)}.", code="invalid_kind")
    return kind


def _spec(kind: str, body: bodies.CreatePoll) -> kinds.Spec:
    return kinds.spec(
        kind,
        options=bodies.sent(body.options),
        correct=bodies.sent(body.correct),
        scale=body.scale,
        time_limit_s=body.time_limit_s,
        blocked=body.blocked_words,
        moderated=body.moderated,
    )


# Fields that shape a poll: editable only while it is a draft (the others, at any time).
_DRAFT_FIELDS = ("question", "kind", "options", "correct", "scale", "time_limit_s")


def poll_data(conn: sqlite3.Connection, poll_id: str) -> events.PollData:
    """A poll's row and options as its events carry them (the venue's other boxes write the
    same row from it)."""
    row = fetchall(conn, "SELECT * FROM polls WHERE id = ?", (poll_id,))[0]
    options = fetchall(
        conn,
        "SELECT id, label, correct FROM options WHERE poll_id = ? ORDER BY position",
        (poll_id,),
    )
    return events.PollData(
        id=row["id"],
        room_id=row["room_id"],
        position=row["position"],
        question=row["question"],
        kind=row["kind"],
        status=row["status"],
        allow_change=row["allow_change"],
        hide_results=row["hide_results"],
        scale=row["scale"],
        blocked_words=row["blocked_words"],
        moderated=row["moderated"],
        time_limit_s=row["time_limit_s"],
        opened_at=row["opened_at"],
        created_at=row["created_at"],
        options=[events.OptionData(o["id"], o["label"], bool(o["correct"])) for o in options],
    )


def _option(row: Row, *, reveal: bool) -> answers.Option:
    option: answers.Option = {"id": row["id"], "label": row["label"]}
    if reveal:
        option["correct"] = bool(row["correct"])
    return option


def _poll_body(row: Row, options: list[Row], *, for_host: bool, shown: int = 0) -> answers.Poll:
    """`shown`: a Q&A's visible questions, its total (what its audience sees, results.py)."""
    reveal = for_host or row["status"] == "closed"
    body: answers.Poll = {
        "id": row["id"],
        "room_id": row["room_id"],
        "position": row["position"],
        "question": row["question"],
        "kind": row["kind"],
        "status": row["status"],
        "allow_change": bool(row["allow_change"]),
        "hide_results": bool(row["hide_results"]),
        "options": [_option(o, reveal=row["kind"] == "quiz" and reveal) for o in options],
        "total_votes": shown if row["kind"] == "qa" else row["total_votes"],
        "scale": row["scale"],
        "blocked_words": json.loads(row["blocked_words"]),
        "moderated": bool(row["moderated"]),
        "time_limit_s": row["time_limit_s"],
        "deadline": None,
        "created_at": row["created_at"],
        "opened_at": row["opened_at"],
        "closed_at": row["closed_at"],
    }
    opened = events.epoch(row["opened_at"])
    if row["kind"] == "quiz" and row["time_limit_s"] and opened and row["status"] == "open":
        deadline = datetime.fromtimestamp(opened + row["time_limit_s"], UTC)
        body["deadline"] = deadline.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return body


class Rooms:
    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        node_id: str,
        on_commit: Callable[[], None],
        identities: IdentityLimits | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.node_id = node_id
        self._on_commit = on_commit  # wakes the outbox relay
        self.identities = identities  # None: no limits (the operator's tools)

    def _event(self, kind: str, data: dict[str, Any], actor: str) -> events.Event:
        return events.make(kind, data, source=self.node_id, actor=actor)

    # -- rooms ---------------------------------------------------------------------------

    async def create_room(self, body: bodies.CreateRoom, actor: str = "host") -> answers.Room:
        title = _trimmed(body.title, "title", MAX_TITLE)
        access = _room_access(body) | _room_look(body)
        with self.db.write() as conn:
            room = self._insert_room(conn, title, actor, access)
        self._on_commit()
        return await self.room(room["id"], include_drafts=True)

    def _insert_room(
        self, conn: sqlite3.Connection, title: str, actor: str, access: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        room = {"id": events.uuid7(), "title": title, "created_at": events.now_iso()}
        for _ in range(10):
            code = new_code()
            if not fetchall(conn, "SELECT 1 FROM rooms WHERE code = ?", (code,)):
                break
        room["code"] = code
        conn.execute(
            "INSERT INTO rooms (id, code, title, created_at, passcode, show_passcode, pace,"
            " theme, accent, language) VALUES (:id, :code, :title, :created_at, :passcode,"
            " :show_passcode, :pace, :theme, :accent, :language)",
            {**_ROOM_DEFAULTS, **room, **(access or {})},
        )
        shown = {
            **{name: (access or {}).get(name, value) for name, value in _ROOM_DEFAULTS.items()},
            "show_passcode": bool((access or {}).get("show_passcode", 0)),
        }
        event = self._event(events.ROOM_CREATED, {**room, **shown}, actor)
        outbox.add(conn, [event])
        return room

    async def list_rooms(self) -> list[answers.RoomSummary]:
        rows = await self.db.fetchall(
            "SELECT r.*, (SELECT COUNT(*) FROM polls p WHERE p.room_id = r.id) AS poll_count"
            " FROM rooms r ORDER BY r.created_at DESC, r.id DESC"
        )
        return [
            {
                "id": r["id"],
                "code": r["code"],
                "code_display": display_code(r["code"]),
                "title": r["title"],
                "created_at": r["created_at"],
                "poll_count": r["poll_count"],
            }
            for r in rows
        ]

    async def update_room(
        self, room_id: str, body: bodies.RenameRoom, actor: str = "host"
    ) -> answers.Room:
        """Change what the body names: the title, the passcode, whether the screen shows it,
        the look."""
        access = _room_access(body) | _room_look(body)
        changes = dict(access)
        if body.title is not msgspec.UNSET:
            changes["title"] = _trimmed(body.title, "title", MAX_TITLE)
        elif not access:
            raise Unprocessable("'title' is required.", code="invalid_field")
        data = {"room_id": room_id, **changes}
        if "show_passcode" in data:
            data["show_passcode"] = bool(data["show_passcode"])
        event = self._event(events.ROOM_UPDATED, data, actor)
        with self.db.write() as conn:
            if last_writer_wins(conn, "rooms", room_id, changes, event.hlc) is None:
                raise NotFound("No room has this id.", code="room_not_found")
            outbox.add(conn, [event])
        self._on_commit()
        return await self.room(room_id, include_drafts=True)

    async def duplicate_room(
        self, room_id: str, body: bodies.DuplicateRoom, actor: str = "host"
    ) -> answers.Room:
        """A new room with a new code and a draft copy of every poll: a template for the next
        session. Votes are not copied."""
        source = await self.room(room_id, include_drafts=True)
        title = (
            _trimmed(body.title, "title", MAX_TITLE)
            if body.title is not msgspec.UNSET
            else f"{source['title']} (copy)"[:MAX_TITLE]
        )
        created: list[tuple[dict[str, Any], list[str]]] = []
        access = {
            "passcode": source.get("passcode"),
            "show_passcode": int(bool(source.get("show_passcode"))),
            "pace": source["pace"],
            "theme": source["theme"],
            "accent": source["accent"],
            "language": source["language"],
        }
        with self.db.write() as conn:
            room = self._insert_room(conn, title, actor, access)
            for position, poll in enumerate(source["polls"]):
                created.append(self._copy_poll(conn, room["id"], position, poll, actor))
        for row, option_ids in created:
            self.catalog.put(row, option_ids)
        self._on_commit()
        return await self.room(room["id"], include_drafts=True)

    def _copy_poll(
        self, conn: sqlite3.Connection, room_id: str, position: int, poll: answers.Poll, actor: str
    ) -> tuple[dict[str, Any], list[str]]:
        """A draft with the poll's question, options and settings; no votes."""
        spec = kinds.Spec(
            labels=[o["label"] for o in poll["options"]],
            correct=[i for i, o in enumerate(poll["options"]) if o.get("correct")],
            scale=poll["scale"],
            blocked_words=poll["blocked_words"],
            moderated=poll["moderated"],
            time_limit_s=poll["time_limit_s"],
        )
        return self._insert_poll(
            conn,
            room_id,
            position,
            poll["question"],
            poll["kind"],
            spec,
            allow_change=poll["allow_change"],
            hide_results=poll["hide_results"],
            actor=actor,
        )

    async def delete_room(self, room_id: str, actor: str = "host") -> None:
        """The room, its polls, votes and questions; receipts and notifications stay."""
        with self.db.write() as conn:
            polls = [
                r[0] for r in fetchall(conn, "SELECT id FROM polls WHERE room_id = ?", (room_id,))
            ]
            cursor = conn.execute("DELETE FROM rooms WHERE id = ?", (room_id,))
            if cursor.rowcount == 0:
                raise NotFound("No room has this id.", code="room_not_found")
            outbox.add(conn, [self._event(events.ROOM_DELETED, {"room_id": room_id}, actor)])
        for poll_id in polls:
            self.catalog.remove(poll_id)
        if self.identities is not None:
            self.identities.forget_room(room_id)
        self._on_commit()

    # -- polls ---------------------------------------------------------------------------

    def _insert_poll(
        self,
        conn: sqlite3.Connection,
        room_id: str,
        position: int,
        question: str,
        kind: str,
        spec: kinds.Spec,
        *,
        allow_change: bool,
        hide_results: bool,
        actor: str,
        poll_id: str | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        poll: dict[str, Any] = {
            "id": poll_id or events.uuid7(),
            "room_id": room_id,
            "position": position,
            "question": question,
            "kind": kind,
            "status": "draft",
            "allow_change": int(allow_change),
            "hide_results": int(hide_results),
            "scale": spec.scale,
            "blocked_words": json.dumps(spec.blocked_words),
            "moderated": int(spec.moderated),
            "time_limit_s": spec.time_limit_s,
            "opened_at": None,
            "created_at": events.now_iso(),
        }
        conn.execute(
            "INSERT INTO polls (id, room_id, position, question, kind, status, allow_change,"
            " hide_results, scale, blocked_words, moderated, time_limit_s, created_at)"
            " VALUES (:id, :room_id, :position, :question, :kind, :status, :allow_change,"
            " :hide_results, :scale, :blocked_words, :moderated, :time_limit_s, :created_at)",
            poll,
        )
        options = self._insert_options(conn, poll["id"], spec)
        event = self._event(events.POLL_CREATED, {**poll, "options": options}, actor)
        conn.execute("UPDATE polls SET changed_hlc = ? WHERE id = ?", (event.hlc, poll["id"]))
        outbox.add(conn, [event])
        return poll, [o["id"] for o in options]

    @staticmethod
    def _insert_options(
        conn: sqlite3.Connection, poll_id: str, spec: kinds.Spec
    ) -> list[dict[str, Any]]:
        options = [
            {"id": events.uuid7(), "label": label, "correct": i in spec.correct}
            for i, label in enumerate(spec.labels)
        ]
        conn.executemany(
            "INSERT INTO options (id, poll_id, position, label, correct) VALUES (?, ?, ?, ?, ?)",
            [
                (o["id"], poll_id, i, o["label"], int(i in spec.correct))
                for i, o in enumerate(options)
            ],
        )
        conn.executemany(
            "INSERT INTO tallies (option_id, poll_id, votes) VALUES (?, ?, 0)",
            [(o["id"], poll_id) for o in options],
        )
        return options

    async def create_poll(
        self, room_id: str, body: bodies.CreatePoll, actor: str = "host"
    ) -> answers.Poll:
        question = _trimmed(body.question, "question", MAX_QUESTION)
        kind = _kind(body.kind)
        spec = _spec(kind, body)
        allow_change, hide_results = body.allow_change, body.hide_results
        with self.db.write() as conn:
            if not fetchall(conn, "SELECT id FROM rooms WHERE id = ?", (room_id,)):
                raise NotFound("No room has this id.", code="room_not_found")
            (position,) = fetchall(
                conn,
                "SELECT COALESCE(MAX(position) + 1, 0) FROM polls WHERE room_id = ?",
                (room_id,),
            )[0]
            poll, option_ids = self._insert_poll(
                conn,
                room_id,
                position,
                question,
                kind,
                spec,
                allow_change=allow_change,
                hide_results=hide_results,
                actor=actor,
            )
        self.catalog.put(poll, option_ids)
        self._on_commit()
        return await self.poll(poll["id"], for_host=True)

    async def duplicate_poll(self, poll_id: str, actor: str = "host") -> answers.Poll:
        """A draft copy of a poll (its question, options and settings; no votes), placed
        right after it."""
        poll = await self.poll(poll_id, for_host=True)
        room_id = poll["room_id"]
        with self.db.write() as conn:
            (position,) = fetchall(
                conn,
                "SELECT COALESCE(MAX(position) + 1, 0) FROM polls WHERE room_id = ?",
                (room_id,),
            )[0]
            copy, option_ids = self._copy_poll(conn, room_id, position, poll, actor)
        self.catalog.put(copy, option_ids)
        self._on_commit()
        order = [p["id"] for p in (await self.room(room_id, include_drafts=True))["polls"]]
        order.remove(copy["id"])
        order.insert(order.index(poll_id) + 1, copy["id"])
        await self.reorder_polls(room_id, order, actor)
        return await self.poll(copy["id"], for_host=True)

    async def update_poll(
        self, poll_id: str, body: bodies.UpdatePoll, actor: str = "host"
    ) -> answers.Poll:
        """Change a poll: its shape while it is a draft, its display rules at any time."""
        sent = body.given()
        current = await self.poll(poll_id, for_host=True)
        reshape = any(name in sent for name in _DRAFT_FIELDS)
        # New options (and new option ids) only when the options themselves change.
        new_options = any(name in sent for name in ("kind", "options", "correct", "scale"))
        if reshape and current["status"] != "draft":
            raise Conflict(
                "Only a draft poll can change its question, kind or options.", code="poll_not_draft"
            )
        merged = bodies.CreatePoll(
            question=current["question"],
            kind=current["kind"],
            options=[o["label"] for o in current["options"]],
            correct=[i for i, o in enumerate(current["options"]) if o.get("correct")],
            scale=current["scale"] or 5,
            time_limit_s=current["time_limit_s"],
            allow_change=current["allow_change"],
            hide_results=current["hide_results"],
            blocked_words=current["blocked_words"],
            moderated=current["moderated"],
        )
        merged = msgspec.structs.replace(merged, **sent)
        question = _trimmed(merged.question, "question", MAX_QUESTION)
        kind = _kind(merged.kind)
        if kind != "quiz" and "correct" not in sent:
            merged = msgspec.structs.replace(merged, correct=[])
        spec = _spec(kind, merged)
        allow_change, hide_results = merged.allow_change, merged.hide_results
        options: list[str] | None = None
        with self.db.write() as conn:
            conn.execute(
                "UPDATE polls SET question = ?, kind = ?, allow_change = ?, hide_results = ?,"
                " scale = ?, blocked_words = ?, moderated = ?, time_limit_s = ? WHERE id = ?",
                (
                    question,
                    kind,
                    int(allow_change),
                    int(hide_results),
                    spec.scale,
                    json.dumps(spec.blocked_words),
                    int(spec.moderated),
                    spec.time_limit_s,
                    poll_id,
                ),
            )
            if new_options:
                conn.execute("DELETE FROM options WHERE poll_id = ?", (poll_id,))
                options = [o["id"] for o in self._insert_options(conn, poll_id, spec)]
            event = events.make(
                events.POLL_UPDATED,
                events.PollChange(
                    poll_id=poll_id,
                    room_id=current["room_id"],
                    changed=sorted(sent),
                    poll=poll_data(conn, poll_id),
                ),
                source=self.node_id,
                actor=actor,
            )
            conn.execute("UPDATE polls SET changed_hlc = ? WHERE id = ?", (event.hlc, poll_id))
            outbox.add(conn, [event])
        changes: dict[str, Any] = {
            "kind": kind,
            "allow_change": allow_change,
            "hide_results": hide_results,
            "time_limit_s": spec.time_limit_s,
        }
        if options is not None:
            changes["options"], changes["option_ids"] = tuple(options), frozenset(options)
        self.catalog.update(poll_id, **changes)
        self._on_commit()
        return await self.poll(poll_id, for_host=True)

    async def delete_poll(self, poll_id: str, actor: str = "host") -> None:
        with self.db.write() as conn:
            rows = fetchall(conn, "SELECT room_id FROM polls WHERE id = ?", (poll_id,))
            if not rows:
                raise NotFound("No poll has this id.", code="poll_not_found")
            conn.execute("DELETE FROM polls WHERE id = ?", (poll_id,))
            outbox.add(
                conn,
                [
                    self._event(
                        events.POLL_DELETED,
                        {"poll_id": poll_id, "room_id": rows[0]["room_id"]},
                        actor,
                    )
                ],
            )
        self.catalog.remove(poll_id)
        self._on_commit()

    async def reorder_polls(
        self, room_id: str, poll_ids: list[str], actor: str = "host"
    ) -> answers.Room:
        with self.db.write() as conn:
            if not fetchall(conn, "SELECT id FROM rooms WHERE id = ?", (room_id,)):
                raise NotFound("No room has this id.", code="room_not_found")
            current = {
                r[0] for r in fetchall(conn, "SELECT id FROM polls WHERE room_id = ?", (room_id,))
            }
            if set(poll_ids) != current or len(poll_ids) != len(current):
                raise Unprocessable(
                    "List every poll of the room exactly once.", code="invalid_order"
                )
            conn.executemany(
                "UPDATE polls SET position = ? WHERE id = ?", list(enumerate(poll_ids))
            )
            event = self._event(events.ROOM_UPDATED, {"room_id": room_id, "order": poll_ids}, actor)
            last_writer_wins(conn, "rooms", room_id, {}, event.hlc, marks=("order",))
            outbox.add(conn, [event])
        self._on_commit()
        return await self.room(room_id, include_drafts=True)

    async def set_status(
        self, poll_id: str, status: str, actor: str = "host", *, event_id: str | None = None
    ) -> answers.Poll:
        """Open or close a poll. Opening an open poll (or closing a closed one) changes nothing.
        `event_id`: the event's id when every box must make the same one (quizclock.py)."""
        allowed_from = {"open": ("draft",), "closed": ("open",)}[status]
        stamp = {"open": "opened_at", "closed": "closed_at"}[status]
        kind = {"open": events.POLL_OPENED, "closed": events.POLL_CLOSED}[status]
        now = events.now_iso()
        with self.db.write() as conn:
            rows = fetchall(
                conn,
                "SELECT p.*, r.pace, r.shown_poll_id FROM polls p JOIN rooms r"
                " ON r.id = p.room_id WHERE p.id = ?",
                (poll_id,),
            )
            if not rows:
                raise NotFound("No poll has this id.", code="poll_not_found")
            presenter = rows[0]["pace"] == "presenter"
            if status == "open" and presenter and rows[0]["kind"] == "quiz":
                if rows[0]["time_limit_s"]:
                    now = events.iso_after(COUNT_IN_S)
            current = rows[0]["status"]
            if current != status and current not in allowed_from:
                raise Conflict(
                    f"A {current} poll cannot be {'opened' if status == 'open' else 'closed'}.",
                    code="invalid_transition",
                )
            if current != status:
                conn.execute(
                    f"UPDATE polls SET status = ?, {stamp} = ? WHERE id = ?", (status, now, poll_id)
                )
                data: dict[str, Any] = {
                    "poll_id": poll_id,
                    "room_id": rows[0]["room_id"],
                    "status": status,
                    "at": now,
                }
                stamp = events.uuid7()
                if status == "closed":
                    # Votes from boxes whose clocks run ahead may be stamped after the close:
                    # they count nowhere, so not in the final results either.
                    replica.close_at(conn, poll_id, stamp, self.node_id)
                    data["results"] = results.poll_results(conn, poll_id)
                event = events.make(
                    kind, data, source=self.node_id, actor=actor, hlc=stamp, event_id=event_id
                )
                outbox.add(conn, [event])
        if current != status:
            opened = {"opened_at": events.epoch(now)} if status == "open" else {}
            self.catalog.update(poll_id, status=status, **opened)
            self._on_commit()
            if status == "closed" and presenter and rows[0]["shown_poll_id"] != poll_id:
                # Closing a poll shows it: its results are what the room looks at next.
                await self._show(rows[0]["room_id"], poll_id, actor)
        return await self.poll(poll_id, for_host=True)

    async def reopen(self, poll_id: str, actor: str = "host") -> answers.Poll:
        """Open a closed poll again: votes as before it closed, its rules unchanged; a timed
        quiz gets its whole time again. In a venue, the closes stamped before the reopening
        are void at every box (see replica.reopen_at)."""
        now, stamp = events.now_iso(), events.uuid7()
        with self.db.write() as conn:
            rows = fetchall(
                conn,
                "SELECT p.*, r.pace FROM polls p JOIN rooms r ON r.id = p.room_id WHERE p.id = ?",
                (poll_id,),
            )
            if not rows:
                raise NotFound("No poll has this id.", code="poll_not_found")
            if rows[0]["status"] != "closed":
                raise Conflict(
                    f"A {rows[0]['status']} poll cannot be reopened; only a closed one.",
                    code="invalid_transition",
                )
            replica.reopen_at(conn, poll_id, stamp, self.node_id, now)
            data = {
                "poll_id": poll_id,
                "room_id": rows[0]["room_id"],
                "status": "open",
                "at": now,
                "reopened": True,
            }
            event = events.make(
                events.POLL_OPENED, data, source=self.node_id, actor=actor, hlc=stamp
            )
            outbox.add(conn, [event])
        self.catalog.update(poll_id, status="open", opened_at=events.epoch(now))
        self._on_commit()
        if rows[0]["pace"] == "presenter":
            await self._show(rows[0]["room_id"], poll_id, actor)
        return await self.poll(poll_id, for_host=True)

    # -- presenter mode ------------------------------------------------------------------

    async def show(self, poll_id: str, actor: str = "host") -> answers.Room:
        """Show this poll on the screen and on every phone, opening it if it is a draft."""
        poll = await self.poll(poll_id)
        if poll["status"] == "draft":
            await self.set_status(poll_id, "open", actor)
        await self._show(poll["room_id"], poll_id, actor)
        return await self.room(poll["room_id"], include_drafts=True)

    async def step(self, room_id: str, by: int, actor: str = "host") -> answers.Room:
        """Show the next poll (`by` = 1) or the previous one (-1) in the room's order."""
        room = await self.room(room_id, include_drafts=True)
        order = [p["id"] for p in room["polls"]]
        shown = room["shown_poll_id"]
        at = order.index(shown) if shown in order else (-1 if by > 0 else len(order))
        to = at + by
        if not 0 <= to < len(order):
            where = "after" if by > 0 else "before"
            raise Conflict(
                f"There is no poll {where} the one shown.",
                code="no_next_poll" if by > 0 else "no_previous_poll",
            )
        return await self.show(order[to], actor)

    async def _show(self, room_id: str, poll_id: str, actor: str) -> None:
        event = self._event(
            events.ROOM_UPDATED, {"room_id": room_id, "shown_poll_id": poll_id}, actor
        )
        with self.db.write() as conn:
            fields: dict[str, object] = {"shown_poll_id": poll_id}
            if last_writer_wins(conn, "rooms", room_id, fields, event.hlc) is None:
                raise NotFound("No room has this id.", code="room_not_found")
            outbox.add(conn, [event])
        self._on_commit()

    async def moderate(
        self, question_id: str, body: bodies.Moderate, actor: str = "host"
    ) -> answers.Question:
        """Approve or hide a Q&A question, pin it, mark it answered."""
        changes: dict[str, Any] = {}
        if body.status is not msgspec.UNSET:
            if body.status not in ("visible", "hidden"):
                raise Unprocessable("'status' is 'visible' or 'hidden'.", code="invalid_field")
            changes["status"] = body.status
        for name in ("pinned", "answered"):
            value = getattr(body, name)
            if value is not msgspec.UNSET:
                changes[name] = int(value)
        if not changes:
            raise Unprocessable(
                "Nothing to change: send status, pinned or answered.", code="invalid_field"
            )
        with self.db.write() as conn:
            rows = fetchall(
                conn,
                "SELECT q.poll_id, p.room_id FROM questions q JOIN polls p ON p.id = q.poll_id"
                " WHERE q.id = ?",
                (question_id,),
            )
            if not rows:
                raise NotFound("No question has this id.", code="question_not_found")
            event = self._event(
                events.QUESTION_UPDATED,
                {
                    "question_id": question_id,
                    "poll_id": rows[0]["poll_id"],
                    "room_id": rows[0]["room_id"],
                    **changes,
                },
                actor,
            )
            last_writer_wins(conn, "questions", question_id, changes, event.hlc)
            outbox.add(conn, [event])
            (question,) = [
                q
                for q in results.questions(conn, rows[0]["poll_id"], for_host=True)
                if q["id"] == question_id
            ]
        self._on_commit()
        return question

    # -- reads ---------------------------------------------------------------------------

    async def room(self, room_id: str, *, include_drafts: bool) -> answers.Room:
        row = await self.db.fetchone("SELECT * FROM rooms WHERE id = ?", (room_id,))
        if row is None:
            raise NotFound("No room has this id.", code="room_not_found")
        polls = await self.db.fetchall(
            "SELECT * FROM polls WHERE room_id = ? ORDER BY position", (room_id,)
        )
        options: dict[str, list[Row]] = {}
        for o in await self.db.fetchall(
            "SELECT o.* FROM options o JOIN polls p ON p.id = o.poll_id WHERE p.room_id = ?"
            " ORDER BY o.poll_id, o.position",
            (room_id,),
        ):
            options.setdefault(o["poll_id"], []).append(o)
        asked = {
            r["poll_id"]: r["n"]
            for r in await self.db.fetchall(
                "SELECT q.poll_id, COUNT(*) AS n FROM questions q JOIN polls p ON p.id = q.poll_id"
                " WHERE p.room_id = ? AND q.status = 'visible' GROUP BY q.poll_id",
                (room_id,),
            )
        }
        shown = [
            _poll_body(
                p, options.get(p["id"], []), for_host=include_drafts, shown=asked.get(p["id"], 0)
            )
            for p in polls
            if include_drafts or p["status"] != "draft"
        ]
        room: answers.Room = {
            "id": row["id"],
            "code": row["code"],
            "code_display": display_code(row["code"]),
            "title": row["title"],
            "created_at": row["created_at"],
            "passcode_required": bool(row["passcode"]),
            "pace": row["pace"],
            "shown_poll_id": row["shown_poll_id"],
            "language": row["language"],
            "theme": row["theme"],
            "accent": row["accent"],
            "polls": shown,
        }
        # The host sees the passcode; everyone sees it when the screen shows it.
        if include_drafts or row["show_passcode"]:
            room["passcode"] = row["passcode"]
            room["show_passcode"] = bool(row["show_passcode"])
        return room

    async def room_by_code(self, code: str) -> Row:
        row = await self.db.fetchone("SELECT * FROM rooms WHERE code = ?", (normalize_code(code),))
        if row is None:
            raise NotFound(
                "No room has this code. Check the code on the screen.", code="room_not_found"
            )
        return row

    async def poll(self, poll_id: str, *, for_host: bool = True) -> answers.Poll:
        row = await self.db.fetchone("SELECT * FROM polls WHERE id = ?", (poll_id,))
        if row is None:
            raise NotFound("No poll has this id.", code="poll_not_found")
        options = await self.db.fetchall(
            "SELECT * FROM options WHERE poll_id = ? ORDER BY position", (poll_id,)
        )
        shown = 0
        if row["kind"] == "qa":
            with self.db.read() as conn:
                shown = results.question_statuses(conn, poll_id).get("visible", 0)
        return _poll_body(row, options, for_host=for_host, shown=shown)

    async def results(self, poll_id: str, *, for_host: bool = False) -> answers.Results:
        with self.db.read() as conn:
            return results.poll_results(conn, poll_id, for_host=for_host)

    async def questions(
        self, poll_id: str, limit: int = MODERATION_PAGE, offset: int = 0
    ) -> list[answers.Question]:
        """A page of a Q&A's questions, for the host (pending and hidden ones too), in the
        order of the results: pinned, most upvoted, oldest."""
        with self.db.read() as conn:
            return results.questions(conn, poll_id, for_host=True, limit=limit, offset=offset)

    async def question_statuses(self, poll_id: str) -> dict[str, int]:
        """How many of a Q&A's questions are `visible`, `pending` and `hidden`."""
        with self.db.read() as conn:
            return results.question_statuses(conn, poll_id)

    async def question_count(self, poll_id: str) -> int:
        """Every question of a Q&A, pending and hidden ones too."""
        with self.db.read() as conn:
            (count,) = fetchall(
                conn, "SELECT COUNT(*) FROM questions WHERE poll_id = ?", (poll_id,)
            )[0]
            return int(count)

    async def leaderboard(self, room_id: str) -> list[answers.LeaderboardRow]:
        with self.db.read() as conn:
            if not fetchall(conn, "SELECT id FROM rooms WHERE id = ?", (room_id,)):
                raise NotFound("No room has this id.", code="room_not_found")
            return results.leaderboard(conn, room_id)

    async def counted_votes(self, poll_id: str) -> list[answers.CountedVote]:
        """Every counted vote of a poll (a Q&A's questions, with their upvotes)."""
        poll = self.catalog.polls.get(poll_id)
        if poll is not None and poll.kind == "qa":
            return [
                {
                    "event_id": r["id"],
                    "voter_id": r["voter_id"],
                    "text": r["text"],
                    "upvotes": r["upvotes"],
                    "status": r["status"],
                    "counted_at": r["created_at"],
                }
                for r in await self.db.fetchall(
                    "SELECT * FROM questions WHERE poll_id = ? ORDER BY created_at, id", (poll_id,)
                )
            ]
        rows = await self.db.fetchall(
            "SELECT event_id, voter_id, choice, points, counted_at FROM votes WHERE poll_id = ?"
            " ORDER BY accepted_ns",
            (poll_id,),
        )
        votes: list[answers.CountedVote] = []
        for r in rows:
            choice = kinds.from_json(r["choice"])
            vote: answers.CountedVote = {
                "event_id": r["event_id"],
                "voter_id": r["voter_id"],
                "counted_at": r["counted_at"],
            }
            if isinstance(choice, kinds.Options):
                vote["option_ids"] = list(choice.ids)
            else:
                vote["text"] = choice.text if isinstance(choice, kinds.Answer) else ""
            if poll is not None and poll.kind == "quiz":
                vote["points"] = r["points"]
            votes.append(vote)
        return votes

    # -- attendees -----------------------------------------------------------------------

    async def join(
        self,
        code: str,
        known: Voter | None = None,
        *,
        address: str = "?",
        passcode: str | None = None,
    ) -> Voter:
        """A voter for the room; someone who already joined it (their token or cookie) stays
        the same voter, so joining again never gives a second vote. A new voter needs the
        room's passcode, if it has one, and is counted against the client's address."""
        room = await self.room_by_code(code)
        if known is not None and known.room_id == room["id"]:
            return known
        check_passcode(room, passcode)
        if self.identities is not None:
            self.identities.check(room["id"], address)
        voter = Voter(events.uuid7(), room["id"])
        joined = events.now_iso()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO voters (id, room_id, created_at, address) VALUES (?, ?, ?, ?)",
                (voter.voter_id, voter.room_id, joined, address),
            )
            # In a venue the other boxes learn the voter too: their notifications reach them.
            outbox.add(
                conn,
                [
                    self._event(
                        events.VOTER_JOINED,
                        {
                            "voter_id": voter.voter_id,
                            "room_id": voter.room_id,
                            "created_at": joined,
                            "address": address,
                        },
                        voter.voter_id,
                    )
                ],
            )
        self._on_commit()
        if self.identities is not None:
            self.identities.record(room["id"], address)
        return voter

    async def receipts(self, event_ids: list[str]) -> list[Row]:
        return await self.db.fetchall(
            "SELECT event_id, voter_id, status, reason FROM processed_events"
            f" WHERE event_id IN ({placeholders(event_ids)})",
            event_ids,
        )
