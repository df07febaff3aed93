"""Applying the venue's other boxes' events here (see replication.py for how they travel).

Each event is applied once (`venue_applied`), in one transaction with how far this box got in
the peer's stream (`venue_peers`), and goes into this box's outbox as it is: the hub moves this
box's screens, and this box's stream relays it to the peers that cannot reach its source.

Every box computes the same state from the same events, in any order:
- rooms, polls and a question's moderation: the change with the latest clock stamp (`hlc`)
  wins; a poll's status only moves forward (draft, open, closed);
- votes go through the same planning as this box's own (apply.py): a voter's latest vote
  counts where votes may change, the first one where they may not, by their clock stamps.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from opus import apply, events, kinds, notifications, outbox
from opus.catalog import Catalog
from opus.db import Database, fetchall, last_writer_wins
from opus.ledger import Entry, Ledger
from opus.queue import Claim

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Applied:
    """What a batch changed, for the in-memory views once it is committed."""

    events: int = 0
    polls: set[str] = field(default_factory=set)  # polls whose view must be read again
    votes: list[apply.Vote] = field(default_factory=list)
    counted: int = 0
    touched: dict[tuple[str, str], int] = field(default_factory=dict)  # for the screens
    joined: dict[str, list[str]] = field(default_factory=dict)  # room id -> voters new here
    addresses: list[tuple[str, str]] = field(default_factory=list)  # (room, client) of those


class Replica:
    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        ledger: Ledger,
        box: str,
        on_commit: Callable[[], None],
        on_votes: Callable[[dict[tuple[str, str], int]], None],
        on_learned: Callable[[Applied], None] | None = None,
    ) -> None:
        self._db = db
        self._catalog = catalog
        self._ledger = ledger
        self.box = box
        self._on_commit = on_commit
        self._on_votes = on_votes  # the polls the votes learned moved, for the screens
        self._on_learned = on_learned  # the notifications of voters and votes learned late

    def cursor(self, peer: str) -> int:
        """The last sequence of `peer`'s stream applied here (0: none)."""
        with self._db.read() as conn:
            rows = fetchall(conn, "SELECT seq FROM venue_peers WHERE box = ?", (peer,))
        return int(rows[0][0]) if rows else 0

    def reset(self, peer: str) -> None:
        """Read `peer`'s stream from its start again (its events are applied once all the
        same)."""
        with self._db.write() as conn:
            conn.execute("UPDATE venue_peers SET seq = 0 WHERE box = ?", (peer,))

    def advance(self, peer: str, seq: int) -> None:
        """Go on from `seq` of `peer`'s stream (its events up to there are applied: they came
        from its log)."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO venue_peers (box, seq) VALUES (?, ?)"
                " ON CONFLICT (box) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                (peer, seq),
            )

    def apply_batch(self, peer: str, batch: list[tuple[int, events.Event]]) -> Applied:
        """Apply a slice of `peer`'s stream: (sequence, event) in order."""
        done = Applied()
        if not batch:
            return done
        with self._db.write() as conn:
            ids = [e.event_id for _, e in batch]
            marks = ",".join("?" for _ in ids)
            seen = {
                r[0]
                for r in fetchall(
                    conn, f"SELECT event_id FROM venue_applied WHERE event_id IN ({marks})", ids
                )
            }
            # This box's own events, relayed back to it: known here (its log keeps them), unless
            # the box is a new one in the place of one whose disk was lost.
            mine = [e.event_id for _, e in batch if e.source == self.box]
            if mine:
                marks = ",".join("?" for _ in mine)
                seen.update(
                    r[0]
                    for r in fetchall(
                        conn, f"SELECT event_id FROM outbox WHERE event_id IN ({marks})", mine
                    )
                )
            votes: list[apply.Vote] = []
            for _, event in batch:
                if event.event_id in seen:
                    continue  # known here: this box's own, or relayed by another peer already
                seen.add(event.event_id)
                done.events += 1
                if isinstance(event, events.VoteCast):
                    votes.append(apply.from_event(event))
                    continue
                # A change to a poll: the votes before it in the stream are planned first.
                self._votes(conn, votes, done)
                votes = []
                self._change(conn, event, done)
                outbox.add(conn, [event])
            self._votes(conn, votes, done)
            conn.executemany(
                "INSERT OR IGNORE INTO venue_applied (event_id) VALUES (?)",
                [(e.event_id,) for _, e in batch if e.source != self.box],
            )
            conn.execute(
                "INSERT INTO venue_peers (box, seq) VALUES (?, ?)"
                " ON CONFLICT (box) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                (peer, batch[-1][0]),
            )
        for _, event in batch:
            if event.hlc:
                events.observe(event.hlc)
        self._refresh(done)
        self._on_commit()
        self._on_votes(done.touched)
        if self._on_learned is not None and (done.joined or done.votes):
            self._on_learned(done)
        return done

    def _votes(self, conn: sqlite3.Connection, votes: list[apply.Vote], done: Applied) -> None:
        if not votes:
            return
        plan = apply.plan(conn, votes, self.box)
        apply.write(conn, plan)
        done.votes.extend(votes)
        done.counted += len(plan.counted)
        for where, n in plan.touched.items():
            done.touched[where] = done.touched.get(where, 0) + n

    def _after_close(
        self, conn: sqlite3.Connection, poll_id: str, closed: str, done: Applied
    ) -> None:
        done.votes.extend(close_at(conn, poll_id, closed, self.box))

    def _refresh(self, done: Applied) -> None:
        """The vote path's views: the polls that changed, and who voted."""
        if done.polls:
            self._catalog.refresh(self._db, sorted(done.polls))
        for vote in done.votes:
            entry = Entry(vote.poll_id, vote.voter_id, vote.value)
            self._ledger.learned(vote.claim.event_id, entry)

    # -- changes ------------------------------------------------------------------------

    def _change(self, conn: sqlite3.Connection, event: events.Event, done: Applied) -> None:
        if isinstance(event, events.RoomCreated):
            _room_created(conn, event)
        elif isinstance(event, events.RoomUpdated):
            _room_updated(conn, event)
        elif isinstance(event, events.RoomDeleted):
            polls = fetchall(conn, "SELECT id FROM polls WHERE room_id = ?", (event.data.room_id,))
            conn.execute("DELETE FROM rooms WHERE id = ?", (event.data.room_id,))
            done.polls.update(r[0] for r in polls)
        elif isinstance(event, events.PollCreated):
            _poll_created(conn, event.data, event.hlc)
            done.polls.add(event.data.id)
        elif isinstance(event, events.PollUpdated):
            _poll_updated(conn, event)
            done.polls.add(event.data.poll_id)
        elif isinstance(event, events.PollDeleted):
            conn.execute("DELETE FROM polls WHERE id = ?", (event.data.poll_id,))
            done.polls.add(event.data.poll_id)
        elif isinstance(event, events.PollOpened) and event.data.reopened:
            change = event.data
            at = change.at or event.timestamp
            done.votes.extend(reopen_at(conn, change.poll_id, event.hlc, self.box, at))
            done.polls.add(event.data.poll_id)
        elif isinstance(event, events.PollOpened | events.PollClosed):
            _status(conn, event)
            done.polls.add(event.data.poll_id)
            if isinstance(event, events.PollClosed):
                self._after_close(conn, event.data.poll_id, event.hlc, done)
        elif isinstance(event, events.QuestionUpdated):
            _moderated(conn, event)
        elif isinstance(event, events.VoterJoined):
            voter = event.data
            if fetchall(conn, "SELECT 1 FROM rooms WHERE id = ?", (voter.room_id,)):
                new = conn.execute(
                    "INSERT OR IGNORE INTO voters (id, room_id, created_at, address)"
                    " VALUES (?, ?, ?, ?)",
                    (voter.voter_id, voter.room_id, voter.created_at, voter.address),
                ).rowcount
                if new:
                    done.joined.setdefault(voter.room_id, []).append(voter.voter_id)
                    done.addresses.append((voter.room_id, voter.address or "?"))
        elif isinstance(event, events.NotificationsRead):
            notifications.mark(conn, event.data)


def _closes(conn: sqlite3.Connection, poll_id: str, close: str = "") -> tuple[str | None, bool]:
    """Record a close stamp (if given); returns the poll's close in force (the earliest close
    after its latest reopening, None: open) and whether the poll exists."""
    rows = fetchall(conn, "SELECT closes, reopened_hlc FROM polls WHERE id = ?", (poll_id,))
    if not rows:
        return None, False
    closes = set(json.loads(rows[0]["closes"]))
    if close:
        closes.add(close)
        conn.execute(
            "UPDATE polls SET closes = ? WHERE id = ?", (json.dumps(sorted(closes)), poll_id)
        )
    reopened = rows[0]["reopened_hlc"] or ""
    in_force = min((c for c in closes if c > reopened), default=None)
    conn.execute("UPDATE polls SET closed_hlc = ? WHERE id = ?", (in_force, poll_id))
    return in_force, True


def close_at(conn: sqlite3.Connection, poll_id: str, closed: str, box: str) -> list[apply.Vote]:
    """A poll's close stamped `closed` (this box's, or another's): the votes counted here that
    are stamped after it count nowhere, and a vote one of them had replaced (stamped before the
    close) counts again. The earliest close after the latest reopening wins; a close stamped
    before a reopening changes nothing. Returns the votes counted again."""
    if not closed:
        return []
    in_force, _ = _closes(conn, poll_id, closed)
    if in_force is None:
        return []
    closed = in_force
    late = fetchall(
        conn,
        "SELECT event_id, voter_id, choice FROM processed_events WHERE poll_id = ?"
        " AND status = 'counted' AND hlc > ?",
        (poll_id, closed),
    )
    if not late:
        return []
    for row in late:
        _uncount(conn, poll_id, row["event_id"], kinds.from_json(row["choice"]))
    conn.executemany(
        "UPDATE processed_events SET status = 'rejected', reason = 'poll_closed'"
        " WHERE event_id = ?",
        [(r["event_id"],) for r in late],
    )
    again = []
    for voter_id in sorted({r["voter_id"] for r in late}):
        earlier = fetchall(
            conn,
            "SELECT event_id, choice, hlc, taken_ns FROM processed_events"
            " WHERE poll_id = ? AND voter_id = ? AND status = 'rejected'"
            " AND reason = 'replaced' AND hlc IS NOT NULL AND hlc <= ?"
            " ORDER BY hlc DESC LIMIT 1",
            (poll_id, voter_id, closed),
        )
        for r in earlier:
            conn.execute("DELETE FROM processed_events WHERE event_id = ?", (r["event_id"],))
            choice = kinds.from_json(r["choice"])
            claim = Claim(r["hlc"], 0, r["event_id"], b"", r["taken_ns"] or 0)
            again.append(apply.Vote(claim, poll_id, voter_id, choice, r["choice"]))
    if again:
        apply.write(conn, apply.plan(conn, again, box))
    return again


def reopen_at(
    conn: sqlite3.Connection, poll_id: str, reopened: str, box: str, at: str
) -> list[apply.Vote]:
    """A closed poll opened again, stamped `reopened`: the closes stamped before it are void,
    so the votes refused for being stamped after them count again (in their stamps' order,
    each under the poll's rules), unless a later close is in force. Returns those votes."""
    rows = fetchall(conn, "SELECT reopened_hlc FROM polls WHERE id = ?", (poll_id,))
    if not rows or (rows[0][0] or "") >= reopened:
        return []  # unknown here, or an older reopening than one already applied
    conn.execute("UPDATE polls SET reopened_hlc = ? WHERE id = ?", (reopened, poll_id))
    in_force, _ = _closes(conn, poll_id)
    if in_force is None:
        conn.execute(
            "UPDATE polls SET status = 'open', closed_at = NULL, opened_at = ? WHERE id = ?"
            " AND status = 'closed'",
            (at, poll_id),
        )
    refused = fetchall(
        conn,
        "SELECT event_id, voter_id, choice, hlc, taken_ns FROM processed_events"
        " WHERE poll_id = ? AND status = 'rejected' AND reason = 'poll_closed'"
        " AND hlc IS NOT NULL AND (? IS NULL OR hlc < ?) ORDER BY hlc",
        (poll_id, in_force, in_force),
    )
    again = []
    for r in refused:
        conn.execute("DELETE FROM processed_events WHERE event_id = ?", (r["event_id"],))
        claim = Claim(r["hlc"], 0, r["event_id"], b"", r["taken_ns"] or 0)
        choice = kinds.from_json(r["choice"])
        again.append(apply.Vote(claim, poll_id, r["voter_id"], choice, r["choice"]))
    if again:
        apply.write(conn, apply.plan(conn, again, box))
    return again


def _uncount(conn: sqlite3.Connection, poll_id: str, event_id: str, choice: kinds.Choice) -> None:
    """Take one counted vote (an answer, a question, an upvote) out of the results."""
    if isinstance(choice, kinds.Question):
        if conn.execute("DELETE FROM questions WHERE id = ?", (event_id,)).rowcount:
            conn.execute("UPDATE polls SET total_votes = total_votes - 1 WHERE id = ?", (poll_id,))
        return
    if isinstance(choice, kinds.Upvote):
        if conn.execute("DELETE FROM upvotes WHERE event_id = ?", (event_id,)).rowcount:
            conn.execute(
                "UPDATE questions SET upvotes = upvotes - 1 WHERE id = ?", (choice.question_id,)
            )
        return
    if not conn.execute("DELETE FROM votes WHERE event_id = ?", (event_id,)).rowcount:
        return
    conn.execute("UPDATE polls SET total_votes = total_votes - 1 WHERE id = ?", (poll_id,))
    if isinstance(choice, kinds.Options):
        conn.executemany(
            "UPDATE tallies SET votes = votes - 1 WHERE option_id = ?",
            [(option_id,) for option_id in choice.ids],
        )
    elif isinstance(choice, kinds.Answer):
        conn.executemany(
            "UPDATE words SET count = count - 1 WHERE poll_id = ? AND word = ?",
            [(poll_id, word) for word in kinds.words(choice.text)],
        )


def _room_created(conn: sqlite3.Connection, event: events.RoomCreated) -> None:
    room = event.data
    conn.execute(
        "INSERT OR IGNORE INTO rooms (id, code, title, created_at, passcode, show_passcode,"
        " pace, theme, accent, language) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            room.id,
            room.code,
            room.title,
            room.created_at,
            room.passcode,
            int(room.show_passcode),
            room.pace,
            room.theme,
            room.accent,
            room.language,
        ),
    )
    if not fetchall(conn, "SELECT 1 FROM rooms WHERE id = ?", (room.id,)):
        log.error("room %s from %s has the join code of another room here", room.id, event.source)


def _room_updated(conn: sqlite3.Connection, event: events.RoomUpdated) -> None:
    change = event.data
    fields: dict[str, object] = {}
    fields_sent = (
        "title",
        "passcode",
        "show_passcode",
        "pace",
        "shown_poll_id",
        "theme",
        "accent",
        "language",
    )
    for name in fields_sent:
        value = getattr(change, name)
        if value is not msgspec.UNSET:
            fields[name] = int(value) if isinstance(value, bool) else value
    marks = ("order",) if change.order is not msgspec.UNSET else ()
    won = last_writer_wins(conn, "rooms", change.room_id, fields, event.hlc, marks)
    if not won or "order" not in won or change.order is msgspec.UNSET:
        return  # deleted here, or no newer order
    conn.executemany(
        "UPDATE polls SET position = ? WHERE id = ? AND room_id = ?",
        [(i, poll_id, change.room_id) for i, poll_id in enumerate(change.order)],
    )


def _poll_created(conn: sqlite3.Connection, poll: events.PollData, hlc: str) -> None:
    if not fetchall(conn, "SELECT 1 FROM rooms WHERE id = ?", (poll.room_id,)):
        return  # its room was deleted here
    if fetchall(conn, "SELECT 1 FROM polls WHERE id = ?", (poll.id,)):
        return
    conn.execute(
        "INSERT INTO polls (id, room_id, position, created_at, status, opened_at, question,"
        " kind, allow_change, hide_results, scale, blocked_words, moderated, time_limit_s,"
        " changed_hlc) VALUES (?, ?, ?, ?, 'draft', NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (poll.id, poll.room_id, poll.position, poll.created_at, *_settings(poll), hlc),
    )
    _options(conn, poll)


def _settings(poll: events.PollData) -> tuple[object, ...]:
    """What an edit may change, in the order the statements here name it."""
    return (
        poll.question,
        poll.kind,
        poll.allow_change,
        poll.hide_results,
        poll.scale,
        poll.blocked_words,
        poll.moderated,
        poll.time_limit_s,
    )


def _options(conn: sqlite3.Connection, poll: events.PollData) -> None:
    conn.executemany(
        "INSERT INTO options (id, poll_id, position, label, correct) VALUES (?, ?, ?, ?, ?)",
        [(o.id, poll.id, i, o.label, int(o.correct)) for i, o in enumerate(poll.options)],
    )
    conn.executemany(
        "INSERT INTO tallies (option_id, poll_id, votes) VALUES (?, ?, 0)",
        [(o.id, poll.id) for o in poll.options],
    )


def _poll_updated(conn: sqlite3.Connection, event: events.PollUpdated) -> None:
    poll = event.data.poll
    if poll is None:
        return
    rows = fetchall(conn, "SELECT changed_hlc FROM polls WHERE id = ?", (poll.id,))
    if not rows or rows[0][0] >= event.hlc:
        return  # deleted here, or a later change won
    conn.execute(
        "UPDATE polls SET question = ?, kind = ?, allow_change = ?, hide_results = ?,"
        " scale = ?, blocked_words = ?, moderated = ?, time_limit_s = ?, changed_hlc = ?"
        " WHERE id = ?",
        (*_settings(poll), event.hlc, poll.id),
    )
    here = [r[0] for r in fetchall(conn, "SELECT id FROM options WHERE poll_id = ?", (poll.id,))]
    if sorted(here) != sorted(o.id for o in poll.options):  # rebuilt (only a draft's)
        conn.execute("DELETE FROM options WHERE poll_id = ?", (poll.id,))
        _options(conn, poll)


_FORWARD = {"draft": 0, "open": 1, "closed": 2}


def _status(conn: sqlite3.Connection, event: events.PollOpened | events.PollClosed) -> None:
    """A poll's status only moves forward: every box ends at the furthest one it heard of."""
    change = event.data
    rows = fetchall(conn, "SELECT status, reopened_hlc FROM polls WHERE id = ?", (change.poll_id,))
    if not rows or _FORWARD[rows[0][0]] >= _FORWARD[change.status]:
        return
    if change.status == "closed" and (rows[0]["reopened_hlc"] or "") > event.hlc:
        return  # a close the poll's reopening made void
    at = change.at or event.timestamp
    if change.status == "open":
        conn.execute(
            "UPDATE polls SET status = 'open', opened_at = ? WHERE id = ?", (at, change.poll_id)
        )
    else:
        conn.execute(
            "UPDATE polls SET status = 'closed', closed_at = ?,"
            " opened_at = COALESCE(opened_at, ?) WHERE id = ?",
            (at, at, change.poll_id),
        )


def _moderated(conn: sqlite3.Connection, event: events.QuestionUpdated) -> None:
    change = event.data
    fields = {
        name: value
        for name in ("status", "pinned", "answered")
        if (value := getattr(change, name)) is not None
    }
    last_writer_wins(conn, "questions", change.question_id, fields, event.hlc)
