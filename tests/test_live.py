"""Live results over real WebSockets: snapshot, coalescing, resume, slow consumers, limits,
poll life-cycle, notifications and the host feed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from conftest import ADMIN, Api
from opus.app import create_app
from opus.config import Settings
from opus.keys import BROADCASTER, DB, NOTIFIER


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str,
                timeout: float = 10.0) -> dict[str, Any]:
    """The next message of this type (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive_json(timeout=max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def _results_until(ws: aiohttp.ClientWebSocketResponse, total: int,
                         timeout: float = 15.0) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1]["total_votes"] < total:
        seen.append(await _next(ws, "results", deadline - time.monotonic()))
    return seen


async def test_snapshot_then_coalesced_results(api: Api, client: TestClient) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], ["Yes", "No"])
    async with client.ws_connect(f"/ws?room={room['code']}") as ws:
        snapshot = await _next(ws, "snapshot")
        assert snapshot["room"]["id"] == room["id"]
        assert snapshot["results"][0]["poll_id"] == poll["id"]
        assert snapshot["results"][0]["total_votes"] == 0
        voters = await asyncio.gather(*(api.join(room["code"]) for _ in range(120)))
        started = time.monotonic()
        answers = await asyncio.gather(
            *(api.vote(v, poll["id"], [poll["options"][i % 2]["id"]])
              for i, v in enumerate(voters))
        )
        assert {s for s, _ in answers} == {202}
        updates = await _results_until(ws, 120)
        # At most one update per 50 ms interval (default coalescing), and far fewer than votes.
        intervals = (time.monotonic() - started) / 0.05
        assert len(updates) <= intervals + 2 and len(updates) < 120, len(updates)
        last = updates[-1]
        assert last["total_votes"] == 120
        assert [o["votes"] for o in last["options"]] == [60, 60]
        seqs = [snapshot["seq"]] + [u["seq"] for u in updates]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_reconnect_gets_what_it_missed(api: Api, client: TestClient) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    async with client.ws_connect(f"/ws?room={room['id']}") as ws:
        first = await _next(ws, "snapshot")
    voters = await asyncio.gather(*(api.join(room["code"]) for _ in range(10)))
    for v in voters:
        await api.vote(v, poll["id"], [poll["options"][0]["id"]])
    await api.total_when(poll["id"], 10)
    async with client.ws_connect(f"/ws?room={room['id']}&seq={first['seq']}") as ws:
        again = await _next(ws, "snapshot")
        assert again["results"][0]["total_votes"] == 10
        assert again["seq"] > first["seq"]


def _raw_socket_that_never_reads(port: int, room: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws?room={room} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )
    return sock


def _client_text_frame(text: str) -> bytes:
    """A client-to-server text frame (RFC 6455: masked), for a socket without a client library."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("found_by", ["heartbeat", "send timeout"])
async def test_a_slow_watcher_does_not_hold_back_the_others(
    aiohttp_client: Any, settings: Settings, found_by: str
) -> None:
    # A peer that stops reading stops answering pings too: the heartbeat finds it. With the
    # heartbeat out of reach, the send timeout finds it once the kernel's buffers are full.
    if found_by == "heartbeat":
        settings = settings.replace(ws_heartbeat_s=1.0, ws_send_timeout_s=60.0)
    else:
        settings = settings.replace(ws_heartbeat_s=60.0, ws_send_timeout_s=1.0)
    client = await aiohttp_client(create_app(settings.replace(coalesce_ms=5.0)))
    broadcaster, server = client.app[BROADCASTER], client.server.runner.server
    api = Api(client)
    room = await api.room()
    # Long labels make each frame large, so a reader that stops fills its buffers fast.
    polls = [await api.poll(room["id"], [f"{i} " + "x" * 190 for i in range(30)])
             for _ in range(5)]
    stuck = _raw_socket_that_never_reads(client.port, room["code"])
    stuck_port = stuck.getsockname()[1]

    def held_by_server() -> bool:
        return any(h.transport is not None
                   and h.transport.get_extra_info("peername")[1] == stuck_port
                   for h in server.connections)

    try:
        async with client.ws_connect(f"/ws?room={room['code']}") as ws:
            # Like a browser, this watcher reads all the time (and so answers pings).
            seen: list[dict[str, Any]] = []

            async def read_all_the_time() -> None:
                async for message in ws:
                    seen.append(json.loads(message.data))

            reading = asyncio.create_task(read_all_the_time())
            deadline = time.monotonic() + 10
            while broadcaster.count < 2:  # both sockets are in before the votes
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            if found_by == "send timeout":
                # Each resume answers with a snapshot of about 70 KB: together more than the
                # kernel keeps for a socket (up to 4 MB here), so the server's own buffer fills.
                stuck.sendall(_client_text_frame('{"type": "resume"}') * 80)
            voters = await asyncio.gather(*(api.join(room["code"]) for _ in range(300)))
            poll = polls[0]
            for i, v in enumerate(voters):
                await api.vote(v, poll["id"], [poll["options"][i % 30]["id"]])
            # The watcher that reads stays connected, so the count cannot pass below 1: it
            # reaches 1 exactly when the stuck watcher is dropped.
            while broadcaster.count > 1:
                assert time.monotonic() < deadline, "the stuck watcher was never dropped"
                await asyncio.sleep(0.05)
            # Dropped means let go of: the connection and what was buffered for it.
            while held_by_server():
                assert time.monotonic() < deadline, "the stuck watcher's connection is held"
                await asyncio.sleep(0.05)
            while not seen or seen[-1].get("total_votes") != 300:
                assert time.monotonic() < deadline and not reading.done(), seen[-1:]
                await asyncio.sleep(0.05)
            assert not ws.closed and broadcaster.count == 1
            reading.cancel()
    finally:
        stuck.close()


async def test_sockets_beyond_the_limit_are_refused_with_a_reason(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.replace(max_sockets=2)))
    api = Api(client)
    room = await api.room()
    async with client.ws_connect(f"/ws?room={room['code']}") as a, \
            client.ws_connect(f"/ws?room={room['code']}") as b:
        await _next(a, "snapshot")
        await _next(b, "snapshot")
        async with client.ws_connect(f"/ws?room={room['code']}") as c:
            message = await c.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert message.data == 1013 and "full" in message.extra


async def test_bad_socket_requests_get_clear_errors(api: Api, client: TestClient) -> None:
    for path, status in (("/ws", 400), ("/ws?room=NOPE-NOPE", 404),
                         ("/ws?room=x&token=forged", 404)):
        async with client.get(path) as r:
            assert r.status == status
            assert "error" in await r.json()
    room = await api.room()
    async with client.get(f"/ws?room={room['id']}&token=forged") as r:
        assert r.status == 401


async def test_poll_life_cycle_reaches_watchers(api: Api, client: TestClient) -> None:
    room = await api.room()
    async with client.ws_connect(f"/ws?room={room['code']}") as ws:
        await _next(ws, "snapshot")
        poll = await api.poll(room["id"])  # created as a draft, then opened
        opened = await _next(ws, "poll")
        assert (opened["poll_id"], opened["status"]) == (poll["id"], "open")
        await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
        closed = await _next(ws, "poll")
        assert (closed["poll_id"], closed["status"]) == (poll["id"], "closed")
        final = await _next(ws, "results")
        assert final["status"] == "closed"


async def test_hidden_results_do_not_reach_screens(api: Api, client: TestClient) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], hide_results=True)
    voter = await api.join(room["code"])
    async with client.ws_connect(f"/ws?room={room['code']}") as screen, \
            client.ws_connect(f"/ws?room={room['code']}&token={ADMIN}") as host:
        assert (await _next(screen, "snapshot"))["results"] == []
        assert len((await _next(host, "snapshot"))["results"]) == 1
        await api.vote(voter, poll["id"], [poll["options"][0]["id"]])
        # The poll's opening can still be on its way and come first, with 0 votes.
        assert (await _results_until(host, 1))[-1]["total_votes"] == 1
        await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
        # the first results a screen sees are the final ones
        assert (await _next(screen, "results"))["status"] == "closed"


async def test_notifications_live_offline_once_and_after_restart(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    online, offline = await api.join(room["code"]), await api.join(room["code"])
    async with client.ws_connect(f"/ws?room={room['code']}&token={online['voter_token']}") as ws:
        await _next(ws, "snapshot")
        draft = await api.poll(room["id"], ["A", "B"], question="Quiz answer?", open=False)
        created = (await _next(ws, "notification"))["notification"]
        assert (created["type"], created["source_id"]) == ("poll_created", draft["id"])
        assert "Quiz answer?" not in json.dumps(created)  # a draft's question stays secret
        poll = await api.poll(room["id"], ["A", "B"], question="Lunch?")
        assert (await _next(ws, "notification"))["notification"]["type"] == "poll_created"
        pushed = await _next(ws, "notification")
        assert pushed["notification"]["type"] == "poll_opened"
        assert pushed["notification"]["message"] == "Lunch?"
        await api.vote(online, poll["id"], [poll["options"][1]["id"]])
        await api.total_when(poll["id"], 1)
        await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
        closed = (await _next(ws, "notification"))["notification"]
        assert closed["type"] == "poll_closed" and "B 1 (100%)" in closed["message"]
        assert closed["data"]["total_votes"] == 1

    # The offline voter finds the poll notices later, and not the closed one (no vote).
    status, inbox = await api.call("GET", "/api/v1/notifications", headers=offline["headers"])
    assert status == 200
    assert [n["type"] for n in inbox["notifications"]] == [
        "poll_opened", "poll_created", "poll_created"]
    assert inbox["unread"] == 3

    # The same event delivered twice makes no second notification.
    rows = await client.app[DB].fetchall(
        "SELECT envelope FROM outbox WHERE event_type = 'POLL.CLOSED'")
    assert await client.app[NOTIFIER].fan_out(json.loads(rows[0]["envelope"])) == 0
    status, inbox = await api.call("GET", "/api/v1/notifications", headers=online["headers"])
    assert [n["type"] for n in inbox["notifications"]] == [
        "poll_closed", "poll_opened", "poll_created", "poll_created"]

    first = inbox["notifications"][0]["id"]
    status, _ = await api.call("POST", f"/api/v1/notifications/{first}/read",
                               headers=online["headers"])
    assert status == 200
    status, body = await api.call("POST", f"/api/v1/notifications/{first}/read",
                                  headers=offline["headers"])
    assert status == 404 and body["error"]["code"] == "notification_not_found"
    await client.close()

    # Read state survives a restart on the same data dir.
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    status, inbox = await api.call("GET", "/api/v1/notifications", headers=online["headers"])
    assert [n["is_read"] for n in inbox["notifications"]] == [True, False, False, False]
    status, body = await api.call("POST", "/api/v1/notifications/read-all",
                                  headers=online["headers"])
    assert body == {"marked_read": 3}


async def test_host_feed_shows_the_hall_at_a_glance(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.replace(activity_interval_s=0.2)))
    api = Api(client)
    room = await api.room()
    poll = await api.poll(room["id"])
    voter = await api.join(room["code"])
    async with client.ws_connect(f"/ws?room={room['id']}&token={ADMIN}") as host, \
            client.ws_connect(f"/ws?room={room['id']}&token={voter['voter_token']}"):
        await api.vote(voter, poll["id"], [poll["options"][0]["id"]])
        await api.total_when(poll["id"], 1)
        deadline = time.monotonic() + 5
        while True:
            feed = await _next(host, "activity")
            if feed["votes_per_minute"] == 1 or time.monotonic() > deadline:
                break
        assert feed["room_id"] == room["id"]
        assert feed["participants_online"] == 1 and feed["watchers"] == 2
        assert feed["votes_per_minute"] == 1 and feed["queue_depth"] == 0
        assert feed["p99_ms"] > 0
