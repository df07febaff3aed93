"""The wall clock jumps (+1 h, back 2 h, +1 day, back 2 days) while votes flow, and once more
between a kill -9 and the restart. The server runs under libfaketime (Debian's `faketime`),
whose offset the test rewrites in a file; the monotonic clock is left alone, as a real clock
step leaves it. Nothing acknowledged is lost or counted twice, event ids stay unique, a
changed vote stays the voter's latest, and votes a worker had claimed before a backward
jump are still counted at the next start."""

from __future__ import annotations

import asyncio
import glob
import random
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import Api, ServerProcess
from faults.conftest import Figures, Sizes
from faults.harness import Campaign, session, start, wait_exit
from opus import kinds
from opus.ledger import Entry
from opus.queue import VoteQueue

# Offsets from the real time, in the order the clock goes through them while votes flow.
_JUMPS = ["+3600", "-3600", "+86400", "-86400", "+0"]


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (Debian package faketime; .ci/run installs it)")
    return found[0]


class Clock:
    """The server's wall clock: an offset from the real one, read on every call."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "faketime"
        self.set("+0")

    def set(self, offset: str) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.replace(self.file)  # whole, never half-written

    async def jump(self, offset: str) -> None:
        """Set the offset and wait until the server has surely read it (it reads the file at
        most once a second: reading it on every call made the server ten times slower)."""
        self.set(offset)
        await asyncio.sleep(2.5)

    def env(self) -> dict[str, str]:
        # The monotonic clock is not faked: a real step of the wall clock leaves it alone.
        # Two quirks of libfaketime 0.9.10 in that mode: time.sleep fails with EINVAL
        # (absolute clock_nanosleep; the server only sleeps in asyncio, and in the data-dir
        # lock's wait, never contended here), and timed waits spin, which makes the server
        # much slower under it: the sizes here are small.
        return {
            "LD_PRELOAD": libfaketime(),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


async def test_clock_jumps_lose_nothing_and_count_nothing_twice(
    tmp_path: Path, sizes: Sizes, figures: Figures
) -> None:
    clock = Clock(tmp_path)
    server = ServerProcess(tmp_path / "data", **clock.env())
    rng = random.Random()
    stats: Counter[str] = Counter()
    try:
        await start(server)
        campaign = Campaign(server)
        parts = len(_JUMPS) + 1  # one part of the ballots per jump, one for the kill
        await campaign.setup(2, sizes.clock_voters * parts)
        ballots = campaign.ballots[:]
        per_part = len(ballots) // parts
        async with session() as http:
            api = Api(http, server.base)
            # Votes without an event id: the server makes one (a UUIDv7, from the clock).
            unnamed = await api.poll(campaign.room["id"], ["A", "B", "C"])
            quiz = await api.poll(
                campaign.room["id"],
                ["Right", "Wrong", "Also wrong"],
                kind="quiz",
                correct=[0],
                time_limit_s=600,
            )
            server_made: dict[str, str] = {}  # event id -> voter id
            quiz_acked: set[str] = set()

            async def vote_unnamed(voter: dict[str, Any]) -> None:
                status, body = await api.vote(voter, unnamed["id"], [unnamed["options"][0]["id"]])
                assert status == 202, body
                assert body["event_id"] not in server_made, "the server made an event id twice"
                server_made[body["event_id"]] = voter["voter_id"]

            async def answer_quiz(voter: dict[str, Any]) -> None:
                # The time limit runs on the wall clock: past it (+1 h) an answer is refused
                # as time_up, which loses nothing; whatever is accepted must count.
                status, body = await api.vote(voter, quiz["id"], [quiz["options"][0]["id"]])
                stats[f"quiz {status} {body.get('error', {}).get('code', '')}".strip()] += 1
                assert status == 202 or body["error"]["code"] == "time_up", body
                if status == 202:
                    quiz_acked.add(body["event_id"])

            # Each round, a part of the ballots, votes without an event id and quiz answers;
            # the clock jumps in the middle of the round.
            for rnd, jump in enumerate(_JUMPS):
                todo = ballots[rnd * per_part : (rnd + 1) * per_part]
                voters = list({b.voter_id: b.voter for b in todo}.values())
                outcome, *_ = await asyncio.gather(
                    campaign.send(
                        todo,
                        sizes.concurrency,
                        after_acks=rng.randint(1, len(todo) - 1),
                        interrupt=lambda j=jump: clock.set(j),
                    ),
                    *(vote_unnamed(v) for v in voters[: len(voters) // 2]),
                    *(answer_quiz(v) for v in voters[-3:]),
                )
                assert outcome.acked == len(todo), outcome.statuses

        # kill -9 in a burst a day back, then a restart two days back: the claims the dead
        # server held carry a claim time in the future of the new clock.
        clock.set("-86400")
        todo = ballots[len(_JUMPS) * per_part :]

        def kill() -> None:
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)

        outcome = await campaign.send(
            todo, sizes.concurrency, after_acks=max(1, len(todo) // 2), interrupt=kill
        )
        assert await wait_exit(server) == -signal.SIGKILL
        clock.set("-172800")
        await start(server)
        rest = [b for b in todo if not b.acked]
        kept = await campaign.kept(rest)
        stats["unanswered_at_kill"] = len(rest)
        stats["unanswered_kept"] = sum(1 for e in kept.values() if e)
        again = await campaign.send(rest, sizes.concurrency)
        assert again.acked == len(rest), again.statuses

        result = await campaign.reconcile(complete=True)
        assert result["processed_rejected"] == 0
        async with session() as http:
            api = Api(http, server.base)
            for poll, acked in ((unnamed, set(server_made)), (quiz, quiz_acked)):
                status, export = await api.call(
                    "GET", f"/api/v1/polls/{poll['id']}/export?format=json", headers=api.admin
                )
                assert status == 200, export
                assert {v["event_id"] for v in export["votes"]} == acked
                assert export["results"]["total_votes"] == len(acked)
        assert all(uuid.UUID(e).version == 7 for e in server_made)
        assert server.terminate() == 0
        figures.add(
            "clock jumps " + " ".join(_JUMPS) + ", kill -9 at -86400, restart at -172800",
            **result,
            server_made_ids=len(server_made),
            **stats,
        )
    finally:
        server.stop()


async def test_a_vote_changed_after_the_clock_went_back_is_the_one_counted(tmp_path: Path) -> None:
    clock = Clock(tmp_path)
    server = ServerProcess(tmp_path / "data", **clock.env())
    try:
        await start(server)
        async with session() as http:
            api = Api(http, server.base)
            room = await api.room()
            poll = await api.poll(room["id"], ["A", "B", "C"], allow_change=True)
            first, second, third = (o["id"] for o in poll["options"])
            voter = await api.join(room["code"])
            _, body = await api.vote(voter, poll["id"], [first])
            assert (await api.settled(voter, body["event_id"]))["status"] == "counted"
            await clock.jump("-3600")
            status, body = await api.vote(voter, poll["id"], [second])
            assert status == 202, body
            receipt = await api.settled(voter, body["event_id"])
            results = await api.results(poll["id"])
            assert receipt["status"] == "counted", receipt
            assert [o["votes"] for o in results["options"]] == [0, 1, 0]
        assert server.terminate() == 0
        # Restarted with the clock further back: the order of votes survives the restart.
        clock.set("-7200")
        await start(server)
        async with session() as http:
            api = Api(http, server.base)
            status, body = await api.vote(voter, poll["id"], [third])
            assert status == 202, body
            receipt = await api.settled(voter, body["event_id"])
            assert receipt["status"] == "counted", receipt
            results = await api.results(poll["id"])
            assert [o["votes"] for o in results["options"]] == [0, 0, 1]
        assert server.terminate() == 0
    finally:
        server.stop()


async def test_claims_held_at_a_kill_are_counted_after_the_clock_went_back(tmp_path: Path) -> None:
    """What kill -9 leaves when it lands between a worker's claim and its commit: claimed
    votes. If the clock then goes back (NTP correcting a laptop), their claim time lies in
    the future; the next start must still count them before it answers."""
    clock = Clock(tmp_path)
    server = ServerProcess(tmp_path / "data", **clock.env())
    try:
        await start(server)
        async with session() as http:
            api = Api(http, server.base)
            room = await api.room()
            poll = await api.poll(room["id"])
            voters = [await api.join(room["code"]) for _ in range(5)]
        assert server.terminate() == 0

        # Acknowledged votes (durable in the queue), claimed by a worker that then died.
        queue = VoteQueue(server.data_dir / "queue.db")
        option = poll["options"][0]["id"]
        votes = {str(uuid.uuid4()): v for v in voters}
        choice = kinds.Options((option,))
        queue.put_many(
            [(e, Entry(poll["id"], v["voter_id"], choice).payload()) for e, v in votes.items()]
        )
        assert len(queue.claim(100)) == len(votes)
        queue.close()

        clock.set("-3600")
        await start(server)
        async with session() as http:
            api = Api(http, server.base)
            for event_id, voter in votes.items():
                status, body = await api.call(
                    "GET", f"/api/v1/votes/{event_id}", headers=voter["headers"]
                )
                assert status == 200 and body["status"] == "counted", (status, body)
            assert (await api.results(poll["id"]))["total_votes"] == len(votes)
            # The voters' place is kept: a second vote is refused.
            status, body = await api.vote(voters[0], poll["id"], [option])
            assert status == 409 and body["error"]["code"] == "already_voted", body
        assert server.terminate() == 0
    finally:
        server.stop()
