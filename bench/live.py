"""Vote -> screen latency, and the memory an idle WebSocket costs.

One server, started here. For each watcher count (default 1,000 and 5,000): that many sockets
watch one room (held by two client processes, so the load generator is not the bottleneck);
votes are posted at a steady rate (default 200/s) by distinct voters; for every vote and every
watcher, the time from the vote's 202 to the first results message on that socket whose
`total_votes` includes it (the r-th acknowledged vote is included once total_votes >= r; workers
apply votes in queue order). Reported: p50/p99/max over all (vote, watcher) pairs, and updates
missing (a watcher whose last total is short of the votes acknowledged). Then N idle sockets
(default 10,000): the server's RSS before and after, per socket.

    .venv/bin/python bench/live.py [--watchers 1000 5000] [--rate 200] [--seconds 10]
                                   [--idle 10000] [--write docs/benchmarks.md]

Goals (issue "Live results"): 1,000 watchers at 200 votes/s p99 <= 150 ms and none missing;
5,000 watchers p99 <= 300 ms; 10,000 idle sockets in <= 600 MB RSS.

--data writes the latency histograms as JSON (for bench/charts.py). Exit status 1 when a vote
was not answered 202, the poll's total is not the number of votes acknowledged, or the server
did not stop with exit code 0; a missed speed goal is only marked in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import re
import resource
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import aiohttp
from ingest import (
    ADMIN_TOKEN,
    Server,
    api,
    free_port,
    join,
    machine_facts,
    progress,
    replace_section,
)

_BUCKET_MS = 1.0
_BUCKETS = 20_000  # 20 s in 1 ms buckets


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- watchers (child processes) -------------------------------------------------------------

_TOTAL = re.compile(rb'"total_votes": (\d+)')


class _Watcher(asyncio.Protocol):
    """A minimal WebSocket reader: thousands of aiohttp client sockets in one process spend
    more CPU parsing than the server spends sending, and would measure themselves. This one
    only splits frames, answers pings, and notes when each results message arrived."""

    def __init__(
        self, request: bytes, ready: asyncio.Future[None], seen: list[tuple[float, int]]
    ) -> None:
        self._request = request
        self._ready = ready
        self._seen = seen
        self._buf = bytearray()
        self._upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._buf += data
        if not self._upgraded:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in self._buf[:end]:
                self._ready.set_exception(RuntimeError(bytes(self._buf[:200]).decode()))
                return
            del self._buf[: end + 4]
            self._upgraded = True
        buf = self._buf
        while len(buf) >= 2:
            opcode, size, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                size, offset = int.from_bytes(buf[2:4]), 4
            elif size == 127:
                size, offset = int.from_bytes(buf[2:10]), 10
            if len(buf) < offset + size:
                return
            payload = bytes(buf[offset : offset + size])
            del buf[: offset + size]
            if opcode == 0x9 and self.transport is not None:  # ping: a masked pong (zero mask)
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 0x1:
                if not self._ready.done():
                    self._ready.set_result(None)  # the snapshot
                elif payload.startswith(b'{"type": "results"'):
                    found = _TOTAL.search(payload)
                    if found:
                        self._seen.append((now, int(found.group(1))))


async def _watch(port: int, room: str, count: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    frames: list[list[tuple[float, int]]] = [[] for _ in range(count)]
    transports: list[asyncio.BaseTransport] = []
    gate = asyncio.Semaphore(100)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?room={room} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()

    async def open_one(i: int) -> None:
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: _Watcher(request, ready, frames[i]), "127.0.0.1", port
            )
            await asyncio.wait_for(ready, 60)
            transports.append(transport)

    await asyncio.gather(*(open_one(i) for i in range(count)))
    pipe.send("ready")
    accepted: list[float] = await loop.run_in_executor(None, pipe.recv)
    histogram = [0] * _BUCKETS
    missing = 0
    for seen in frames:
        r = 0
        for t, total in seen:
            while r < min(total, len(accepted)):
                ms = max(0.0, (t - accepted[r]) * 1000)
                histogram[min(_BUCKETS - 1, int(ms / _BUCKET_MS))] += 1
                r += 1
        missing += len(accepted) - r
    pipe.send({"histogram": histogram, "missing": missing, "messages": sum(len(s) for s in frames)})
    await loop.run_in_executor(None, pipe.recv)  # hold the sockets until told
    for transport in transports:
        transport.close()


def _child(port: int, room: str, count: int, pipe: Connection) -> None:
    _raise_nofile()
    try:
        import uvloop

        uvloop.run(_watch(port, room, count, pipe))
    except ImportError:
        asyncio.run(_watch(port, room, count, pipe))


class Watchers:
    """`count` sockets on `room`, held by `procs` processes."""

    def __init__(self, port: int, room: str, count: int, procs: int = 2) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for i in range(procs):
            mine, theirs = ctx.Pipe()
            share = count // procs + (1 if i < count % procs else 0)
            proc = ctx.Process(target=_child, args=(port, room, share, theirs), daemon=True)
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)

    async def ready(self) -> None:
        for pipe in self.pipes:
            message = await asyncio.to_thread(pipe.recv)
            assert message == "ready", message

    async def results(self, accepted: list[float]) -> dict[str, Any]:
        histogram = [0] * _BUCKETS
        missing = messages = 0
        for pipe in self.pipes:
            pipe.send(accepted)
        for pipe in self.pipes:
            part = await asyncio.to_thread(pipe.recv)
            histogram = [a + b for a, b in zip(histogram, part["histogram"], strict=True)]
            missing += part["missing"]
            messages += part["messages"]
        return {"histogram": histogram, "missing": missing, "messages": messages}

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send("close")
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def percentile(histogram: list[int], q: float) -> float:
    total = sum(histogram)
    if not total:
        return float("nan")
    rank, seen = q * (total - 1), 0
    for bucket, n in enumerate(histogram):
        seen += n
        if seen > rank:
            return (bucket + 0.5) * _BUCKET_MS
    return _BUCKETS * _BUCKET_MS


# -- the runs -------------------------------------------------------------------------------


async def _room(session: aiohttp.ClientSession, base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    room = await api(
        session,
        "POST",
        base + "/api/v1/rooms",
        201,
        headers=admin,
        json={"title": "Live benchmark"},
    )
    poll = await api(
        session,
        "POST",
        f"{base}/api/v1/rooms/{room['id']}/polls",
        201,
        headers=admin,
        json={"question": "Which?", "options": ["A", "B", "C"]},
    )
    await api(session, "POST", f"{base}/api/v1/polls/{poll['id']}/open", 200, headers=admin)
    return room, poll


async def _steady_votes(
    session: aiohttp.ClientSession, base: str, poll: dict[str, Any], tokens: list[str], rate: float
) -> tuple[list[float], int]:
    """One vote per token at `rate`/s; returns the 202 times (sorted) and the failures."""
    accepted: list[float] = []
    failed = 0
    start = time.monotonic()

    async def one(i: int, token: str) -> None:
        nonlocal failed
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        option = poll["options"][i % len(poll["options"])]["id"]
        async with session.post(
            f"{base}/api/v1/polls/{poll['id']}/votes",
            json={"option_ids": [option]},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            await r.read()
            if r.status == 202:
                accepted.append(time.monotonic())
            else:
                failed += 1

    await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
    return sorted(accepted), failed


async def _counted(
    session: aiohttp.ClientSession, base: str, poll: dict[str, Any], want: int
) -> int:
    """The poll's total_votes once it reaches `want` (or after 30 s, whatever it is then)."""
    deadline = time.monotonic() + 30
    while True:
        body = await api(session, "GET", f"{base}/api/v1/polls/{poll['id']}/results", 200)
        total = int(body["total_votes"])
        if total >= want or time.monotonic() > deadline:
            return total
        await asyncio.sleep(0.2)


async def latency_run(
    session: aiohttp.ClientSession, base: str, port: int, watchers: int, rate: float, seconds: float
) -> dict[str, Any]:
    room, poll = await _room(session, base)
    tokens = await join(session, base, room["code"], int(rate * seconds))
    progress(f"{watchers} watchers: connecting")
    held = Watchers(port, room["code"], watchers)
    try:
        await held.ready()
        progress(f"{watchers} watchers: {len(tokens)} votes at {rate:g}/s")
        accepted, failed = await _steady_votes(session, base, poll, tokens, rate)
        await asyncio.sleep(3)  # the last votes reach the screens
        outcome = await held.results(accepted)
        counted = await _counted(session, base, poll, len(accepted))
    finally:
        held.close()
    h = outcome["histogram"]
    used = max((i for i, n in enumerate(h) if n), default=0) + 1
    return {
        "watchers": watchers,
        "votes": len(accepted),
        "failed": failed,
        "counted": counted,
        "p50": percentile(h, 0.5),
        "p99": percentile(h, 0.99),
        "max": percentile(h, 1.0),
        "missing": outcome["missing"],
        "messages_per_watcher": outcome["messages"] / watchers,
        "histogram_ms": h[:used],
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def idle_run(
    session: aiohttp.ClientSession, base: str, port: int, pid: int, count: int
) -> dict[str, float]:
    room, _ = await _room(session, base)
    before = rss_mb(pid)
    progress(f"{count} idle sockets: connecting")
    held = Watchers(port, room["code"], count)
    try:
        await held.ready()
        await asyncio.sleep(2)
        after = rss_mb(pid)
    finally:
        held.close()
    return {
        "sockets": count,
        "before": before,
        "after": after,
        "per_socket_kb": (after - before) * 1024 / count,
    }


async def bench(args: argparse.Namespace, work: Path) -> tuple[str, dict[str, Any]]:
    server = Server(work / "data", free_port(), [])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        await server.wait_ready(session)
        runs = [
            await latency_run(session, server.base, server.port, n, args.rate, args.seconds)
            for n in args.watchers
        ]
        idle = await idle_run(session, server.base, server.port, server.proc.pid, args.idle)
    code, _ = server.stop()
    goals = {1000: 150.0, 5000: 300.0}
    lines = [
        f"Measured on {machine_facts()}; server, watchers and voters on this one machine.",
        "",
        "| watchers | votes 202 (rate) / not 202 / counted | vote -> screen p50 | p99 | max "
        "| updates missing | messages per watcher | goal p99 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ok = code == 0
    for r in runs:
        goal = goals.get(r["watchers"])
        mark = "" if goal is None else " (met)" if r["p99"] <= goal else " (missed)"
        lines.append(
            f"| {r['watchers']:,} | {r['votes']:,} ({args.rate:g}/s) / {r['failed']} / "
            f"{r['counted']:,} | {r['p50']:.0f} ms | {r['p99']:.0f} ms | {r['max']:.0f} ms | "
            f"{r['missing']} | {r['messages_per_watcher']:.0f} | "
            f"{f'<= {goal:.0f} ms{mark}' if goal else '-'} |"
        )
        ok &= r["failed"] == 0 and r["counted"] == r["votes"]
    lines += [
        "",
        f"Idle sockets: {idle['sockets']:,} held; server RSS {idle['before']:.0f} MB before, "
        f"{idle['after']:.0f} MB with them ({idle['per_socket_kb']:.1f} KB per socket; "
        "goal: 10,000 in <= 600 MB).",
        "",
        f"Server stopped with SIGTERM: exit code {code}. Command: `make bench-live`.",
    ]
    data = {"ok": ok, "rate": args.rate, "runs": runs, "idle": idle}
    return "\n".join(lines), data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rate", type=float, default=200.0, help="votes per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=10_000, help="idle sockets for RSS")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="replace the '## Live' section of FILE (e.g. docs/benchmarks.md)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="write the latency histograms as JSON (for bench/charts.py)",
    )
    args = parser.parse_args()
    _raise_nofile()
    with tempfile.TemporaryDirectory(prefix="opus-bench-live-") as tmp:
        report, data = asyncio.run(bench(args, Path(tmp)))
    print(report)
    if args.write:
        replace_section(args.write, "Live", report)
    if args.data:
        args.data.write_text(json.dumps({**data, "table": report}))
    if not data["ok"]:
        progress(
            "FAILED: a vote was not answered 202 or not counted once, or the server "
            "did not stop cleanly"
        )
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
