"""A venue: three real Opus servers on loopback, each with the NATS server Opus ships, joined by
one venue.toml. A vote cast at any box counts at every box, with the same results and receipts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import ADMIN, Api, ServerProcess

NAMES = ("a", "b", "c")


def _free_pair() -> int:
    """A port whose next port is free too (NATS takes NATS_PORT and NATS_PORT + 1)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65534:
            continue
        try:
            with socket.socket() as s1, socket.socket() as s2:
                s1.bind(("127.0.0.1", port))
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


class Box(ServerProcess):
    """One box of the venue, in its own process group (so that a test can kill the group)."""

    def __init__(self, folder: Path, venue: Path, name: str, port: int) -> None:
        super().__init__(folder / "data", OPUS_VENUE=str(venue), OPUS_BOX=name)
        self.name = name
        self.port = port
        self.env["OPUS_PORT"] = str(port)
        self.log = folder / "server.log"

    def spawn(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opus", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the spawned server to answer /healthz."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"box {self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    if b" 200 " in s.recv(100):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"box {self.name} did not start: {self.log.read_text()[-3000:]}")

    def kill_group(self) -> None:
        """kill -9 of the box's whole process group: the server and its NATS server."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def init_venue(folder: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    ports = {name: (_free_pair(), _free_pair()) for name in NAMES}
    boxes = [f"--box={n}=127.0.0.1:{http}:{nats}" for n, (http, nats) in ports.items()]
    done = subprocess.run(
        [sys.executable, "-m", "opus", "venue", "init", "--out", str(folder), *boxes],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Admin token at every box:" in done.stdout
    path = folder / "venue.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    return path, ports


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[dict[str, Box]]:
    path, ports = init_venue(tmp_path)
    boxes = {n: Box(tmp_path / n, path, n, http) for n, (http, _) in ports.items()}
    try:
        for box in boxes.values():
            box.spawn()
        for box in boxes.values():
            box.wait_ready()
        yield boxes
    finally:
        for box in boxes.values():
            if box.proc is not None and box.proc.poll() is None:
                os.killpg(box.proc.pid, signal.SIGKILL)
                box.proc.wait(10)


@pytest.fixture
async def apis(venue: dict[str, Box]) -> AsyncIterator[dict[str, Api]]:
    async with aiohttp.ClientSession() as session:
        yield {n: Api(session, base=box.base) for n, box in venue.items()}


async def until(check: Any, timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what} (last: {last!r})")


async def _room_everywhere(apis: dict[str, Api], room_id: str) -> None:
    async def known() -> bool:
        for api in apis.values():
            status, _ = await api.call("GET", f"/api/v1/rooms/{room_id}", headers=api.admin)
            if status != 200:
                return False
        return True

    await until(known, what="the room at every box")


async def _poll_status(api: Api, poll_id: str) -> str | None:
    status, body = await api.call("GET", f"/api/v1/polls/{poll_id}", headers=api.admin)
    return body["status"] if status == 200 else None


async def test_a_vote_at_any_box_counts_at_every_box(apis: dict[str, Api]) -> None:
    a, b = apis["a"], apis["b"]
    room = await a.room("Main hall")
    await _room_everywhere(apis, room["id"])
    poll = await a.poll(room["id"], ["Mars", "Venus", "Jupiter"], open=False)

    async def draft_everywhere() -> bool:
        return all([await _poll_status(api, poll["id"]) == "draft" for api in apis.values()])

    await until(draft_everywhere, what="the poll at every box")
    status, _ = await b.call("POST", f"/api/v1/polls/{poll['id']}/open", headers=b.admin)
    assert status == 200

    async def open_everywhere() -> bool:
        return all([await _poll_status(api, poll["id"]) == "open" for api in apis.values()])

    await until(open_everywhere, what="opened at b, open everywhere")

    # Attendees join at the box their phone reaches (the room's code is the same everywhere)
    # and vote there; one who joined at a votes at c: a token is valid at every box.
    options = [o["id"] for o in poll["options"]]
    cast: list[tuple[str, dict[str, Any], str]] = []
    for i, name in enumerate(["a", "a", "a", "b", "b", "c", "c", "c", "c"]):
        voter = await apis[name].join(room["code"])
        at = "c" if i == 0 else name
        status, body = await apis[at].vote(voter, poll["id"], [options[i % 3]])
        assert status == 202, body
        cast.append((at, voter, body["event_id"]))
    expected = [3, 3, 3]

    async def same_results() -> list[list[int]] | None:
        seen = []
        for api in apis.values():
            results = await api.results(poll["id"])
            seen.append([o["votes"] for o in results["options"]])
        return seen if all(s == expected for s in seen) else None

    await until(same_results, what="the same results at every box")
    # Every vote's receipt reads the same at every box.
    for _, voter, event_id in cast:
        for api in apis.values():
            receipt = await api.settled(voter, event_id)
            assert receipt["status"] == "counted", (api.base, receipt)
    status, venue = await a.call("GET", "/api/v1/venue", headers=a.admin)
    assert status == 200
    assert venue["box"] == "a"
    assert {p["box"]: p["reachable"] for p in venue["peers"]} == {"b": True, "c": True}
    status, _ = await a.call("GET", "/api/v1/venue")
    assert status == 401
    assert ADMIN  # the same admin token at every box (set by the test's environment)
