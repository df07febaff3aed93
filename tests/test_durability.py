"""A real server process killed with kill -9 (or stopped with SIGTERM) in the middle of a vote
burst: after a restart every vote that got 202 is counted, and none twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from conftest import Api, ServerProcess

VOTERS = 400


async def _setup(api: Api) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    room = await api.room("Crash")
    polls = [await api.poll(room["id"], ["A", "B", "C"]) for _ in range(2)]
    voters = list(await asyncio.gather(*(api.join(room["code"]) for _ in range(VOTERS))))
    return polls, voters


async def _burst(
    api: Api,
    polls: list[dict[str, Any]],
    voters: list[dict[str, Any]],
    acked: dict[str, tuple[str, str, str]],
    stop_after: int,
    interrupt: Any,
) -> None:
    """Every voter votes in every poll; after `stop_after` acknowledgements, `interrupt()`."""
    done = asyncio.Event()

    async def one(voter: dict[str, Any], poll: dict[str, Any], n: int) -> None:
        option = poll["options"][n % 3]["id"]
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            status, body = await api.vote(voter, poll["id"], [option])
            if status == 202:
                acked[body["event_id"]] = (voter["voter_id"], poll["id"], option)
                if len(acked) >= stop_after and not done.is_set():
                    done.set()
                    interrupt()

    tasks = [one(v, p, i) for i, v in enumerate(voters) for p in polls]
    await asyncio.gather(*tasks)


async def _check(
    api: Api,
    polls: list[dict[str, Any]],
    voters: list[dict[str, Any]],
    acked: dict[str, tuple[str, str, str]],
) -> None:
    by_voter = {v["voter_id"]: v for v in voters}
    for event_id, (voter_id, _, _) in acked.items():
        receipt = await api.settled(by_voter[voter_id], event_id, timeout=30)
        assert receipt["status"] == "counted", receipt
    for poll in polls:
        status, export = await api.call(
            "GET", f"/api/v1/polls/{poll['id']}/export?format=json", headers=api.admin
        )
        assert status == 200
        counted = export["votes"]
        voter_ids = [v["voter_id"] for v in counted]
        assert len(voter_ids) == len(set(voter_ids)), "a voter counted twice"
        assert export["results"]["total_votes"] == len(counted)
        assert sum(o["votes"] for o in export["results"]["options"]) == len(counted)
        acked_here = {e for e, (_, p, _) in acked.items() if p == poll["id"]}
        assert acked_here <= {v["event_id"] for v in counted}
        for vote in counted:  # what was counted is what was sent
            if vote["event_id"] in acked:
                assert vote["option_ids"] == [acked[vote["event_id"]][2]]


async def test_kill_9_mid_burst_loses_no_acknowledged_vote(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    server.start()
    api = Api(http, server.base)
    polls, voters = await _setup(api)
    acked: dict[str, tuple[str, str, str]] = {}
    await _burst(api, polls, voters, acked, stop_after=VOTERS // 2, interrupt=server.kill)
    assert VOTERS // 2 <= len(acked) < 2 * VOTERS, "the kill landed outside the burst"
    server.start()
    await _check(api, polls, voters, acked)
    # After the restart the ledger knows who voted: a second vote is still refused.
    event_id, (voter_id, poll_id, option) = next(iter(acked.items()))
    voter = next(v for v in voters if v["voter_id"] == voter_id)
    status, body = await api.vote(voter, poll_id, [option])
    assert status == 409 and body["error"]["code"] == "already_voted"
    status, body = await api.vote(voter, poll_id, [option], event_id=event_id)
    assert status == 202


async def test_repeated_kill_9_cycles(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    server.start()
    api = Api(http, server.base)
    polls, voters = await _setup(api)
    acked: dict[str, tuple[str, str, str]] = {}
    for cycle in range(3):
        group = voters[cycle::3]
        await _burst(
            api, polls, group, acked, stop_after=len(acked) + len(group) // 2, interrupt=server.kill
        )
        server.start()
    await _check(api, polls, voters, acked)


async def test_sigterm_mid_burst_drains_and_exits_0(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    server.start()
    api = Api(http, server.base)
    polls, voters = await _setup(api)
    acked: dict[str, tuple[str, str, str]] = {}
    codes: list[int] = []

    def terminate() -> None:
        assert server.proc is not None
        server.proc.terminate()

    await _burst(api, polls, voters, acked, stop_after=VOTERS // 2, interrupt=terminate)
    assert server.proc is not None
    codes.append(await asyncio.to_thread(server.proc.wait, 30))
    assert codes == [0], server.log.read_text()[-3000:]
    server.start()
    await _check(api, polls, voters, acked)


async def test_live_results_from_the_real_server_process(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """`opus serve` runs on uvloop: the socket path must work there too, and SIGTERM closes
    open sockets with 1001 and still exits 0."""
    server.start()
    api = Api(http, server.base)
    room = await api.room()
    poll = await api.poll(room["id"])
    voters = list(await asyncio.gather(*(api.join(room["code"]) for _ in range(20))))
    async with http.ws_connect(f"{server.base}/ws?room={room['code']}") as ws:
        snapshot = await ws.receive_json(timeout=10)
        assert snapshot["type"] == "snapshot"
        for v in voters:
            await api.vote(v, poll["id"], [poll["options"][0]["id"]])
        total = 0
        while total < 20:
            message = await ws.receive_json(timeout=10)
            if message["type"] == "results":
                total = message["total_votes"]
        assert total == 20
        assert server.proc is not None
        server.proc.terminate()
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
    assert await asyncio.to_thread(server.proc.wait, 30) == 0


async def test_json_logs_are_one_object_per_line(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = ServerProcess(tmp_path / "data", OPUS_LOG_FORMAT="json")
    try:
        server.start()
        await Api(http, server.base).room("Logged")
        await asyncio.sleep(0.3)  # the relay logs the event
        assert server.terminate() == 0
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line]
    assert any("ROOM.CREATED" in entry["message"] for entry in lines)
    assert any("admin" in entry["message"].lower() for entry in lines)
    assert {"time", "level", "logger", "message"} <= set(lines[0])


async def test_notifications_lost_in_a_crash_after_the_relay_are_written_at_start(
    server: ServerProcess,
) -> None:
    """The relay marks an event sent once it hands it to the hub; a crash before the
    notifier's task wrote its notifications would lose them. What that crash leaves (the
    event sent, its notifications missing) is made here by hand, and the next start writes
    them: for the voters who had joined when it happened, not for one who came later."""
    import sqlite3

    server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base)
        room = await api.room()
        early = await api.join(room["code"])
        poll = await api.poll(room["id"])  # created, then opened: two notifications
        deadline = time.monotonic() + 10
        while True:  # the notifier writes them in its own task, just after
            status, inbox = await api.call("GET", "/api/v1/notifications", headers=early["headers"])
            if len(inbox["notifications"]) == 2:
                break
            assert time.monotonic() < deadline, inbox
            await asyncio.sleep(0.05)
    assert server.terminate() == 0
    db = sqlite3.connect(server.data_dir / "opus.db")
    with db:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone() == (0,)
        db.execute("DELETE FROM notifications")
    db.close()
    # A fan-out that finished is recorded as such: a restart does not write it again.
    server.start()
    async with aiohttp.ClientSession() as http:
        status, inbox = await Api(http, server.base).call(
            "GET", "/api/v1/notifications", headers=early["headers"]
        )
        assert status == 200 and inbox["notifications"] == []
    assert server.terminate() == 0
    db = sqlite3.connect(server.data_dir / "opus.db")
    with db:
        db.execute("DELETE FROM notified")  # the crash came before the fan-out's end
    db.close()
    server.start()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base)
        late = await api.join(room["code"])
        status, inbox = await api.call("GET", "/api/v1/notifications", headers=early["headers"])
        assert status == 200
        assert [n["type"] for n in inbox["notifications"]] == ["poll_opened", "poll_created"]
        assert inbox["notifications"][0]["source_id"] == poll["id"]
        status, inbox = await api.call("GET", "/api/v1/notifications", headers=late["headers"])
        assert status == 200 and inbox["notifications"] == []
    assert server.terminate() == 0
