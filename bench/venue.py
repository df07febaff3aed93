"""A venue of three boxes on this machine: the cost and the speed of sharing every vote.

Three `opus serve --venue ... --box` processes on loopback, each with the NATS server Opus
ships. Phases:

1. screens at every box: --watchers sockets spread over the three boxes watch one poll while
   --rate votes/s are cast at box a for --seconds; for every vote and every watcher, the time
   from the vote's 202 at box a to the first results message that includes it, reported for
   box a's own screens and for the other boxes' (goal: the other boxes' p99 <= 250 ms at 200
   votes/s with 1,000 watchers);
2. a box cut off: box c's process group is stopped (SIGSTOP: its server and its NATS server
   freeze, as behind a pulled cable) while --pending votes are cast at box a, then let go
   (SIGCONT); reported: the seconds until every box holds the same counted votes (goal <= 5 s
   with 10,000 pending), and every vote at box a answered 202 meanwhile (availability 100%);
3. CPU: the server CPU seconds of box a (which took the votes) and of box b (which only applied
   them from a's stream) over phase 2, per vote: applying a peer's vote must not cost more
   than taking one's own (goal: ratio <= 1).

    .venv/bin/python bench/venue.py [--watchers 1000] [--rate 200] [--seconds 10]
                                    [--pending 10000] [--write docs/benchmarks.md]

Exit status 1 when a vote was not answered 202 or the boxes did not agree; a missed speed goal
is only marked in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from ingest import ADMIN_TOKEN, ROOT, api, cpu_seconds, free_port, join, progress, replace_section
from live import Watchers, _steady_votes, percentile

NAMES = ("a", "b", "c")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _ports() -> dict[str, tuple[int, int]]:
    """Each box's web port and NATS port (which takes the next one too), all different."""
    ports: dict[str, tuple[int, int]] = {}
    taken: set[int] = set()
    while len(ports) < len(NAMES):
        http, nats = free_port(), free_port()
        wanted = {http, http + 1, nats, nats + 1}
        if len(wanted) < 4 or wanted & taken:
            continue
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", nats + 1))
            taken |= wanted
            ports[NAMES[len(ports)]] = (http, nats)
    return ports


class Box:
    def __init__(self, name: str, folder: Path, venue: Path, port: int) -> None:
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.log = (folder / "server.log").open("wb")
        env = {
            **os.environ,
            "OPUS_ADMIN_TOKEN": ADMIN_TOKEN,
            "OPUS_HOST": "127.0.0.1",
            "OPUS_PORT": str(port),
            "OPUS_DATA_DIR": str(folder / "data"),
            "OPUS_VENUE": str(venue),
            "OPUS_BOX": name,
            "OPUS_IDENTITIES_PER_ADDRESS": "0",
            "OPUS_JOIN_RATE_PER_MINUTE": "0",
            "OPUS_MAX_SOCKETS_PER_ADDRESS": "0",
        }
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/opus"), "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def stop(self) -> int | None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.proc.wait()
            return None


async def _ready(session: aiohttp.ClientSession, box: Box) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            async with session.get(box.base + "/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"box {box.name} did not start")


async def _open_everywhere(session: aiohttp.ClientSession, boxes: dict[str, Box]) -> Any:
    a = boxes["a"].base
    room = await api(
        session, "POST", a + "/api/v1/rooms", 201, headers=ADMIN, json={"title": "Venue"}
    )
    poll = await api(
        session,
        "POST",
        f"{a}/api/v1/rooms/{room['id']}/polls",
        201,
        headers=ADMIN,
        json={"question": "Which?", "options": ["A", "B", "C"]},
    )
    await api(session, "POST", f"{a}/api/v1/polls/{poll['id']}/open", 200, headers=ADMIN)
    for box in boxes.values():
        while True:
            async with session.get(f"{box.base}/api/v1/polls/{poll['id']}", headers=ADMIN) as r:
                if r.status == 200 and (await r.json())["status"] == "open":
                    break
            await asyncio.sleep(0.05)
    return room, poll


async def _totals(session: aiohttp.ClientSession, boxes: dict[str, Box], poll_id: str) -> list[int]:
    totals = []
    for box in boxes.values():
        async with session.get(f"{box.base}/api/v1/polls/{poll_id}/results", headers=ADMIN) as r:
            totals.append(int((await r.json())["total_votes"]))
    return totals


async def _until_totals(
    session: aiohttp.ClientSession, boxes: dict[str, Box], poll_id: str, want: int
) -> None:
    """Until every one of these boxes counts `want` votes in the poll (at most two minutes)."""
    deadline = time.monotonic() + 120
    while await _totals(session, boxes, poll_id) != [want] * len(boxes):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the boxes did not reach {want} votes")
        await asyncio.sleep(0.05)


async def _digest(session: aiohttp.ClientSession, box: Box, poll_id: str) -> list[str]:
    async with session.get(f"{box.base}/api/v1/polls/{poll_id}/export", headers=ADMIN) as r:
        return sorted(v["event_id"] for v in (await r.json())["votes"])


async def screens(
    session: aiohttp.ClientSession, boxes: dict[str, Box], args: argparse.Namespace
) -> dict[str, Any]:
    room, poll = await _open_everywhere(session, boxes)
    tokens = await join(session, boxes["a"].base, room["code"], int(args.rate * args.seconds))
    share = {
        n: args.watchers // 3 + (1 if i < args.watchers % 3 else 0) for i, n in enumerate(NAMES)
    }
    progress(f"screens: {args.watchers} watchers over three boxes, {len(tokens)} votes at a")
    held = {n: Watchers(boxes[n].port, room["code"], share[n], procs=1) for n in NAMES}
    try:
        for watchers in held.values():
            await watchers.ready()
        accepted, failed = await _steady_votes(session, boxes["a"].base, poll, tokens, args.rate)
        await asyncio.sleep(3)
        outcome = {n: await w.results(accepted) for n, w in held.items()}
    finally:
        for watchers in held.values():
            watchers.close()
    others = [
        a + b for a, b in zip(outcome["b"]["histogram"], outcome["c"]["histogram"], strict=True)
    ]
    return {
        "votes": len(accepted),
        "failed": failed,
        "local_p50": percentile(outcome["a"]["histogram"], 0.5),
        "local_p99": percentile(outcome["a"]["histogram"], 0.99),
        "other_p50": percentile(others, 0.5),
        "other_p99": percentile(others, 0.99),
        "missing": sum(o["missing"] for o in outcome.values()),
    }


async def cut_off(
    session: aiohttp.ClientSession, boxes: dict[str, Box], args: argparse.Namespace
) -> dict[str, Any]:
    room, poll = await _open_everywhere(session, boxes)
    tokens = await join(session, boxes["a"].base, room["code"], args.pending)
    progress(f"cut off: box c stopped, {args.pending} votes at a")
    boxes["c"].signal_group(signal.SIGSTOP)
    cpu_a, cpu_b = cpu_seconds(boxes["a"].proc.pid), cpu_seconds(boxes["b"].proc.pid)
    gate = asyncio.Semaphore(64)
    answers: list[int] = []

    async def one(i: int, token: str) -> None:
        option = poll["options"][i % 3]["id"]
        async with (
            gate,
            session.post(
                f"{boxes['a'].base}/api/v1/polls/{poll['id']}/votes",
                json={"option_ids": [option]},
                headers={"Authorization": f"Bearer {token}"},
            ) as r,
        ):
            await r.read()
            answers.append(r.status)

    try:
        await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
        pair = {"a": boxes["a"], "b": boxes["b"]}
        await _until_totals(session, pair, poll["id"], args.pending)
        used_a = cpu_seconds(boxes["a"].proc.pid) - cpu_a
        used_b = cpu_seconds(boxes["b"].proc.pid) - cpu_b
    finally:
        healed = time.monotonic()
        boxes["c"].signal_group(signal.SIGCONT)
    progress("cut off: box c let go; waiting for the same votes everywhere")
    await _until_totals(session, boxes, poll["id"], args.pending)
    converged = time.monotonic() - healed
    digests = [await _digest(session, box, poll["id"]) for box in boxes.values()]
    return {
        "pending": args.pending,
        "not_202": sum(1 for s in answers if s != 202),
        "converged_s": converged,
        "agree": all(d == digests[0] for d in digests) and len(digests[0]) == args.pending,
        "cpu_local_us": used_a / args.pending * 1e6,
        "cpu_peer_us": used_b / args.pending * 1e6,
    }


async def bench(args: argparse.Namespace, work: Path) -> tuple[str, bool]:
    ports = _ports()
    specs = [f"--box={n}=127.0.0.1:{h}:{p}" for n, (h, p) in ports.items()]
    init = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv/bin/opus"), "venue", "init", "--out", str(work), *specs,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if await init.wait() != 0:
        raise RuntimeError("opus venue init failed")
    boxes = {n: Box(n, work / n, work / "venue.toml", ports[n][0]) for n in NAMES}
    codes: list[int | None] = []
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            for box in boxes.values():
                await _ready(session, box)
            live = await screens(session, boxes, args)
            cut = await cut_off(session, boxes, args)
    finally:
        for box in boxes.values():
            with_code = box.stop() if box.proc.poll() is None else box.proc.returncode
            codes.append(with_code)

    def goal(ok: bool) -> str:
        return "met" if ok else "missed"

    kept, per_event = _log_size(work / "a" / "data" / "opus.db")

    ratio = cut["cpu_peer_us"] / cut["cpu_local_us"] if cut["cpu_local_us"] else float("nan")
    table = [
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| votes at box a, {args.rate:g}/s for {args.seconds:g} s; answers other than 202 |"
        f" {live['votes']} / {live['failed']} | 0 ({goal(not live['failed'])}) |",
        f"| vote at box a -> screens at box a, p50 / p99 ({args.watchers} watchers over three"
        f" boxes) | {live['local_p50']:.0f} / {live['local_p99']:.0f} ms |  |",
        f"| vote at box a -> screens at boxes b and c, p50 / p99 |"
        f" {live['other_p50']:.0f} / {live['other_p99']:.0f} ms |"
        f" p99 <= 250 ms ({goal(live['other_p99'] <= 250)}) |",
        f"| updates missing at any screen | {live['missing']} | 0 ({goal(not live['missing'])}) |",
        f"| box c cut off while {cut['pending']:,} votes are cast at a: answers other than 202 |"
        f" {cut['not_202']} | 0: availability 100% ({goal(not cut['not_202'])}) |",
        f"| ... then let go: seconds until every box counts the same votes |"
        f" {cut['converged_s']:.2f} s | <= 5 s ({goal(cut['converged_s'] <= 5)}) |",
        "| the same counted votes (digest) at the three boxes |"
        f" {'yes' if cut['agree'] else 'NO'} | yes ({goal(cut['agree'])}) |",
        f"| server CPU per vote: box a (took it) : box b (applied it from a's stream) |"
        f" {cut['cpu_local_us']:.0f} : {cut['cpu_peer_us']:.0f} µs = {ratio:.2f} |"
        f" <= 1 ({goal(ratio <= 1)}) |",
        f"| the log box a keeps for catching a peer up (its whole outbox) |"
        f" {kept:,} events, {per_event:.0f} bytes per event on disk |  |",
        f"| exit codes after SIGTERM | {', '.join(str(c) for c in codes)} | 0 |",
    ]
    head = (
        f"{time.strftime('%Y-%m-%d')}: `bench/venue.py`, three boxes on this machine (each an"
        " `opus serve` with its NATS server), loopback.\n\n"
    )
    ok = not live["failed"] and not cut["not_202"] and cut["agree"] and all(c == 0 for c in codes)
    return head + "\n".join(table) + "\n", ok


def _log_size(db: Path) -> tuple[int, float]:
    """Events in a box's log (its outbox), and the disk its table and indexes take per event."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (events,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
        (size,) = conn.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name IN"
            " (SELECT name FROM sqlite_master WHERE tbl_name = 'outbox')"
        ).fetchone()
    return events, size / events if events else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--write", type=Path, help="replace the ## Venue section of this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opus-venue-bench-") as tmp:
        text, ok = asyncio.run(bench(args, Path(tmp)))
    print(text)
    if args.write:
        replace_section(args.write, "Venue", text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
