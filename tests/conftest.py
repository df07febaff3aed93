"""Fixtures: a real server (in-process through aiohttp_client, or a subprocess) on real files."""

from __future__ import annotations

import asyncio
import errno
import os
import random
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
from aiohttp.test_utils import TestClient

from opus.app import create_app
from opus.config import Settings

ADMIN = "test-admin-token"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token=ADMIN, host="127.0.0.1")


class Api:
    """What a host and attendees do, through HTTP, with a few helpers for waiting."""

    def __init__(self, client: TestClient | aiohttp.ClientSession, base: str = "") -> None:
        self.client = client
        self.base = base
        self.admin = {"Authorization": f"Bearer {ADMIN}"}

    def url(self, path: str) -> str:
        return self.base + path

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.client.request(method, self.url(path), **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def room(self, title: str = "Room") -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/api/v1/rooms", json={"title": title}, headers=self.admin
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def poll(
        self, room_id: str, options: list[str] | None = None, *, open: bool = True, **extra: Any
    ) -> dict[str, Any]:
        payload = {
            "question": "Which one?",
            "kind": "single",
            "options": options or ["Red", "Green", "Blue"],
            **extra,
        }
        status, body = await self.call(
            "POST", f"/api/v1/rooms/{room_id}/polls", json=payload, headers=self.admin
        )
        assert status == 201, body
        if open:
            status, body = await self.call(
                "POST", f"/api/v1/polls/{body['id']}/open", headers=self.admin
            )
            assert status == 200, body
        return body  # type: ignore[no-any-return]

    def forget_cookies(self) -> None:
        """Each join below is a different phone: no cookie carries over between them."""
        session = self.client.session if isinstance(self.client, TestClient) else self.client
        session.cookie_jar.clear()

    async def join(self, code: str) -> dict[str, str]:
        self.forget_cookies()
        status, body = await self.call("POST", "/api/v1/join", json={"code": code})
        self.forget_cookies()
        assert status == 201, body
        body["headers"] = {"Authorization": f"Bearer {body['voter_token']}"}
        return body  # type: ignore[no-any-return]

    async def vote(
        self, voter: dict[str, Any], poll_id: str, option_ids: list[str], **extra: Any
    ) -> tuple[int, Any]:
        return await self.call(
            "POST",
            f"/api/v1/polls/{poll_id}/votes",
            json={"option_ids": option_ids, **extra},
            headers=voter["headers"],
        )

    async def results(self, poll_id: str) -> dict[str, Any]:
        status, body = await self.call(
            "GET", f"/api/v1/polls/{poll_id}/results", headers=self.admin
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def receipt(self, voter: dict[str, Any], event_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/votes/{event_id}", headers=voter["headers"])
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def settled(
        self, voter: dict[str, Any], event_id: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The receipt once a worker has settled the vote."""
        deadline = time.monotonic() + timeout
        while True:
            receipt = await self.receipt(voter, event_id)
            if receipt["status"] != "queued" or time.monotonic() > deadline:
                return receipt
            await asyncio.sleep(0.02)

    async def total_when(
        self, poll_id: str, expected: int, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Results once total_votes reaches `expected` (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while True:
            results = await self.results(poll_id)
            if results["total_votes"] >= expected or time.monotonic() > deadline:
                return results
            await asyncio.sleep(0.05)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


async def until(check: Any, timeout: float = 20.0, what: str = "") -> Any:
    """Wait until `await check()` gives something true (and give it back); fail after
    `timeout` seconds with what it gave last."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what} (last: {last!r})")


# Servers under test listen below the kernel's ephemeral range (32768-60999 here), where no
# client connection takes its local port: with two test processes (pytest-xdist) making
# thousands of connections, a port the OS had just called free, or the NATS monitor's port
# after it, was sometimes a client's by the time a server bound it.
_PORTS = (12000, 32000)


def free_port(pair: bool = False) -> int:
    """A free loopback port for a server (`pair`: and the one after it, for NATS)."""
    for _ in range(1000):
        port = random.randrange(*_PORTS)
        try:
            with socket.socket() as s1, socket.socket() as s2:
                s1.bind(("127.0.0.1", port))
                if pair:
                    s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class ServerProcess:
    """`opus serve` as a real process: started, killed, restarted on the same data dir."""

    new_session = False  # its own process group (a test then kills the group)

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "OPUS_ADMIN_TOKEN": ADMIN,
            "OPUS_HOST": "127.0.0.1",
            "OPUS_PORT": str(self.port),
            "OPUS_DATA_DIR": str(data_dir),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "server.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opus", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the spawned server to answer /healthz."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    if b" 200 " in s.recv(100):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout} s after SIGTERM: {self.log.read_text()[-3000:]}"
            ) from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data")
    yield proc
    proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def fill(folder: Path) -> Path:
    """Write a ballast file until the filesystem has no byte left (the disk-full tests)."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return ballast


# -- the page tests: one server per test module, Debian's Chromium, and browser contexts -------


@pytest.fixture(scope="module")
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real `opus serve` for a module of page tests."""
    server = ServerProcess(tmp_path_factory.mktemp(request.module.__name__) / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (tests/browser.py)."""
    from browser import launch
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def contexts(browser: Any, site: ServerProcess) -> Iterator[Any]:
    """New browser contexts (each one a separate phone or laptop), closed after the test."""
    made: list[Any] = []

    def new(**options: Any) -> Any:
        context = browser.new_context(base_url=site.base, **options)
        made.append(context)
        return context

    yield new
    for context in made:
        context.close()
