"""Workers: re-delivery changes nothing, the second layer against double votes, retries and the
failed (dead-letter) state, expired claims, and the `opus queue` commands."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from conftest import Api
from opus.app import create_app
from opus.cli import main
from opus.config import Settings
from opus.keys import QUEUE
from opus.ledger import Entry


async def _wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _sql(settings: Settings, statement: str, *params: Any) -> list[Any]:
    """A statement from outside the server, as an operator's sqlite3 shell would run it. In a
    thread: blocking the event loop would stall the server's own transaction mid-way."""

    def run() -> list[Any]:
        with closing(sqlite3.connect(settings.db_path, timeout=30)) as db:
            return db.execute(statement, params).fetchall()

    return await asyncio.to_thread(run)


async def _queue_idle(client: TestClient) -> bool:
    stats = await asyncio.to_thread(client.app[QUEUE].stats)
    return stats["ready"] == 0 and stats["claimed"] == 0


async def test_a_redelivered_vote_changes_nothing(api: Api, client: TestClient) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    voter = await api.join(room["code"])
    _, body = await api.vote(voter, poll["id"], [poll["options"][0]["id"]])
    assert (await api.settled(voter, body["event_id"]))["status"] == "counted"
    # The message comes again (as after a crash between the SQLite commit and the queue ack):
    queue = client.app[QUEUE]
    queue.prune()
    payload = Entry(poll["id"], voter["voter_id"], json.dumps([poll["options"][0]["id"]])).payload()
    queue.put_many([(body["event_id"], payload)])
    await _wait(lambda: _queue_idle(client))
    assert (await asyncio.to_thread(queue.stats))["done"] == 1
    assert (await api.results(poll["id"]))["total_votes"] == 1
    assert (await api.receipt(voter, body["event_id"]))["status"] == "counted"


async def test_the_database_refuses_a_second_vote_that_slipped_past(
    api: Api, client: TestClient, settings: Settings
) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], ["A", "B"])
    a, b = (o["id"] for o in poll["options"])
    voter = await api.join(room["code"])
    _, first = await api.vote(voter, poll["id"], [a])
    await api.settled(voter, first["event_id"])
    # A second vote that never met the in-memory check (put straight into the queue):
    sneaky = "0190aaaa-0000-7000-8000-000000000001"
    payload = Entry(poll["id"], voter["voter_id"], json.dumps([b])).payload()
    client.app[QUEUE].put_many([(sneaky, payload)])
    await _wait(lambda: _queue_idle(client))
    results = await api.results(poll["id"])
    assert results["total_votes"] == 1 and [o["votes"] for o in results["options"]] == [1, 0]
    rows = await _sql(
        settings, "SELECT status, reason FROM processed_events WHERE event_id = ?", sneaky
    )
    assert rows == [("rejected", "already_voted")]


async def test_a_vote_that_keeps_failing_is_parked_then_retried(
    aiohttp_client: Any, settings: Settings
) -> None:
    settings = settings.replace(max_attempts=3)
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    poll = await api.poll(room["id"])
    poisoned, healthy = await api.join(room["code"]), await api.join(room["code"])
    # A real SQLite failure for one voter's vote, as a full or broken disk would give.
    await _sql(
        settings,
        "CREATE TRIGGER poison BEFORE INSERT ON votes WHEN NEW.voter_id = '"
        + poisoned["voter_id"]
        + "' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END",
    )
    option = poll["options"][0]["id"]
    _, bad = await api.vote(poisoned, poll["id"], [option])
    _, good = await api.vote(healthy, poll["id"], [option])
    assert (await api.settled(healthy, good["event_id"]))["status"] == "counted"

    async def parked() -> bool:
        return (await asyncio.to_thread(client.app[QUEUE].stats))["failed"] == 1

    await _wait(parked)
    assert (await api.receipt(poisoned, bad["event_id"]))["status"] == "queued"
    runner = CliRunner()
    data_dir = ["--data-dir", str(settings.data_dir)]
    listed = await asyncio.to_thread(runner.invoke, main, ["queue", "failed", *data_dir])
    assert listed.exit_code == 0, listed.output
    assert bad["event_id"] in listed.output and "attempts=3" in listed.output
    assert "disk trouble" in listed.output

    await _sql(settings, "DROP TRIGGER poison")
    retried = await asyncio.to_thread(runner.invoke, main, ["queue", "retry", "--all", *data_dir])
    assert retried.exit_code == 0 and "Returned 1 message" in retried.output
    assert (await api.settled(poisoned, bad["event_id"]))["status"] == "counted"
    assert (await api.results(poll["id"]))["total_votes"] == 2
    stats = await asyncio.to_thread(runner.invoke, main, ["queue", "stats", *data_dir])
    assert "failed   0" in stats.output and "done     2" in stats.output


async def test_claims_of_a_stalled_worker_go_back_to_the_queue(
    aiohttp_client: Any, settings: Settings
) -> None:
    settings = settings.replace(claim_timeout_s=1.0, workers=1)
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    poll = await api.poll(room["id"])
    voter = await api.join(room["code"])
    queue = client.app[QUEUE]
    payload = Entry(poll["id"], voter["voter_id"], json.dumps([poll["options"][2]["id"]]))
    event_id = "0190aaaa-0000-7000-8000-000000000002"

    def put_and_claim() -> int:
        # A worker that claims the vote and then stalls forever (it never acknowledges)...
        queue.put_many([(event_id, payload.payload())])
        return len(queue.claim(10))

    assert put_and_claim() == 1
    assert (await asyncio.to_thread(queue.stats))["claimed"] == 1
    assert (await api.results(poll["id"]))["total_votes"] == 0
    # ...is given back after the claim timeout, and counted.
    assert (await api.total_when(poll["id"], 1, timeout=10))["total_votes"] == 1


def test_queue_commands_need_a_data_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["queue", "stats", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code != 0 and "No queue" in result.output
    result = CliRunner().invoke(main, ["queue", "retry", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0


def test_the_group_commit_keeps_the_first_data_for_a_key(tmp_path: Path) -> None:
    from opus.queue import DuplicateKey, VoteQueue

    queue = VoteQueue(tmp_path / "queue.db")
    try:
        assert queue.put_many([("e1", "first"), ("e2", "other")]) == [None, None]
        outcome = queue.put_many([("e1", "first"), ("e1x", "new"), ("e2", "changed")])
        assert outcome[:2] == [None, None] and isinstance(outcome[2], DuplicateKey)
        claims = {c.event_id: c.data for c in queue.claim(10)}
        assert claims == {"e1": "first", "e2": "other", "e1x": "new"}
    finally:
        queue.close()
