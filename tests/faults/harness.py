"""What every fault test does: a room of voters sending votes to a real `opus serve`, a record
of what each vote got back, and the exact reconciliation of that record against the receipts,
the results and the SQLite file once the dust has settled."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from conftest import Api, ServerProcess

_REFUSALS = {"storage_full", "shutting_down", "unavailable", "queue_full", "storage_error"}


@dataclass(eq=False)
class Ballot:
    """One voter's vote in one poll, with the event id it is sent under."""

    voter: dict[str, Any]
    poll_id: str
    option_id: str
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    acked: bool = False  # answered 202 at least once
    unanswered: int = 0  # sends that got no HTTP answer (the server died under them)
    refused: int = 0  # sends answered 503 with Retry-After
    conflicts: int = 0  # sends answered 409 already_voted
    old_ids: list[str] = field(default_factory=list)  # event ids it was sent under before

    @property
    def voter_id(self) -> str:
        return str(self.voter["voter_id"])


@dataclass
class Outcome:
    """What one round of sends got back."""

    acked: int = 0
    unanswered: list[Ballot] = field(default_factory=list)
    refused: int = 0
    conflicts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


def session(limit: int = 100) -> aiohttp.ClientSession:
    """A client that keeps no cookies (votes go by token) and waits generously."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def start(server: ServerProcess) -> None:
    await asyncio.to_thread(server.start, 60.0)


async def wait_exit(server: ServerProcess, timeout: float = 60.0) -> int:
    assert server.proc is not None
    return await asyncio.to_thread(server.proc.wait, timeout)


class Campaign:
    """A room, its polls and voters on one server, and every ballot sent."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.polls: list[dict[str, Any]] = []
        self.voters: list[dict[str, Any]] = []
        self.ballots: list[Ballot] = []
        self.room: dict[str, Any] = {}

    async def setup(self, polls: int, voters: int, **poll_extra: Any) -> None:
        async with session() as http:
            api = Api(http, self.server.base)
            self.room = await api.room("Faults")
            for _ in range(polls):
                self.polls.append(await api.poll(self.room["id"], ["A", "B", "C"], **poll_extra))
            sem = asyncio.Semaphore(32)

            async def join() -> dict[str, Any]:
                async with sem:
                    return await api.join(self.room["code"])

            self.voters = list(await asyncio.gather(*(join() for _ in range(voters))))
        for i, voter in enumerate(self.voters):
            for j, poll in enumerate(self.polls):
                option = poll["options"][(i + j) % len(poll["options"])]["id"]
                self.ballots.append(Ballot(voter, poll["id"], option))

    async def send(
        self,
        ballots: Iterable[Ballot],
        concurrency: int,
        after_acks: int | None = None,
        interrupt: Callable[[], None] | None = None,
        allow_conflict: set[Ballot] | None = None,
    ) -> Outcome:
        """Send every ballot (`concurrency` at a time); after `after_acks` answers 202 in this
        round, call `interrupt()` once (and keep sending: the rest meet a dying server)."""
        outcome = Outcome()
        sem = asyncio.Semaphore(concurrency)
        fired = False
        base = self.server.base

        async def one(http: aiohttp.ClientSession, ballot: Ballot) -> None:
            nonlocal fired
            async with sem:
                try:
                    async with http.post(
                        f"{base}/api/v1/polls/{ballot.poll_id}/votes",
                        json={"option_ids": [ballot.option_id], "event_id": ballot.event_id},
                        headers=ballot.voter["headers"],
                    ) as answer:
                        status = answer.status
                        body = await answer.json()
                        retry_after = answer.headers.get("Retry-After")
                except (TimeoutError, aiohttp.ClientError):
                    ballot.unanswered += 1
                    outcome.unanswered.append(ballot)
                    outcome.statuses["no answer"] += 1
                    return
            code = body.get("error", {}).get("code", "") if status >= 400 else ""
            outcome.statuses[f"{status} {code}".strip()] += 1
            if status == 202:
                assert body["event_id"] == ballot.event_id, body
                ballot.acked = True
                outcome.acked += 1
                if (
                    after_acks is not None
                    and interrupt is not None
                    and not fired
                    and outcome.acked >= after_acks
                ):
                    fired = True
                    interrupt()
            elif status == 503:
                # A refusal must say when to come back, and name why.
                assert retry_after is not None and int(retry_after) > 0, body
                assert code in _REFUSALS, body
                ballot.refused += 1
                outcome.refused += 1
            elif status == 409 and code == "already_voted" and ballot in (allow_conflict or ()):
                ballot.conflicts += 1
                outcome.conflicts += 1
            else:
                raise AssertionError(f"unexpected answer {status}: {body}")

        async with session(concurrency) as http:
            await asyncio.gather(*(one(http, b) for b in ballots))
        if interrupt is not None and not fired:
            interrupt()  # every vote was answered before the moment came: interrupt anyway
        return outcome

    async def receipt(
        self, http: aiohttp.ClientSession, ballot: Ballot, event_id: str | None = None
    ) -> str:
        """The receipt's status, or "unknown" when the server never kept this vote."""
        async with http.get(
            f"{self.server.base}/api/v1/votes/{event_id or ballot.event_id}",
            headers=ballot.voter["headers"],
        ) as answer:
            body = await answer.json()
            if answer.status == 404:
                assert body["error"]["code"] == "vote_not_found", body
                return "unknown"
            assert answer.status == 200, body
            return str(body["status"])

    async def receipts(self, ballots: list[Ballot], timeout: float = 120.0) -> dict[Ballot, str]:
        """Every ballot's receipt once none is still queued (a worker settles them)."""
        deadline = time.monotonic() + timeout
        sem = asyncio.Semaphore(32)
        found: dict[Ballot, str] = {}
        async with session() as http:

            async def one(ballot: Ballot) -> None:
                async with sem:
                    found[ballot] = await self.receipt(http, ballot)

            todo = ballots
            while todo:
                await asyncio.gather(*(one(b) for b in todo))
                todo = [b for b in todo if found[b] == "queued"]
                if todo and time.monotonic() > deadline:
                    break
                if todo:
                    await asyncio.sleep(0.2)
        return found

    async def kept(self, ballots: list[Ballot], timeout: float = 120.0) -> dict[Ballot, str | None]:
        """For each ballot, the one event id (of those it was sent under) the server kept and
        counted, or None. Never two: that would be one vote counted twice."""
        deadline = time.monotonic() + timeout
        sem = asyncio.Semaphore(32)
        kept: dict[Ballot, str | None] = {}
        async with session() as http:

            async def one(ballot: Ballot) -> bool:
                """Whether the answer is final (nothing still queued)."""
                async with sem:
                    ids = [ballot.event_id, *ballot.old_ids]
                    found = [await self.receipt(http, ballot, e) for e in ids]
                assert "rejected" not in found, (ids, found)
                if "queued" in found:
                    return False
                counted = [e for e, s in zip(ids, found, strict=True) if s == "counted"]
                assert len(counted) <= 1, f"one vote counted twice: {counted}"
                kept[ballot] = counted[0] if counted else None
                return True

            todo = ballots
            while todo:
                done = await asyncio.gather(*(one(b) for b in todo))
                todo = [b for b, final in zip(todo, done, strict=True) if not final]
                assert not todo or time.monotonic() < deadline, "votes still queued"
                if todo:
                    await asyncio.sleep(0.2)
        return kept

    async def reconcile(self, *, complete: bool) -> dict[str, int]:
        """Check, exactly, that every acknowledged vote is counted once and nothing else is:
        receipts, results and the database agree. `complete`: every ballot has been
        acknowledged by now, so each poll's count is exactly its voters."""
        acked = [b for b in self.ballots if b.acked]
        found = await self.receipts(acked)
        not_counted = [(b.event_id, s) for b, s in found.items() if s != "counted"]
        assert not not_counted, f"acknowledged but not counted: {not_counted[:5]}"

        db = sqlite3.connect(
            f"file:{self.server.data_dir / 'opus.db'}?mode=ro", uri=True, timeout=30
        )
        try:
            mine = {p["id"] for p in self.polls}  # other polls of the room are not ours
            rows = [
                r
                for r in db.execute(
                    "SELECT poll_id, voter_id, event_id, choice FROM votes"
                ).fetchall()
                if r[0] in mine
            ]
            processed = Counter(
                r[1]
                for r in db.execute("SELECT poll_id, status FROM processed_events").fetchall()
                if r[0] in mine
            )
            tallies = dict(
                db.execute("SELECT poll_id, SUM(votes) FROM tallies GROUP BY poll_id").fetchall()
            )
            totals = dict(db.execute("SELECT id, total_votes FROM polls").fetchall())
        finally:
            db.close()

        by_event = {b.event_id: b for b in self.ballots}
        by_old = {old: b for b in self.ballots for old in b.old_ids}
        counted: dict[str, tuple[str, str, str]] = {r[2]: (r[0], r[1], r[3]) for r in rows}
        assert len(counted) == len(rows), "an event id counted twice"
        pairs = Counter((poll_id, voter_id) for poll_id, voter_id, _, _ in rows)
        assert max(pairs.values(), default=1) == 1, "a voter counted twice in a poll"
        for b in acked:
            poll_id, voter_id, choice = counted[b.event_id]
            assert (poll_id, voter_id) == (b.poll_id, b.voter_id)
            assert b.option_id in choice, "counted something else than was sent"
        for event_id, (poll_id, voter_id, _) in counted.items():
            ballot = by_event.get(event_id) or by_old.get(event_id)
            assert ballot is not None, f"{event_id} counted but never sent"
            assert (ballot.poll_id, ballot.voter_id) == (poll_id, voter_id)

        async with session() as http:
            api = Api(http, self.server.base)
            for poll in self.polls:
                pid = poll["id"]
                here = [r for r in rows if r[0] == pid]
                results = await api.results(pid)
                assert results["total_votes"] == len(here) == tallies.get(pid, 0) == totals[pid]
                for option in results["options"]:
                    chose = sum(1 for r in here if option["id"] in r[3])
                    assert option["votes"] == chose, (option, chose)
                acked_voters = {b.voter_id for b in acked if b.poll_id == pid}
                assert acked_voters <= {r[1] for r in here}
                if complete:
                    assert len(here) == len(acked_voters) == len(self.voters)
        unacked_counted = sum(
            1
            for b in self.ballots
            if not b.acked and (b.event_id in counted or any(o in counted for o in b.old_ids))
        )
        return {
            "ballots": len(self.ballots),
            "acked": len(acked),
            "counted": len(rows),
            "counted_unacked": unacked_counted,
            "receipts_counted": sum(1 for s in found.values() if s == "counted"),
            "processed_counted": processed.get("counted", 0),
            "processed_rejected": processed.get("rejected", 0),
        }
