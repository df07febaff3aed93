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
from opus import events
from opus.app import create_app
from opus.cli import main
from opus.config import Settings
from opus.keys import QUEUE
from opus.kinds import Options
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
    payload = Entry(poll["id"], voter["voter_id"], Options((poll["options"][0]["id"],))).payload()
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
    payload = Entry(poll["id"], voter["voter_id"], Options((b,))).payload()
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
    payload = Entry(poll["id"], voter["voter_id"], Options((poll["options"][2]["id"],)))
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


async def test_votes_and_events_written_before_the_upgrade_are_still_read(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Queued votes and outbox events were JSON text before they became typed MessagePack.
    A box upgraded with some of each still waiting counts those votes and relays those
    events, the same as if it had never stopped."""
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    choice = await api.poll(room["id"])
    multi = await api.poll(room["id"], kind="multiple")
    cloud = await api.poll(room["id"], kind="text", options=None)
    qa = await api.poll(room["id"], kind="qa", options=None)
    later = await api.poll(room["id"], open=False)
    voters = [await api.join(room["code"]) for _ in range(3)]
    await client.close()

    # What the old version wrote, byte for byte: the vote as JSON text, the event as the JSON
    # envelope with its kind under `event_type`.
    m = multi["options"]
    old_votes = {
        "0190aaaa-0000-7000-8000-000000000101": (choice["id"], 0, [choice["options"][1]["id"]]),
        "0190aaaa-0000-7000-8000-000000000102": (multi["id"], 1, sorted([m[0]["id"], m[2]["id"]])),
        "0190aaaa-0000-7000-8000-000000000103": (cloud["id"], 2, {"t": "old format"}),
        "0190aaaa-0000-7000-8000-000000000104": (qa["id"], 1, {"q": "Still asked?"}),
    }
    with closing(sqlite3.connect(settings.data_dir / "queue.db")) as db, db:
        for n, (event_id, (poll_id, who, old)) in enumerate(old_votes.items()):
            data = json.dumps(
                {"p": poll_id, "v": voters[who]["voter_id"], "c": old}, separators=(",", ":")
            )
            db.execute(
                'INSERT INTO "Queue" (data, message_id, idempotency_key, status, in_time)'
                " VALUES (?, ?, ?, 0, ?)",
                (data, f"0190aaaa-0000-7000-8000-0000000002{n:02}", event_id, time.time_ns()),
            )
    opened = {
        "event_id": "0190aaaa-0000-7000-8000-000000000301",
        "event_type": "POLL.OPENED",
        "timestamp": events.now_iso(),
        "source": "old-box",
        "actor": "host",
        "data": {"poll_id": later["id"], "room_id": room["id"], "status": "open"},
    }
    with closing(sqlite3.connect(settings.db_path)) as db, db:  # the change and its event
        db.execute(
            "UPDATE polls SET status = 'open', opened_at = ? WHERE id = ?",
            (opened["timestamp"], later["id"]),
        )
        db.execute(
            "INSERT INTO outbox (event_id, event_type, envelope, created_at) VALUES (?, ?, ?, ?)",
            (opened["event_id"], opened["event_type"], json.dumps(opened), events.now_iso()),
        )

    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    for event_id, (_, who, _) in old_votes.items():
        receipt = await api.settled(voters[who], event_id)
        assert receipt["status"] == "counted", receipt
    assert [o["votes"] for o in (await api.results(choice["id"]))["options"]] == [0, 1, 0]
    assert [o["votes"] for o in (await api.results(multi["id"]))["options"]] == [1, 0, 1]
    words = (await api.results(cloud["id"]))["words"]
    assert {w["word"]: w["count"] for w in words} == {"old format": 1}
    assert [q["text"] for q in (await api.results(qa["id"]))["questions"]] == ["Still asked?"]
    # The ledger knows the old votes: a retry of one is the same vote, a changed one is not.
    event_id = "0190aaaa-0000-7000-8000-000000000101"
    status, body = await api.vote(
        voters[0], choice["id"], [choice["options"][1]["id"]], event_id=event_id
    )
    assert (status, body["event_id"]) == (202, event_id)
    status, body = await api.vote(
        voters[0], choice["id"], [choice["options"][2]["id"]], event_id=event_id
    )
    assert (status, body["error"]["code"]) == (409, "event_id_conflict")

    async def told() -> bool:
        """The old POLL.OPENED event was relayed: each voter is told that the poll is open."""
        _, inbox = await api.call("GET", "/api/v1/notifications", headers=voters[2]["headers"])
        return any(
            n["type"] == "poll_opened" and n["source_id"] == later["id"]
            for n in inbox["notifications"]
        )

    await _wait(told)


async def test_batches_are_sized_to_the_loop_budget_and_every_vote_still_counts(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """A budget so small that one vote fills it (`worker_budget_ms`): the workers claim one
    vote at a time, and a burst of votes is still counted, each once."""
    settings = Settings(
        data_dir=tmp_path / "data",
        admin_token="test-admin-token",
        worker_budget_ms=0.001,
        worker_linger_ms=0,
    )
    api = Api(await aiohttp_client(create_app(settings)))
    room = await api.room()
    poll = await api.poll(room["id"])
    options = [o["id"] for o in poll["options"]]
    voters = [await api.join(room["code"]) for _ in range(40)]
    answers = await asyncio.gather(
        *(api.vote(v, poll["id"], [options[i % 3]]) for i, v in enumerate(voters))
    )
    assert [status for status, _ in answers] == [202] * 40
    results = await api.total_when(poll["id"], 40)
    assert [o["votes"] for o in results["options"]] == [14, 13, 13]
    # A batch is counted in the results once committed; its size is observed after its fsync
    # (in a thread) and its acknowledgement: the last one may still be on its way.
    deadline = time.monotonic() + 10
    while True:
        _, metrics = await api.call("GET", "/metrics", headers=api.admin)
        sizes = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in metrics.splitlines()
            if line.startswith("opus_worker_batch_size_")
        }
        if sizes["opus_worker_batch_size_sum"] >= 40 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert sizes["opus_worker_batch_size_sum"] == sizes["opus_worker_batch_size_count"] == 40
