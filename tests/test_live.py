"""Live results over real WebSockets: snapshot, coalescing, resume, slow consumers, limits,
poll life-cycle, notifications and the host feed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from conftest import ADMIN, Api, ServerProcess
from opus import events
from opus.app import create_app
from opus.config import Settings
from opus.keys import BROADCASTER, DB, NOTIFIER


async def _next(
    ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The next message of this type (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive_json(timeout=max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def _results_until(
    ws: aiohttp.ClientWebSocketResponse, total: int, timeout: float = 15.0
) -> list[dict[str, Any]]:
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
            *(api.vote(v, poll["id"], [poll["options"][i % 2]["id"]]) for i, v in enumerate(voters))
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
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return sock


def _client_text_frame(text: str) -> bytes:
    """A client-to-server text frame (RFC 6455: masked), for a socket without a client library."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    return (
        bytes((0x81, 0x80 | len(payload)))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


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
    poll = await api.poll(room["id"], [f"{i} " + "x" * 190 for i in range(30)])
    stuck = _raw_socket_that_never_reads(client.port, room["code"])
    stuck_port = stuck.getsockname()[1]

    def held_by_server() -> bool:
        return any(
            h.transport is not None and h.transport.get_extra_info("peername")[1] == stuck_port
            for h in server.connections
        )

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
                # The kernel keeps up to 4 MB for a socket here, more than this test sends: as
                # on a phone behind a slow link, it keeps little, so the server's own buffer
                # fills and the send timeout has something to time.
                (handler,) = [
                    h
                    for h in server.connections
                    if h.transport is not None
                    and h.transport.get_extra_info("peername")[1] == stuck_port
                ]
                assert handler.transport is not None
                handler.transport.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
                )
            voters = await asyncio.gather(*(api.join(room["code"]) for _ in range(300)))
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
    async with (
        client.ws_connect(f"/ws?room={room['code']}") as a,
        client.ws_connect(f"/ws?room={room['code']}") as b,
    ):
        await _next(a, "snapshot")
        await _next(b, "snapshot")
        async with client.ws_connect(f"/ws?room={room['code']}") as c:
            message = await c.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert message.data == 1013 and "full" in message.extra


async def test_sockets_from_one_address_are_capped_and_others_still_connect(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(
        create_app(settings.replace(max_sockets_per_address=2, trusted_proxies="127.0.0.1"))
    )
    room = await Api(client).room()
    url = f"/ws?room={room['code']}"
    laptop = {"X-Forwarded-For": "10.0.0.5"}
    async with (
        client.ws_connect(url, headers=laptop) as a,
        client.ws_connect(url, headers=laptop) as b,
    ):
        await _next(a, "snapshot")
        await _next(b, "snapshot")
        async with client.ws_connect(url, headers=laptop) as c:
            message = await c.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert message.data == 4029 and "too many sockets" in message.extra
        async with client.ws_connect(url, headers={"X-Forwarded-For": "10.0.0.6"}) as phone:
            await _next(phone, "snapshot")  # the next phone in the hall still gets in
    async with client.ws_connect(url, headers=laptop) as again:
        await _next(again, "snapshot")  # the laptop's places came back when it closed


async def test_a_resume_flood_gets_one_snapshot_at_a_time_and_leaves_no_memory_behind(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    server.start()
    api = Api(http, server.base)
    room = await api.room()
    for _ in range(5):  # a room whose snapshot is large (about 70 KB)
        await api.poll(room["id"], [f"{i} " + "x" * 190 for i in range(30)])
    assert server.proc is not None

    def rss_mb() -> float:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()  # type: ignore[union-attr]
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    async with http.ws_connect(f"{server.base}/ws?room={room['code']}") as warm:
        await _next(warm, "snapshot")
    baseline = rss_mb()
    # A client that never reads asks for a thousand snapshots (23 KB of requests).
    flood = _raw_socket_that_never_reads(server.port, room["code"])
    flood.sendall(_client_text_frame('{"type": "resume"}') * 1000)
    await asyncio.sleep(2)
    during = rss_mb()
    flood.close()
    # A client that reads gets at most one snapshot a second for its resumes.
    async with http.ws_connect(f"{server.base}/ws?room={room['code']}") as reader:
        await _next(reader, "snapshot")
        for _ in range(200):
            await reader.send_str('{"type": "resume"}')
        started, snapshots = time.monotonic(), 0
        with contextlib.suppress(TimeoutError):
            while True:
                message = await reader.receive_json(timeout=2.5 - (time.monotonic() - started))
                snapshots += message["type"] == "snapshot"
    assert snapshots <= 3, snapshots
    await asyncio.sleep(1)
    after = rss_mb()
    assert during - baseline < 10 and after - baseline < 10, (baseline, during, after)


async def test_bad_socket_requests_get_clear_errors(api: Api, client: TestClient) -> None:
    for path, status in (
        ("/ws", 400),
        ("/ws?room=NOPE-NOPE", 404),
        ("/ws?room=x&token=forged", 404),
    ):
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
        # A poll frame carries the poll as it is when the event is handled: the creation's
        # frame may already say "open" (then the opening's says it again) on a busy machine.
        closed = await _next(ws, "poll")
        while closed["status"] == "open":
            closed = await _next(ws, "poll")
        assert (closed["poll_id"], closed["status"]) == (poll["id"], "closed")
        final = await _next(ws, "results")
        assert final["status"] == "closed"


async def test_hidden_results_do_not_reach_screens(api: Api, client: TestClient) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], hide_results=True)
    voter = await api.join(room["code"])
    async with (
        client.ws_connect(f"/ws?room={room['code']}") as screen,
        client.ws_connect(
            f"/ws?room={room['code']}", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as host,
    ):
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
        "poll_opened",
        "poll_created",
        "poll_created",
    ]
    assert inbox["unread"] == 3

    # The same event delivered twice makes no second notification.
    rows = await client.app[DB].fetchall(
        "SELECT envelope FROM outbox WHERE event_type = 'POLL.CLOSED'"
    )
    assert await client.app[NOTIFIER].fan_out(events.decode(rows[0]["envelope"])) == 0
    status, inbox = await api.call("GET", "/api/v1/notifications", headers=online["headers"])
    assert [n["type"] for n in inbox["notifications"]] == [
        "poll_closed",
        "poll_opened",
        "poll_created",
        "poll_created",
    ]

    first = inbox["notifications"][0]["id"]
    status, _ = await api.call(
        "POST", f"/api/v1/notifications/{first}/read", headers=online["headers"]
    )
    assert status == 200
    status, body = await api.call(
        "POST", f"/api/v1/notifications/{first}/read", headers=offline["headers"]
    )
    assert status == 404 and body["error"]["code"] == "notification_not_found"
    await client.close()

    # Read state survives a restart on the same data dir.
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    status, inbox = await api.call("GET", "/api/v1/notifications", headers=online["headers"])
    assert [n["is_read"] for n in inbox["notifications"]] == [True, False, False, False]
    status, body = await api.call(
        "POST", "/api/v1/notifications/read-all", headers=online["headers"]
    )
    assert body == {"marked_read": 3}


async def test_host_feed_shows_the_hall_at_a_glance(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.replace(activity_interval_s=0.2)))
    api = Api(client)
    room = await api.room()
    poll = await api.poll(room["id"])
    voter = await api.join(room["code"])
    async with (
        client.ws_connect(
            f"/ws?room={room['id']}", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as host,
        client.ws_connect(f"/ws?room={room['id']}&token={voter['voter_token']}"),
    ):
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


async def test_a_slow_subscriber_holds_back_neither_the_relay_nor_the_others() -> None:
    """The hub hands events over: a subscriber stuck on one event (a slow SQLite read, a
    notification per voter) does not stop publishing or the other subscribers, and gets its
    events in order once it moves again."""
    from opus.events import POLL_OPENED, POLL_VOTE_CAST, make
    from opus.hub import Hub

    hub = Hub()
    release = asyncio.Event()
    slow_seen: list[str] = []
    fast_seen: list[str] = []

    async def slow(event: Any) -> None:
        await release.wait()
        slow_seen.append(event.event_id)

    async def fast(event: Any) -> None:
        fast_seen.append(event.event_id)

    hub.subscribe("slow", slow, [POLL_VOTE_CAST, POLL_OPENED])
    hub.subscribe("fast", fast, [POLL_VOTE_CAST])
    vote = {"room_id": "r", "voter_id": "v", "option_ids": []}
    sent = [
        make(POLL_VOTE_CAST, {**vote, "poll_id": str(i)}, source="t", actor="v") for i in range(5)
    ]
    opened = make(
        POLL_OPENED, {"poll_id": "p", "room_id": "r", "status": "open"}, source="t", actor="t"
    )
    for event in [*sent, opened]:
        assert hub.publish(event)  # returns at once: nothing awaited a subscriber
    assert not hub.publish(sent[0])  # a duplicate is dropped
    deadline = time.monotonic() + 5
    while len(fast_seen) < len(sent):
        assert time.monotonic() < deadline, fast_seen
        await asyncio.sleep(0.01)
    assert fast_seen == [e.event_id for e in sent]  # only the types it asked for
    assert slow_seen == [] and hub.backlog() > 0
    release.set()
    await hub.close()
    assert slow_seen == [e.event_id for e in [*sent, opened]]


async def test_the_console_feed_stays_the_hosts_in_a_browser_that_also_voted(
    api: Api, client: TestClient
) -> None:
    room = await api.room()
    draft = await api.poll(room["id"], open=False)  # only the host sees drafts
    async with client.get("/host/login") as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert csrf is not None
    origin = str(client.make_url("")).rstrip("/")
    async with client.post(
        "/host/login",
        data={"csrf": csrf.group(1), "token": ADMIN},
        headers={"Origin": origin},
        allow_redirects=False,
    ) as r:
        assert r.status == 303
    async with client.post("/api/v1/join", json={"code": room["code"]}) as r:
        assert r.status == 201  # this browser now holds a voter cookie as well
    async with client.ws_connect(f"/host/live?room={room['id']}", headers={"Origin": origin}) as ws:
        snapshot = await _next(ws, "snapshot")
    assert [p["id"] for p in snapshot["room"]["polls"]] == [draft["id"]]
