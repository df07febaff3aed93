"""A venue under network partitions: three boxes, each in its own network namespace, joined by
three cables (veth pairs) that a test cuts and heals (`ip link set ... down`: a pulled cable;
the kernel here has no netem).

    box a (10.77.0.1) ---- box b (10.77.0.2) ---- box c (10.77.0.3)
          \\_______________________________________/

Each box reaches each other one over its own cable only (no forwarding), so with the a-c cable
cut, a and c hear of each other only through b's stream. The test process reaches each box's
HTTP port over one more cable from the root namespace.

Needs root (`ip netns`); CI runs as root. After every heal, a digest of each box's counted
votes is equal at all three and holds every vote that was answered 202.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import ADMIN, Api, until

NAMES = ("a", "b", "c")
HTTP_PORT, NATS_PORT = 8080, 4222
CABLES = (("a", "b"), ("b", "c"), ("a", "c"))


def _can_make_namespaces() -> bool:
    """Root with ip(8) and the right to make a network namespace (CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"opus-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True


pytestmark = pytest.mark.skipif(
    not _can_make_namespaces(), reason="needs root, ip and the right to make network namespaces"
)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Network:
    """Three namespaces, a cable between each two, one from the root namespace to each."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.ns = {n: f"opus-{self.tag}-{n}" for n in NAMES}
        # The test's cables get a network of their own (10.X.i.0/24): a network left behind by
        # an interrupted run cannot take this one's traffic.
        self.octet = 100 + int(self.tag, 16) % 150
        self.index = {n: i + 1 for i, n in enumerate(NAMES)}

    def address(self, name: str) -> str:
        return f"10.77.0.{self.index[name]}"

    def http_address(self, name: str) -> str:
        return f"10.{self.octet}.{self.index[name]}.2"

    def _veth(self, x: str, y: str) -> str:
        return f"v{self.tag[:4]}{x}{y}"

    def up(self) -> None:
        for name, ns in self.ns.items():
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # The box's own address, on its loopback: reached over any of its cables.
            _run("ip", "-n", ns, "addr", "add", f"{self.address(name)}/32", "dev", "lo")
            # The test's own cable to the box.
            outside, inside = f"h{self.tag[:4]}{name}", f"t{self.tag[:4]}{name}"
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            _run("ip", "link", "set", inside, "netns", ns)
            i = self.index[name]
            _run("ip", "addr", "add", f"10.{self.octet}.{i}.1/24", "dev", outside)
            _run("ip", "link", "set", outside, "up")
            _run("ip", "-n", ns, "addr", "add", f"10.{self.octet}.{i}.2/24", "dev", inside)
            _run("ip", "-n", ns, "link", "set", inside, "up")
        for x, y in CABLES:
            vx, vy = self._veth(x, y), self._veth(y, x)
            _run(
                "ip", "link", "add", vx, "netns", self.ns[x], "type", "veth",
                "peer", "name", vy, "netns", self.ns[y],
            )  # fmt: skip
            for me, dev, other in ((x, vx, y), (y, vy, x)):
                _run("ip", "-n", self.ns[me], "link", "set", dev, "up")
                _run(
                    "ip", "-n", self.ns[me], "route", "add", f"{self.address(other)}/32",
                    "dev", dev, "src", self.address(me),
                )  # fmt: skip

    def cut(self, x: str, y: str) -> None:
        """Pull the cable: both ends down (their routes go with them)."""
        for me, dev in ((x, self._veth(x, y)), (y, self._veth(y, x))):
            _run("ip", "-n", self.ns[me], "link", "set", dev, "down")

    def heal(self, x: str, y: str) -> None:
        for me, dev, other in ((x, self._veth(x, y), y), (y, self._veth(y, x), x)):
            _run("ip", "-n", self.ns[me], "link", "set", dev, "up")
            _run(
                "ip", "-n", self.ns[me], "route", "replace", f"{self.address(other)}/32",
                "dev", dev, "src", self.address(me),
            )  # fmt: skip

    def down(self) -> None:
        for name, ns in self.ns.items():
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("ip", "netns", "del", ns)
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("ip", "link", "del", f"h{self.tag[:4]}{name}")


class NsBox:
    """`opus serve` for one box, inside its namespace, in its own process group."""

    def __init__(self, net: Network, name: str, folder: Path, venue: Path) -> None:
        self.net, self.name, self.folder = net, name, folder
        self.env = {
            **os.environ,
            "OPUS_ADMIN_TOKEN": ADMIN,
            "OPUS_HOST": "0.0.0.0",
            "OPUS_DATA_DIR": str(folder / "data"),
            "OPUS_VENUE": str(venue),
            "OPUS_BOX": name,
            "OPUS_IDENTITIES_PER_ADDRESS": "0",
            "OPUS_JOIN_RATE_PER_MINUTE": "0",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{self.net.http_address(self.name)}:{HTTP_PORT}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.net.ns[self.name], sys.executable, "-m", "opus",
                 "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    try:
        net.up()
        yield net
    finally:
        net.down()


@pytest.fixture
async def boxes(network: Network, tmp_path: Path) -> AsyncIterator[dict[str, Api]]:
    specs = [f"--box={n}={network.address(n)}:{HTTP_PORT}:{NATS_PORT}" for n in NAMES]
    init = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opus", "venue", "init", "--out", str(tmp_path), *specs,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert await init.wait() == 0
    servers = {n: NsBox(network, n, tmp_path / n, tmp_path / "venue.toml") for n in NAMES}
    try:
        for server in servers.values():
            server.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            apis = {n: Api(session, base=s.base) for n, s in servers.items()}
            for name, api in apis.items():
                await _ready(api, servers[name])
            yield apis
    finally:
        for server in servers.values():
            server.stop()


async def _ready(api: Api, server: NsBox) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.proc is not None
        if server.proc.poll() is not None:
            raise RuntimeError((server.folder / "server.log").read_text()[-3000:])
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            status, _ = await api.call("GET", "/healthz")
            if status == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"box {server.name} did not start")


async def _digest(api: Api, poll_id: str) -> list[str]:
    status, body = await api.call("GET", f"/api/v1/polls/{poll_id}/export", headers=api.admin)
    assert status == 200, body
    return sorted(v["event_id"] for v in body["votes"])


async def _converged(apis: dict[str, Api], poll_id: str, acked: list[str]) -> list[str] | None:
    """The digest, once it is equal at every box and holds every acknowledged vote."""
    digests = [await _digest(api, poll_id) for api in apis.values()]
    if any(d != digests[0] for d in digests) or not set(acked) <= set(digests[0]):
        return None
    return digests[0]


async def _setup(apis: dict[str, Api]) -> tuple[dict[str, Any], dict[str, Any]]:
    room = await apis["a"].room()
    poll = await apis["a"].poll(room["id"], ["Left", "Right"])

    async def open_everywhere() -> bool:
        for api in apis.values():
            status, body = await api.call("GET", f"/api/v1/polls/{poll['id']}", headers=api.admin)
            if status != 200 or body["status"] != "open":
                return False
        return True

    await until(open_everywhere, what="the poll open at every box")
    return room, poll


async def _votes_at(api: Api, room: dict[str, Any], poll: dict[str, Any], n: int) -> list[str]:
    acked = []
    for i in range(n):
        voter = await api.join(room["code"])
        status, body = await api.vote(voter, poll["id"], [poll["options"][i % 2]["id"]])
        assert status == 202, body  # a box cut off from the others still takes its votes
        acked.append(body["event_id"])
    return acked


async def _venue(api: Api) -> dict[str, bool]:
    status, body = await api.call("GET", "/api/v1/venue", headers=api.admin)
    assert status == 200
    return {p["box"]: p["reachable"] for p in body["peers"]}


async def test_every_box_alone_keeps_voting_and_all_agree_after_the_heal(
    network: Network, boxes: dict[str, Api]
) -> None:
    room, poll = await _setup(boxes)
    for x, y in CABLES:
        network.cut(x, y)
    acked = []
    for api in boxes.values():
        acked += await _votes_at(api, room, poll, 15)

    async def alone() -> bool:
        seen = [await _venue(api) for api in boxes.values()]
        return not any(reachable for peers in seen for reachable in peers.values())

    await until(alone, what="each box sees its peers unreachable")
    for x, y in CABLES:
        network.heal(x, y)
    digest = await until(lambda: _converged(boxes, poll["id"], acked), 60, "equal digests")
    assert sorted(acked) == digest


async def test_a_cut_cable_between_a_and_c_converges_through_b(
    network: Network, boxes: dict[str, Api]
) -> None:
    room, poll = await _setup(boxes)
    network.cut("a", "c")
    acked = await _votes_at(boxes["a"], room, poll, 10)
    acked += await _votes_at(boxes["c"], room, poll, 10)
    # With the a-c cable still cut, a's votes reach c (and c's reach a) through b's stream.
    digest = await until(lambda: _converged(boxes, poll["id"], acked), 60, "equal via b")
    assert sorted(acked) == digest

    async def c_unreachable_from_a() -> bool:
        return (await _venue(boxes["a"]))["c"] is False

    # A cut cable drops packets without a word: the next ping that gets no answer tells.
    await until(c_unreachable_from_a, 15, "a sees c unreachable")
    network.heal("a", "c")
    await until(lambda: _venue_all_reachable(boxes["a"]), 30, "a reaches c again")


async def _venue_all_reachable(api: Api) -> bool:
    return all((await _venue(api)).values())


async def test_votes_taken_after_a_close_at_another_box_count_nowhere(
    network: Network, boxes: dict[str, Api]
) -> None:
    """Box b is cut off while the host closes the poll at a; b, not knowing, keeps taking
    votes (202). After the heal those votes count at no box, and a vote one of them had
    replaced at b counts again there: the same result everywhere."""
    room = await boxes["a"].room()
    poll = await boxes["a"].poll(room["id"], ["Left", "Right"], allow_change=True)
    left, right = (o["id"] for o in poll["options"])

    async def open_everywhere() -> bool:
        for api in boxes.values():
            status, body = await api.call("GET", f"/api/v1/polls/{poll['id']}", headers=api.admin)
            if status != 200 or body["status"] != "open":
                return False
        return True

    await until(open_everywhere, what="open everywhere")
    early = await boxes["b"].join(room["code"])
    status, first = await boxes["b"].vote(early, poll["id"], [left])
    assert status == 202
    await until(lambda: _converged(boxes, poll["id"], [first["event_id"]]), 30, "first vote")
    network.cut("a", "b")
    network.cut("b", "c")
    status, _ = await boxes["a"].call(
        "POST", f"/api/v1/polls/{poll['id']}/close", headers=boxes["a"].admin
    )
    assert status == 200
    await asyncio.sleep(0.05)  # b's clock moves past the close's stamp
    late = [await boxes["b"].vote(early, poll["id"], [right])]
    other = await boxes["b"].join(room["code"])
    late.append(await boxes["b"].vote(other, poll["id"], [right]))
    assert [s for s, _ in late] == [202, 202]  # b does not know: it takes them
    network.heal("a", "b")
    network.heal("b", "c")

    async def same_results() -> list[Any] | None:
        seen = [
            [o["votes"] for o in (await api.results(poll["id"]))["options"]]
            for api in boxes.values()
        ]
        return seen if all(s == [1, 0] for s in seen) else None

    await until(same_results, 60, "the early vote alone counts, at every box")

    async def receipts(voter: dict[str, Any], event_id: str) -> list[Any] | None:
        seen = []
        for api in boxes.values():
            status, body = await api.call(
                "GET", f"/api/v1/votes/{event_id}", headers=voter["headers"]
            )
            if status != 200 or body["status"] == "queued":
                return None  # not applied at that box yet
            seen.append((body["status"], body.get("reason")))
        # b may apply its own late vote (counted) before it hears of the close, while a and
        # c, which heard b's vote after the close, already refuse it: wait until all agree.
        return seen if len(set(seen)) == 1 else None

    for (_, body), voter in zip(late, (early, other), strict=True):
        seen = await until(lambda v=voter, e=body["event_id"]: receipts(v, e), 30, "receipts")
        assert seen == [("rejected", "poll_closed")] * 3
    assert await receipts(early, first["event_id"]) == [("counted", None)] * 3
