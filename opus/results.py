"""Results of every poll kind, read from SQLite: counts per option, a rating's average, a word
cloud's words, a Q&A's questions and a quiz's leaderboard.

The reads are a few indexed queries, run on the caller's connection (`Database.read()` or a write
transaction), synchronously: one small read costs less than a hop to a reader thread.
"""

from __future__ import annotations

import json
import sqlite3

from opus import kinds
from opus.answers import (
    LEADERBOARD_SIZE,
    MAX_WORDS,
    QUESTIONS_SHOWN,
    LeaderboardRow,
    OptionResult,
    Question,
    Results,
    Word,
)
from opus.auth import pseudonym
from opus.db import fetchall
from opus.errors import NotFound


def poll_results(conn: sqlite3.Connection, poll_id: str, *, for_host: bool = False) -> Results:
    """The contract's results body, with each kind's extras. Hosts also see a Q&A's pending and
    hidden questions and a quiz's right answers before it closes."""
    rows = fetchall(
        conn,
        "SELECT id, room_id, kind, status, total_votes, blocked_words FROM polls WHERE id = ?",
        (poll_id,),
    )
    if not rows:
        raise NotFound("No poll has this id.", code="poll_not_found")
    poll = rows[0]
    kind, total = poll["kind"], poll["total_votes"]
    reveal = for_host or poll["status"] == "closed"
    options: list[OptionResult] = []
    for o in fetchall(
        conn,
        "SELECT o.id, o.label, o.correct, t.votes FROM options o"
        " JOIN tallies t ON t.option_id = o.id WHERE o.poll_id = ? ORDER BY o.position",
        (poll_id,),
    ):
        option: OptionResult = {
            "id": o["id"],
            "label": o["label"],
            "votes": o["votes"],
            "percent": round(100 * o["votes"] / total, 1) if total else 0.0,
        }
        if kind == "quiz" and reveal:
            option["correct"] = bool(o["correct"])
        elif kind == "quiz" and poll["status"] == "open":
            # How the hall answers would hint at the right answer: the host's until it closes.
            option["votes"] = option["percent"] = None
        options.append(option)
    body: Results = {
        "poll_id": poll_id,
        "kind": kind,
        "status": poll["status"],
        "total_votes": total,
        "options": options,
    }
    if kind == "rating":
        counts = [(int(o["label"]), o["votes"] or 0) for o in options]
        weight = sum(n for _, n in counts)
        body["average"] = round(sum(v * n for v, n in counts) / weight, 2) if weight else None
    elif kind == "text":
        blocked = set(json.loads(poll["blocked_words"]))
        # Blocked as they are read (a word blocked later disappears at once), phrases holding
        # a blocked word too.
        entries = fetchall(
            conn,
            "SELECT word, count FROM words WHERE poll_id = ? AND count > 0"
            " ORDER BY count DESC, word LIMIT ?",
            (poll_id, MAX_WORDS * 4 if blocked else MAX_WORDS),
        )
        body["words"] = [
            Word(word=r["word"], count=r["count"])
            for r in entries
            if not kinds.hidden_by(r["word"], blocked)
        ][:MAX_WORDS]
    elif kind == "qa":
        # The top questions only: every results message and snapshot carries them, and one
        # crowded Q&A must not make every watcher's message grow without end.
        body["questions"] = questions(conn, poll_id, for_host=for_host, limit=QUESTIONS_SHOWN)
        statuses = question_statuses(conn, poll_id)
        # The total is what the audience sees, for every reader: a question the host hid or has
        # not approved is not counted there (the host finds it in question_count).
        body["total_votes"] = statuses.get("visible", 0)
        body["question_count"] = sum(statuses.values()) if for_host else body["total_votes"]
    elif kind == "quiz":
        body["leaderboard"] = leaderboard(conn, poll["room_id"])
    return body


def question_statuses(conn: sqlite3.Connection, poll_id: str) -> dict[str, int]:
    """How many of a Q&A's questions are `visible`, `pending` and `hidden`."""
    return {
        r["status"]: r["n"]
        for r in fetchall(
            conn,
            "SELECT status, COUNT(*) AS n FROM questions WHERE poll_id = ? GROUP BY status",
            (poll_id,),
        )
    }


def questions(
    conn: sqlite3.Connection, poll_id: str, *, for_host: bool, limit: int = -1, offset: int = 0
) -> list[Question]:
    """Pinned first, then the most upvoted, then the oldest (`limit` of them, -1: all)."""
    shown = "" if for_host else " AND status = 'visible'"
    return [
        {
            "id": r["id"],
            "text": r["text"],
            "upvotes": r["upvotes"],
            "pinned": bool(r["pinned"]),
            "answered": bool(r["answered"]),
            "status": r["status"],
            "created_at": r["created_at"],
        }
        for r in fetchall(
            conn,
            f"SELECT * FROM questions WHERE poll_id = ?{shown}"
            " ORDER BY pinned DESC, upvotes DESC, created_at, id LIMIT ? OFFSET ?",
            (poll_id, limit, offset),
        )
    ]


def leaderboard(
    conn: sqlite3.Connection, room_id: str, limit: int = LEADERBOARD_SIZE
) -> list[LeaderboardRow]:
    """Points over the room's closed quizzes (an open one would give its answers away)."""
    return [
        {"name": pseudonym(r["voter_id"]), "points": r["points"], "correct": r["correct"]}
        for r in fetchall(
            conn,
            "SELECT v.voter_id, SUM(v.points) AS points, SUM(v.points > 0) AS correct"
            " FROM polls p JOIN votes v ON v.poll_id = p.id"
            " WHERE p.room_id = ? AND p.kind = 'quiz' AND p.status = 'closed'"
            " GROUP BY v.voter_id ORDER BY points DESC, MIN(v.accepted_ns) LIMIT ?",
            (room_id, limit),
        )
    ]
