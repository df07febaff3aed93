"""A hall votes at once: a real server, a burst of votes on new connections, refusals with
Retry-After honoured as the attendee page does, and the exact tally on a screen at the end.
(The full 10,000-voter run, with its timings, is bench/herd.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp

from conftest import ADMIN, Api, ServerProcess

VOTERS = 1000
BURST_S = 1.0


async def _vote(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    option: str,
    at: float,
    seen: Counter[str],
    refusals: list[dict[str, Any]],
) -> bool:
    """One phone: wait for its moment, then send the same vote until it gets a 202 (or an
    answer that is neither a 202 nor a refusal, or a broken connection: a failure)."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    body = {"event_id": str(uuid.uuid4()), "option_ids": [option]}
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            async with http.post(url, json=body, headers=headers) as r:
                answer = await r.json()
                retry_after = r.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            seen[type(exc).__name__] += 1
            return False
        seen[str(r.status)] += 1
        if r.status == 202:
            return True
        if r.status not in (429, 503):
            return False
        refusals.append({"status": r.status, "retry_after": retry_after, "body": answer})
        await asyncio.sleep(float(retry_after or 1))


async def _screen(
    http: aiohttp.ClientSession,
    base: str,
    code: str,
    poll_id: str,
    frames: list[dict[str, Any]],
    ready: asyncio.Event,
) -> None:
    async with http.ws_connect(f"{base}/ws?room={code}") as ws:
        async for message in ws:
            data = json.loads(message.data)
            if data["type"] == "snapshot":
                ready.set()
            elif data["type"] == "results" and data["poll_id"] == poll_id:
                frames.append(data)


async def test_a_burst_of_votes_is_answered_refused_retried_and_counted_exactly_once(
    tmp_path: Path,
) -> None:
    # A tiny backlog: during the burst most votes find it full and are refused with 503.
    server = ServerProcess(tmp_path / "data", OPUS_MAX_BACKLOG="3")
    server.start()
    try:
        async with aiohttp.ClientSession() as setup:
            api = Api(setup, server.base)
            room = await api.room("Hall")
            poll = await api.poll(room["id"], ["A", "B", "C"], open=False)
            gate = asyncio.Semaphore(32)

            async def join() -> str:
                async with gate:
                    status, body = await api.call(
                        "POST", "/api/v1/join", json={"code": room["code"]}
                    )
                assert status == 201, body
                return str(body["voter_token"])

            tokens = await asyncio.gather(*(join() for _ in range(VOTERS)))

        options = [o["id"] for o in poll["options"]]
        frames: list[dict[str, Any]] = []
        ready = asyncio.Event()
        # Each vote on its own connection, as phones whose idle connection has closed.
        phones = aiohttp.TCPConnector(limit=0, force_close=True)
        timeout = aiohttp.ClientTimeout(total=120)
        async with (
            aiohttp.ClientSession(
                connector=phones, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
            ) as http,
            aiohttp.ClientSession() as screens,
        ):
            watcher = asyncio.create_task(
                _screen(screens, server.base, room["code"], poll["id"], frames, ready)
            )
            await asyncio.wait_for(ready.wait(), 30)
            status, _ = await Api(screens, server.base).call(
                "POST",
                f"/api/v1/polls/{poll['id']}/open",
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            assert status == 200
            seen: Counter[str] = Counter()
            refusals: list[dict[str, Any]] = []
            start = time.monotonic()
            url = f"{server.base}/api/v1/polls/{poll['id']}/votes"
            outcomes = await asyncio.gather(
                *(
                    _vote(
                        http,
                        url,
                        token,
                        options[i % 3],
                        start + i * BURST_S / VOTERS,
                        seen,
                        refusals,
                    )
                    for i, token in enumerate(tokens)
                )
            )

            # Every phone got its 202 in the end; nothing timed out or broke on the way.
            assert all(outcomes), seen
            assert set(seen) <= {"202", "429", "503"}, seen
            assert seen["202"] == VOTERS
            # The refusals happened, and each told the phone when to come back.
            assert refusals, "the burst never filled a backlog of 3"
            for refused in refusals:
                assert refused["retry_after"] is not None and int(refused["retry_after"]) >= 1
                assert set(refused["body"]["error"]) == {"code", "message"}

            expected = {o: len(range(i, VOTERS, 3)) for i, o in enumerate(options)}
            results = await Api(screens, server.base).total_when(poll["id"], VOTERS, 60)
            assert results["total_votes"] == VOTERS
            assert {o["id"]: o["votes"] for o in results["options"]} == expected
            # The screen ends on exactly that tally.
            deadline = time.monotonic() + 30
            while not frames or frames[-1]["total_votes"] != VOTERS:
                assert time.monotonic() < deadline, frames[-1:] or "no results frame"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # nothing different comes after it
            assert frames[-1]["total_votes"] == VOTERS
            assert {o["id"]: o["votes"] for o in frames[-1]["options"]} == expected
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert server.terminate() == 0
    finally:
        server.stop()

    # Nothing counted twice: one row per voter in the database.
    with closing(sqlite3.connect(tmp_path / "data" / "opus.db")) as db:
        rows, voters = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT voter_id) FROM votes WHERE poll_id = ?", (poll["id"],)
        ).fetchone()
    assert rows == voters == VOTERS


def test_a_second_server_cannot_share_the_port(tmp_path: Path) -> None:
    """The server's listening sockets share their port among themselves (SO_REUSEPORT); another
    server started on that port must be refused, not handed half the hall's connections."""
    first = ServerProcess(tmp_path / "one")
    first.start()
    try:
        second = {**first.env, "OPUS_DATA_DIR": str(tmp_path / "two")}
        done = subprocess.run(
            [sys.executable, "-m", "opus", "serve"],
            env=second,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.port}" in done.stderr
        assert not (tmp_path / "two" / "opus.db").exists()
        with socket.create_connection(("127.0.0.1", first.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert b" 200 " in s.recv(100)
    finally:
        first.stop()
