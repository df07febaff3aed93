"""Applying a batch of votes to SQLite: the second layer against double votes, the tallies of
every poll kind, and the receipts, planned in Python from a few reads, then written with one
statement per table, all inside the worker's one transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from opus import events, kinds, outbox
from opus.db import fetchall, placeholders
from opus.kinds import Answer, Choice, Options, Question, Upvote
from opus.ledger import read_queued
from opus.queue import Claim


@dataclass(slots=True)
class Vote:
    """A vote to apply: taken from this box's queue, or from another box's event. `claim`
    carries its event id, its clock stamp (`message_id`: the queue message's uuid7, which
    orders a voter's votes at every box) and when it was taken."""

    claim: Claim
    poll_id: str
    voter_id: str
    value: Choice
    choice: str  # the choice's canonical JSON, as the database keeps it
    source: str = ""  # the box that took it; "" for this one
    timestamp: str | None = None  # its event's time, when it came from another box


def parse(claim: Claim) -> Vote:
    entry = read_queued(claim.data)
    return Vote(claim, entry.poll_id, entry.voter_id, entry.choice, kinds.to_json(entry.choice))


def from_event(event: events.VoteCast) -> Vote:
    """Another box's vote, as that box took it."""
    data = event.data
    if data.choice is None:
        raise ValueError(f"vote {event.event_id} carries no choice")
    claim = Claim(event.hlc, 0, event.event_id, b"", data.taken_ns)
    return Vote(
        claim,
        data.poll_id,
        data.voter_id,
        data.choice,
        kinds.to_json(data.choice),
        source=event.source,
        timestamp=event.timestamp,
    )


@dataclass(slots=True)
class Plan:
    """What one batch writes, gathered so that each table gets one executemany."""

    processed: list[tuple[Any, ...]] = field(default_factory=list)
    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    replaces: list[tuple[Any, ...]] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)
    words: dict[tuple[str, str], int] = field(default_factory=dict)
    questions: list[tuple[Any, ...]] = field(default_factory=list)
    upvotes: list[tuple[str, str, str]] = field(default_factory=list)
    upvote_counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    events: list[events.Event] = field(default_factory=list)  # for the venue's log only
    # (room id, poll id) -> votes applied in it: what the screens are told (live.py)
    touched: dict[tuple[str, str], int] = field(default_factory=dict)
    counted: list[Vote] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)

    def add(self, poll_id: str, value: Choice, delta: int) -> None:
        """Count a vote's options (or a word-cloud answer's words) up or down."""
        if isinstance(value, Options):
            for option_id in value.ids:
                self.tally[option_id] = self.tally.get(option_id, 0) + delta
        elif isinstance(value, Answer):
            for word in kinds.words(value.text):
                self.words[(poll_id, word)] = self.words.get((poll_id, word), 0) + delta

    def reject(self, vote: Vote, reason: str, now: str) -> None:
        self.processed.append(
            (
                vote.claim.event_id,
                vote.poll_id,
                vote.voter_id,
                "rejected",
                reason,
                vote.choice,
                now,
                vote.claim.message_id,
                vote.claim.in_time_ns,
            )
        )
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def _keys_join(pairs: list[tuple[str, str]]) -> str:
    # A join from the keys, not `(a, b) IN (VALUES ...)`: SQLite plans that as a scan of the
    # whole table, once per batch.
    return f"WITH k(a, b) AS (VALUES {','.join('(?, ?)' for _ in pairs)})"


def plan(conn: sqlite3.Connection, votes: list[Vote], node_id: str, *, log: bool = True) -> Plan:
    """Plan a batch. `log`: make each vote's event, for the outbox of a box in a venue (its
    log, which the other boxes read); a box alone writes no event per vote: after the commit
    its worker tells the screens which polls moved (`Plan.touched`)."""
    result = Plan()
    event_ids = [v.claim.event_id for v in votes]
    done = {
        r[0]
        for r in fetchall(
            conn,
            f"SELECT event_id FROM processed_events WHERE event_id IN ({placeholders(event_ids)})",
            event_ids,
        )
    }
    poll_ids = sorted({v.poll_id for v in votes})
    polls = {
        r["id"]: r
        for r in fetchall(
            conn,
            "SELECT id, room_id, kind, allow_change, moderated, time_limit_s, opened_at,"
            f" closed_hlc FROM polls WHERE id IN ({placeholders(poll_ids)})",
            poll_ids,
        )
    }
    read = _Context({}, {}, {}, {}, set())
    for r in fetchall(
        conn,
        f"SELECT id, poll_id, correct FROM options WHERE poll_id IN ({placeholders(poll_ids)})",
        poll_ids,
    ):
        read.options.setdefault(r["poll_id"], set()).add(r["id"])
        if r["correct"]:
            read.correct.setdefault(r["poll_id"], set()).add(r["id"])

    keys = sorted({(v.poll_id, v.voter_id) for v in votes if isinstance(v.value, Options | Answer)})
    if keys:
        for r in fetchall(
            conn,
            f"{_keys_join(keys)} SELECT poll_id, voter_id, event_id, choice, accepted_ns,"
            " queued_id"
            " FROM k JOIN votes ON votes.poll_id = k.a AND votes.voter_id = k.b",
            [x for key in keys for x in key],
        ):
            read.existing[(r["poll_id"], r["voter_id"])] = (
                r["event_id"],
                kinds.from_json(r["choice"]),
                r["accepted_ns"],
                r["queued_id"],
            )

    upvotes = [(v, v.value.question_id) for v in votes if isinstance(v.value, Upvote)]
    targets = sorted({target for _, target in upvotes})
    if targets:
        for r in fetchall(
            conn,
            f"SELECT id, poll_id, status FROM questions WHERE id IN ({placeholders(targets)})",
            targets,
        ):
            read.questions[r["id"]] = (r["poll_id"], r["status"])
        pairs = sorted({(target, v.voter_id) for v, target in upvotes})
        read.upvoted = {
            (r[0], r[1])
            for r in fetchall(
                conn,
                f"{_keys_join(pairs)} SELECT question_id, voter_id FROM k"
                " JOIN upvotes ON upvotes.question_id = k.a AND upvotes.voter_id = k.b",
                [x for pair in pairs for x in pair],
            )
        }

    now = events.now_iso()
    for vote in votes:
        event_id = vote.claim.event_id
        if event_id in done:
            continue  # re-delivered: already applied, nothing changes
        done.add(event_id)
        poll = polls.get(vote.poll_id)
        if poll is None:
            result.reject(vote, "poll_not_found", now)
            continue
        question_id = _plan_one(vote, poll, read, result, now)
        where = (poll["room_id"], vote.poll_id)
        result.touched[where] = result.touched.get(where, 0) + 1
        if not log:
            continue
        # Every vote this box takes goes to the venue's other boxes, counted or not: each box
        # decides the same way from the same votes.
        result.events.append(
            events.VoteCast(
                event_id=event_id,
                timestamp=vote.timestamp or now,
                source=vote.source or node_id,
                actor=vote.voter_id,
                hlc=vote.claim.message_id,
                data=events.VoteData(
                    poll_id=vote.poll_id,
                    room_id=poll["room_id"],
                    voter_id=vote.voter_id,
                    option_ids=list(vote.value.ids) if isinstance(vote.value, Options) else [],
                    question_id=question_id,
                    choice=vote.value,
                    taken_ns=vote.claim.in_time_ns,
                ),
            )
        )
    return result


@dataclass(slots=True)
class _Context:
    """What a batch read before planning, kept up to date as it plans: the polls' options and
    right answers, the counted votes a vote may replace, the questions and upvotes."""

    options: dict[str, set[str]]
    correct: dict[str, set[str]]
    # (poll, voter) -> (event id, choice, accepted ns, queue message id) of the counted vote
    existing: dict[tuple[str, str], tuple[str, Choice, int, str | None]]
    questions: dict[str, tuple[str, str]]  # id -> (poll id, status)
    upvoted: set[tuple[str, str]]  # (question id, voter id)


def _plan_one(vote: Vote, poll: sqlite3.Row, read: _Context, result: Plan, now: str) -> str | None:
    """Plan one vote: counted (and what it replaces), or rejected with its reason. Returns
    the question it asked or upvoted."""
    event_id, value = vote.claim.event_id, vote.value
    taken_stamp = vote.claim.message_id
    question_id: str | None = None
    if poll["closed_hlc"] and vote.claim.message_id > poll["closed_hlc"]:
        # Taken at a box of the venue that had not heard of the close yet: counts nowhere.
        result.reject(vote, "poll_closed", now)
        return value.question_id if isinstance(value, Upvote) else None
    if (poll["kind"] == "qa") != isinstance(value, Question | Upvote):
        result.reject(vote, "invalid_option", now)  # a vote of another kind's shape
        return None
    if isinstance(value, Question):
        status = "pending" if poll["moderated"] else "visible"
        result.questions.append((event_id, vote.poll_id, vote.voter_id, value.text, status, now))
        read.questions[event_id] = (vote.poll_id, status)
        result.totals[vote.poll_id] = result.totals.get(vote.poll_id, 0) + 1
        question_id = event_id
    elif isinstance(value, Upvote):
        target = value.question_id
        asked = read.questions.get(target)
        reason = None
        if asked is None or asked[0] != vote.poll_id:
            reason = "question_not_found"
        elif asked[1] != "visible":
            reason = "question_hidden"
        elif (target, vote.voter_id) in read.upvoted:
            reason = "already_voted"
        if reason is not None:
            result.reject(vote, reason, now)
            return target
        read.upvoted.add((target, vote.voter_id))
        result.upvotes.append((target, vote.voter_id, event_id))
        result.upvote_counts[target] = result.upvote_counts.get(target, 0) + 1
        question_id = target
    else:
        reason, points = _check_keyed(vote, poll, read)
        if reason is not None:
            result.reject(vote, reason, now)
            return None
        key = (vote.poll_id, vote.voter_id)
        taken = (vote.claim.in_time_ns, vote.claim.message_id, points, now)
        if key in read.existing:
            old_event, old_value, _, _ = read.existing[key]
            result.add(vote.poll_id, old_value, -1)
            result.replaces.append((event_id, vote.choice, *taken, *key))
            # Where a vote may change, the latest counts; where it may not, the first one
            # (by their clock stamps, so every box of a venue keeps the same one).
            why = "replaced" if poll["allow_change"] else "already_voted"
            result.processed.append(
                (old_event, vote.poll_id, vote.voter_id, "rejected", why, "[]", now, None, None)
            )
        else:
            result.inserts.append((*key, event_id, vote.choice, *taken))
            result.totals[vote.poll_id] = result.totals.get(vote.poll_id, 0) + 1
        read.existing[key] = (event_id, value, vote.claim.in_time_ns, vote.claim.message_id)
        result.add(vote.poll_id, value, +1)
    result.processed.append(
        (
            event_id,
            vote.poll_id,
            vote.voter_id,
            "counted",
            None,
            vote.choice,
            now,
            taken_stamp,
            vote.claim.in_time_ns,
        )
    )
    result.counted.append(vote)
    return question_id


def _check_keyed(vote: Vote, poll: sqlite3.Row, read: _Context) -> tuple[str | None, int]:
    """Why a vote (or word-cloud answer) cannot count, if it cannot; and a quiz answer's points."""
    key = (vote.poll_id, vote.voter_id)
    value = vote.value
    if isinstance(value, Options) != (poll["kind"] in kinds.OPTION_KINDS):
        return "invalid_option", 0
    if isinstance(value, Options) and not read.options.get(vote.poll_id, set()).issuperset(
        value.ids
    ):
        return "invalid_option", 0
    if key in read.existing:
        counted_later = _taken_after(read.existing[key], vote)
        if not poll["allow_change"] and not counted_later:
            return "already_voted", 0  # the first vote counts
        if poll["allow_change"] and counted_later:
            return "replaced", 0  # a later vote by the same voter was counted first
    if poll["kind"] != "quiz":
        return None, 0
    opened = events.epoch(poll["opened_at"]) or 0.0
    elapsed = max(0.0, vote.claim.in_time_ns / 1e9 - opened)  # a count-in has no head start
    limit = poll["time_limit_s"]
    if limit and elapsed > limit + kinds.QUIZ_GRACE_S:
        return "time_up", 0
    chosen = set(value.ids) if isinstance(value, Options) else set()
    right = bool(chosen) and chosen <= read.correct.get(vote.poll_id, set())  # any right option
    return None, kinds.quiz_points(right, elapsed, limit)


def _taken_after(counted: tuple[str, Choice, int, str | None], vote: Vote) -> bool:
    """Whether the counted vote was taken after this one. By queue message ids (clock stamps
    that keep growing when the wall clock goes back, and order votes taken at different boxes);
    by accept time for rows counted before they were kept (schema 3)."""
    if counted[3] is not None:
        return counted[3] > vote.claim.message_id
    return counted[2] > vote.claim.in_time_ns


def write(conn: sqlite3.Connection, batch: Plan) -> None:
    if batch.inserts:
        conn.executemany(
            "INSERT INTO votes (poll_id, voter_id, event_id, choice, accepted_ns, queued_id,"
            " points, counted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            batch.inserts,
        )
    if batch.replaces:
        conn.executemany(
            "UPDATE votes SET event_id = ?, choice = ?, accepted_ns = ?, queued_id = ?,"
            " points = ?, counted_at = ? WHERE poll_id = ? AND voter_id = ?",
            batch.replaces,
        )
    if batch.tally:
        conn.executemany(
            "UPDATE tallies SET votes = votes + ? WHERE option_id = ?",
            [(delta, option_id) for option_id, delta in batch.tally.items() if delta],
        )
    if batch.words:
        conn.executemany(
            "INSERT INTO words (poll_id, word, count) VALUES (?, ?, ?)"
            " ON CONFLICT (poll_id, word) DO UPDATE SET count = count + excluded.count",
            [(poll_id, word, delta) for (poll_id, word), delta in batch.words.items() if delta],
        )
    if batch.questions:
        conn.executemany(
            "INSERT INTO questions (id, poll_id, voter_id, text, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            batch.questions,
        )
    if batch.upvotes:
        conn.executemany(
            "INSERT INTO upvotes (question_id, voter_id, event_id) VALUES (?, ?, ?)",
            batch.upvotes,
        )
        conn.executemany(
            "UPDATE questions SET upvotes = upvotes + ? WHERE id = ?",
            [(n, question_id) for question_id, n in batch.upvote_counts.items()],
        )
    if batch.totals:
        conn.executemany(
            "UPDATE polls SET total_votes = total_votes + ? WHERE id = ?",
            [(delta, poll_id) for poll_id, delta in batch.totals.items()],
        )
    if batch.events:
        # Already told to this box's screens (`touched`): the relay need not read them back.
        outbox.add(conn, batch.events, sent=True)
    if batch.processed:
        # A replaced vote was counted once; its receipt now says it was replaced.
        conn.executemany(
            "INSERT INTO processed_events (event_id, poll_id, voter_id, status, reason,"
            " choice, processed_at, hlc, taken_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (event_id) DO UPDATE SET status = excluded.status,"
            " reason = excluded.reason",
            batch.processed,
        )
        ids = [p[0] for p in batch.processed]
        conn.execute(f"DELETE FROM delivery_failures WHERE event_id IN ({placeholders(ids)})", ids)
