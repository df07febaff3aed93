"""Bad clients on real sockets: slow ones holding connections open a byte at a time, bodies
that never fully arrive, garbage instead of HTTP, WebSocket frames over the size limit, and a
flood of connections opened and closed at once. While each goes on, ordinary votes are still
answered 202; after each, /healthz and votes answer, and every acknowledged vote is counted
once (nothing half-sent is)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from conftest import Api, ServerProcess
from faults.conftest import Figures, Sizes
from faults.harness import Campaign, session, start

_VOTERS = 60  # ordinary voters, in two rounds: during the fault and after it


@pytest.fixture
async def campaign(tmp_path: Path) -> AsyncIterator[Campaign]:
    server = ServerProcess(tmp_path / "data")
    await start(server)
    try:
        campaign = Campaign(server)
        await campaign.setup(2, _VOTERS)
        yield campaign
        assert server.terminate() == 0, server.log.read_text()[-3000:]
    finally:
        server.stop()


async def during(
    campaign: Campaign, sizes: Sizes, fault: Callable[[], Awaitable[dict[str, int]]]
) -> dict[str, int]:
    """Run `fault` while half the ballots are sent (every one must be answered 202), then
    check the server still serves and send the other half, and reconcile."""
    half = len(campaign.ballots) // 2
    first, second = campaign.ballots[:half], campaign.ballots[half:]

    async def votes() -> None:
        await asyncio.sleep(0.5)  # the fault is under way
        outcome = await campaign.send(first, sizes.concurrency)
        assert outcome.acked == len(first), outcome.statuses

    found, _ = await asyncio.gather(fault(), votes())
    async with session() as http:
        status, body = await Api(http, campaign.server.base).call("GET", "/healthz")
        assert status == 200, body
    outcome = await campaign.send(second, sizes.concurrency)
    assert outcome.acked == len(second), outcome.statuses
    result = await campaign.reconcile(complete=True)
    assert result["counted_unacked"] == 0 and result["processed_rejected"] == 0
    assert campaign.server.proc is not None and campaign.server.proc.poll() is None
    return {**found, **result}


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sends until it closes the connection, or None if it keeps it open
    for `timeout` seconds."""
    answer = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                answer += chunk
    except TimeoutError:  # before OSError: TimeoutError is one
        return None
    except (ConnectionError, OSError):
        pass
    return answer


async def test_slow_clients_holding_connections_do_not_stop_votes(
    campaign: Campaign, sizes: Sizes, figures: Figures
) -> None:
    """Slowloris: many connections that send their request headers a byte at a time."""
    port = campaign.server.port
    poll_id = campaign.polls[0]["id"]
    # Headers that take longer to drip than the server waits for a request (75 s).
    request = (
        f"POST /api/v1/polls/{poll_id}/votes HTTP/1.1\r\nHost: opus\r\nX-Padding: {'a' * 200}\r\n"
    ).encode()
    stop, all_closed = asyncio.Event(), asyncio.Event()
    outcome: Counter[str] = Counter()

    async def slow_client() -> None:
        reader, writer = await connect(port)
        try:
            for i in range(len(request)):
                writer.write(request[i : i + 1])
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
                if stop.is_set():
                    outcome["cut by the client"] += 1
                    return
                if reader.at_eof():
                    break
            outcome["closed by the server"] += 1
        except (ConnectionError, OSError):
            outcome["closed by the server"] += 1
        finally:
            writer.close()
            if outcome["closed by the server"] == sizes.slow_clients:
                all_closed.set()

    async def fault() -> dict[str, int]:
        clients = [asyncio.create_task(slow_client()) for _ in range(sizes.slow_clients)]
        await asyncio.sleep(3)  # votes flow meanwhile
        if sizes.full:
            # The server drops a connection whose request has not arrived after its
            # keep-alive timeout (75 s): wait for that, generously.
            await asyncio.wait_for(all_closed.wait(), 240)
        stop.set()
        await asyncio.gather(*clients)
        return {"slow_clients": sizes.slow_clients, **outcome}

    figures.add("slowloris", **await during(campaign, sizes, fault))


async def test_half_sent_bodies_are_never_counted(
    campaign: Campaign, sizes: Sizes, figures: Figures
) -> None:
    """Requests that promise a body and send part of it: then close, or just stall."""
    port = campaign.server.port
    poll = campaign.polls[0]
    async with session() as http:
        api = Api(http, campaign.server.base)
        partial_voters = [await api.join(campaign.room["code"]) for _ in range(10)]
    sent: list[tuple[dict[str, str], str]] = []
    outcome: Counter[str] = Counter()

    async def half_body(i: int) -> None:
        voter = partial_voters[i % len(partial_voters)]
        event_id = str(uuid.uuid4())
        sent.append((voter, event_id))
        body = json.dumps({"option_ids": [poll["options"][0]["id"]], "event_id": event_id}).encode()
        head = (
            f"POST /api/v1/polls/{poll['id']}/votes HTTP/1.1\r\nHost: opus\r\n"
            f"Authorization: Bearer {voter['voter_token']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n"
            "\r\n"
        ).encode()
        reader, writer = await connect(port)
        try:
            writer.write(head + body)  # 100 bytes short: the server waits for them
            await writer.drain()
            if i % 2:
                await asyncio.sleep(random.uniform(0, 1))
                outcome["closed half-way"] += 1
                return
            # The server gives up on the body (after 15 s): 408, and the connection closed.
            answer = await until_closed(reader, 120)
            assert answer is not None, "a stalled body held its connection for 2 minutes"
            assert answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer, answer
            outcome["stalled, answered 408 and closed"] += 1
        except (ConnectionError, OSError):
            outcome["reset"] += 1
        finally:
            writer.close()

    async def fault() -> dict[str, int]:
        await asyncio.gather(*(half_body(i) for i in range(sizes.half_bodies)))
        return {"half_bodies": sizes.half_bodies, **outcome}

    found = await during(campaign, sizes, fault)
    async with session() as http:
        for voter, event_id in sent:
            async with http.get(
                f"{campaign.server.base}/api/v1/votes/{event_id}", headers=voter["headers"]
            ) as answer:
                assert answer.status == 404, "a vote whose body never arrived was kept"
        for voter in partial_voters:  # and those voters may still vote, once
            status, body = await Api(http, campaign.server.base).vote(
                voter, poll["id"], [poll["options"][0]["id"]]
            )
            assert status == 202, body
    figures.add("half-sent bodies", **found)


def garbage_payloads(n: int, poll_id: str) -> list[bytes]:
    """Random bytes, and things that look almost like HTTP."""
    rng = random.Random(n)
    almost = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(200),  # a TLS hello
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /api/v1/join HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/v1/join HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"b" * 20000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: \x00\x01\x02\r\n\r\n",
        f"POST /api/v1/polls/{poll_id}/votes HTTP/1.1\r\nContent-Length: 9\r\n\r\n"
        '{"option'.encode(),
        b"\r\n" * 1000,
    ]
    return [
        almost[i // 2 % len(almost)] if i % 2 else rng.randbytes(rng.randint(1, 4096))
        for i in range(n)
    ]


async def test_garbage_bytes_are_refused_and_change_nothing(
    campaign: Campaign, sizes: Sizes, figures: Figures
) -> None:
    port = campaign.server.port
    outcome: Counter[str] = Counter()
    sem = asyncio.Semaphore(50)

    async def send(payload: bytes) -> None:
        async with sem:
            reader, writer = await connect(port)
            try:
                writer.write(payload)
                await writer.drain()
                async with asyncio.timeout(10):
                    answer = await reader.read(200)
                # Whatever comes back is a clear refusal, never a server error.
                if answer:
                    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
                    assert 400 <= status < 500, answer
                    outcome[f"answered {status}"] += 1
                else:
                    outcome["closed"] += 1
            except TimeoutError:
                outcome["no answer yet"] += 1
            except (ConnectionError, OSError):
                outcome["reset"] += 1
            finally:
                writer.close()

    async def fault() -> dict[str, int]:
        payloads = garbage_payloads(sizes.garbage, campaign.polls[0]["id"])
        await asyncio.gather(*(send(p) for p in payloads))
        return {"garbage": sizes.garbage, **outcome}

    figures.add("garbage bytes", **await during(campaign, sizes, fault))


def ws_frame(opcode: int, payload: bytes, *, declared: int | None = None) -> bytes:
    """A masked client frame (RFC 6455); `declared` lies about the payload's length."""
    n = len(payload) if declared is None else declared
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_oversized_websocket_frames_close_only_that_socket(
    campaign: Campaign, sizes: Sizes, figures: Figures
) -> None:
    base, room = campaign.server.base, campaign.room
    outcome: Counter[str] = Counter()
    big = json.dumps({"type": "ping", "pad": "x" * 100_000})

    async def abuse(http: aiohttp.ClientSession, i: int) -> None:
        async with http.ws_connect(f"{base}/ws?room={room['code']}") as ws:
            assert (await ws.receive_json(timeout=30))["type"] == "snapshot"
            if i % 3 == 0:
                await ws.send_str(big)
            elif i % 3 == 1:
                await ws.send_bytes(os.urandom(100_000))
            else:  # a header that announces 2**40 bytes, then a few
                ws._writer.transport.write(ws_frame(0x1, b"x" * 10, declared=1 << 40))
            message = await ws.receive(timeout=30)
            while message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                message = await ws.receive(timeout=30)  # results frames sent meanwhile
            if message.type == aiohttp.WSMsgType.CLOSE:
                outcome[f"closed {message.data}"] += 1
                assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG, message
            else:
                outcome[str(message.type.name).lower()] += 1

    async def fault() -> dict[str, int]:
        async with aiohttp.ClientSession() as http:
            # A watcher that behaves sees the votes sent meanwhile.
            async with http.ws_connect(f"{base}/ws?room={room['code']}") as watcher:
                assert (await watcher.receive_json(timeout=30))["type"] == "snapshot"
                sem = asyncio.Semaphore(50)

                async def one(i: int) -> None:
                    async with sem:
                        await abuse(http, i)

                await asyncio.gather(*(one(i) for i in range(max(30, sizes.garbage // 2))))
                half = len(campaign.ballots) // 2
                seen: dict[str, int] = {}
                while sum(seen.values()) < half:
                    message = await watcher.receive_json(timeout=60)
                    if message["type"] == "results":
                        seen[message["poll_id"]] = message["total_votes"]
                outcome["watcher saw votes"] = sum(seen.values())
        return dict(outcome)

    figures.add("oversized WebSocket frames", **await during(campaign, sizes, fault))


async def test_a_flood_of_connections_leaves_the_server_serving(
    campaign: Campaign, sizes: Sizes, figures: Figures
) -> None:
    port = campaign.server.port
    outcome: Counter[str] = Counter()
    sem = asyncio.Semaphore(200)
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        async with sem:
            sock = socket.socket()
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", port))
                if i % 3 == 1:  # a reset instead of a goodbye
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif i % 3 == 2:
                    await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: o")
                outcome["opened"] += 1
            except OSError:
                outcome["refused"] += 1
            finally:
                sock.close()

    async def fault() -> dict[str, int]:
        await asyncio.gather(*(one(i) for i in range(sizes.flood)))
        return {"flood": sizes.flood, **outcome}

    figures.add("connection flood", **await during(campaign, sizes, fault))
