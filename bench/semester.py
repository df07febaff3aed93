"""A box that runs all semester: the server's memory while it takes poll after poll of votes,
each poll closed after its votes, against its memory before the first vote; and its start-up
time on a data dir of 1,000,000 counted votes in 1,000 closed polls against an empty one.

Usage (from the repository root):

    .venv/bin/python bench/semester.py            # 1,000,000 votes in 1,000 polls, 200,000 live
    .venv/bin/python bench/semester.py --votes 100000 --polls 100 --live 100000

One room of --votes / --polls voters; every voter votes once in every poll. The phases, on one
fresh data dir:

1. setup: `opus serve` (free port; live results at most once a second per poll,
   OPUS_COALESCE_MS=1000, so that a thousand phones' results updates do not take the cores the
   votes need), the room, its voters joined through the API, and each voter's WebSocket open
   (`/ws?room=CODE&token=...`, as the attendee page holds one). RSS (VmRSS of the server
   process) then is "at start", the ratio's baseline: a box with its hall connected, before
   the first vote.
2. live polls (the first --live votes): poll after poll is created and opened, every voter
   votes once on their socket (`{"type": "vote", ...}`, answered `vote_accepted` once the vote
   is durable: the API's checks, the ledger and the group commit, then the workers), and the
   poll is closed (once its votes are answered: the last of them are counted after the
   close). RSS after each close. Here a server that kept every vote in memory would grow,
   by about 600 bytes a vote. The first polls' growth is the box warming up: SQLite's page
   caches fill (up to 2 MB per connection) and the allocators keep the high-water mark of a
   thousand votes in flight.
   Only these votes take the whole path: at about 500 µs of server CPU each (the sockets,
   workers, live results and notifications together) a million would take 10 to 20 minutes
   on 2 cores.
3. the rest of the semester: the other polls are created and opened through the API, the
   server is stopped, their votes are written to its queue as its group commit writes them
   (bench/drain.py's way), and the server is started again: it applies them before it
   answers (its own workers and apply code), and the polls are closed through the API.
   Checked: every live vote answered `vote_accepted`, every poll's `total_votes` is the number
   of voters.
4. start-up, right after the last poll closed: start-to-ready
   (`GET /healthz` 200) and RSS on that data dir, median of --starts restarts, against the
   same on an empty data dir (started once before, so that both are restarts). On the last
   restart, the first live vote sent again with its event id is answered 202 (the ledger no
   longer holds it: SQLite does), and a new vote in that poll 409 `poll_not_open`.

Prints a Markdown table to stdout, progress to stderr; --write replaces the `## Semester`
section of the given file, --data writes the figures as JSON. Exit status 1 only when a
correctness check failed (a vote not accepted, a poll not counted in full, a server that did not
stop with exit 0); a missed goal is only marked in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from drain import Server, write_backlog
from herd import raise_nofile
from ingest import (
    ADMIN_TOKEN,
    Poll,
    Results,
    api,
    machine_facts,
    metrics,
    progress,
    replace_section,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ENV = {"OPUS_COALESCE_MS": "1000"}
RSS_GOAL = 1.2
KEPT_BYTES = 600  # what a vote held in the ledger costs (tests/test_ledger.py: 10 MB for 18,000)


def rss_mb(pid: int) -> float:
    found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(found.group(1)) / 1024 if found else float("nan")


class Hall:
    """The room and its voters, each with their socket open on the server."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session
        self.room: dict[str, Any] = {}
        self.voters: list[dict[str, Any]] = []
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.first: list[str] = []  # the first voter's first vote: poll, event id, option

    async def open(self, voters: int) -> None:
        self.room = await api(
            self.session,
            "POST",
            self.base + "/api/v1/rooms",
            201,
            headers=ADMIN,
            json={"title": "A semester"},
        )
        gate = asyncio.Semaphore(32)

        async def join() -> dict[str, Any]:
            async with gate:
                url = self.base + "/api/v1/join"
                return await api(self.session, "POST", url, 201, json={"code": self.room["code"]})

        self.voters = list(await asyncio.gather(*(join() for _ in range(voters))))
        for voter in self.voters:
            self.sockets.append(
                await self.session.ws_connect(
                    f"{self.base}/ws?room={self.room['code']}&token={voter['voter_token']}",
                    heartbeat=None,
                )
            )

    async def poll(self, number: int) -> dict[str, Any]:
        """A new poll, open."""
        labels = [f"Option {j + 1}" for j in range(2 + number % 3)]
        poll = await api(
            self.session,
            "POST",
            f"{self.base}/api/v1/rooms/{self.room['id']}/polls",
            201,
            headers=ADMIN,
            json={"question": f"Question {number + 1}?", "kind": "single", "options": labels},
        )
        url = f"{self.base}/api/v1/polls/{poll['id']}/open"
        await api(self.session, "POST", url, 200, headers=ADMIN)
        return poll

    async def vote(self, poll: dict[str, Any]) -> int:
        """Every voter votes once on their socket; returns how many were answered
        `vote_accepted` (the others were refused, or their socket closed)."""
        options = [o["id"] for o in poll["options"]]

        async def one(n: int, ws: aiohttp.ClientWebSocketResponse) -> bool:
            event_id, option = str(uuid.uuid4()), options[n % len(options)]
            await ws.send_str(
                f'{{"type":"vote","poll_id":"{poll["id"]}","event_id":"{event_id}",'
                f'"option_ids":["{option}"]}}'
            )
            if n == 0 and not self.first:  # sent again after the restarts
                self.first = [poll["id"], event_id, option]
            while True:  # results and poll messages come on the same socket: skip them
                message = await ws.receive(timeout=120)
                if message.type != aiohttp.WSMsgType.TEXT:
                    return False
                if event_id in message.data:
                    return "vote_accepted" in message.data

        answered = await asyncio.gather(*(one(n, ws) for n, ws in enumerate(self.sockets)))
        return sum(answered)

    async def hang_up(self) -> None:
        for ws in self.sockets:
            await ws.close()


async def close(session: aiohttp.ClientSession, base: str, poll_id: str) -> None:
    await api(session, "POST", f"{base}/api/v1/polls/{poll_id}/close", 200, headers=ADMIN)


async def live(
    server: Server, args: argparse.Namespace, res: Results, data: dict[str, Any]
) -> tuple[bool, list[Poll], list[str]]:
    """Phases 1 and 2, and the rest of the semester's polls opened; returns whether every
    live vote was accepted, the polls left to fill, and the voters' ids."""
    pid = server.proc.pid
    voters = args.votes // args.polls
    polls = args.live // voters
    data["rss_ready_mb"] = rss_mb(pid)
    connector = aiohttp.TCPConnector(limit=0)  # each socket holds a connection of its own
    async with aiohttp.ClientSession(connector=connector) as session:
        hall = Hall(server.base, session)
        progress(f"setup: a room, {voters:,} voters joined, each with a socket open")
        await hall.open(voters)
        await asyncio.sleep(1)  # the joins' events and notifications settle
        start = data["rss_start_mb"] = rss_mb(pid)
        rss: list[float] = []
        accepted = 0
        started = time.monotonic()
        for number in range(polls):
            poll = await hall.poll(number)
            accepted += await hall.vote(poll)
            await close(session, server.base, poll["id"])
            rss.append(rss_mb(pid))
            if (number + 1) % max(1, polls // 20) == 0:
                rate = accepted / (time.monotonic() - started)
                progress(
                    f"live: {number + 1:,} polls closed, {accepted:,} votes "
                    f"({rate:,.0f}/s), RSS {rss[-1]:.1f} MB"
                )
        took = time.monotonic() - started
        await hall.hang_up()
        data["first_vote"], data["first_token"] = hall.first, hall.voters[0]["voter_token"]
        progress(f"rest: opening the other {args.polls - polls:,} polls")
        gate = asyncio.Semaphore(8)

        async def opened(number: int) -> Poll:
            async with gate:
                poll = await hall.poll(number)
            return Poll(poll["id"], [o["id"] for o in poll["options"]])

        rest = list(await asyncio.gather(*(opened(n) for n in range(polls, args.polls))))
        data["room_id"] = hall.room["id"]
    votes = polls * voters
    tenth = rss[max(0, polls // 10 - 1)]
    end = rss[-1]
    later = votes - (polls // 10) * voters  # the votes after the first tenth
    data.update(
        live_votes=votes,
        live_polls=polls,
        rss_tenth_mb=tenth,
        rss_end_mb=end,
        rss_ratio=end / start,
        rate=accepted / took,
    )
    res.add(
        "live votes: through the attendees' sockets, every one answered vote_accepted",
        f"{accepted:,} of {votes:,} in {polls:,} polls of {voters:,} voters, each closed after "
        f"its votes; {took:.0f} s ({accepted / took:,.0f} votes/s)",
        f"all {votes:,}",
        accepted == votes,
    )
    res.add(
        "RSS right after start / at start (room, voters, sockets open)",
        f"{data['rss_ready_mb']:.1f} / {start:.1f} MB",
        "",
    )
    res.add(
        f"RSS after {polls // 10:,} closed polls / after all {polls:,} (peak)",
        f"{tenth:.1f} / {end:.1f} MB ({max(rss):.1f} MB)",
        "",
    )
    res.add(
        f"ratio RSS after {votes:,} live votes in {polls:,} closed polls : RSS at start",
        f"{end / start:.2f} (after the first tenth: {end / tenth:.2f})",
        f"<= {RSS_GOAL}",
        end / start <= RSS_GOAL,
    )
    res.add(
        "RSS growth after the first tenth",
        f"{end - tenth:.1f} MB over {later:,} votes",
        f"a ledger keeping every vote: about {later * KEPT_BYTES / 1024**2:.0f} MB more",
    )
    return accepted == votes, rest, [v["voter_id"] for v in hall.voters]


async def finish(server: Server, room_id: str, rest: list[Poll]) -> list[int]:
    """Phase 3 once the queued votes are applied: the rest of the polls closed; returns every
    poll's total_votes."""
    async with aiohttp.ClientSession() as session:
        gate = asyncio.Semaphore(8)

        async def closed(poll_id: str) -> None:
            async with gate:
                await close(session, server.base, poll_id)

        await asyncio.gather(*(closed(poll.id) for poll in rest))
        deadline = time.monotonic() + 600
        while (await metrics(session, server.base)).get("opus_queue_depth", 0) > 0:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        url = f"{server.base}/api/v1/rooms/{room_id}"
        room = await api(session, "GET", url, 200, headers=ADMIN)
    return [int(poll["total_votes"]) for poll in room["polls"]]


async def retry_first(base: str, first: list[str], voter_token: str) -> tuple[int, int]:
    """The first live vote sent again (same event id), then a new vote in its poll: their
    statuses, or -1 when the answer was not the one expected (202 with the event id; 409
    poll_not_open)."""
    poll_id, event_id, option = first
    headers = {"Authorization": f"Bearer {voter_token}"}
    url = f"{base}/api/v1/polls/{poll_id}/votes"
    async with aiohttp.ClientSession() as session:
        body = {"event_id": event_id, "option_ids": [option]}
        async with session.post(url, json=body, headers=headers) as again:
            again_ok = again.status == 202 and (await again.json())["event_id"] == event_id
        async with session.post(url, json={"option_ids": [option]}, headers=headers) as new:
            refused = (await new.json())["error"]["code"] == "poll_not_open"
    return (again.status if again_ok else -1, new.status if refused else -1)


def restarts(
    data_dir: Path, work: Path, name: str, count: int
) -> tuple[list[float], list[float], list[int | None]]:
    """Start-to-ready seconds, RSS when ready, and exit codes of `count` restarts."""
    times, sizes, codes = [], [], []
    for i in range(count):
        server = Server(data_dir, work / f"{name}-{i}.log", env=ENV)
        times.append(server.ready_s)
        sizes.append(rss_mb(server.proc.pid))
        codes.append(server.stop())
    return times, sizes, codes


def bench(args: argparse.Namespace, work: Path) -> tuple[Results, dict[str, Any]]:
    res, data = Results(), {}
    voters = args.votes // args.polls
    codes: list[int | None] = []
    data_dir = work / "data"

    progress("start: the server on a fresh data dir")
    server = Server(data_dir, work / "live.log", env=ENV)
    try:
        accepted, rest, voter_ids = asyncio.run(live(server, args, res, data))
    finally:
        codes.append(server.stop())

    queued = len(rest) * voters
    progress(f"rest: {queued:,} votes into the stopped server's queue")
    write_backlog(data_dir / "queue.db", rest, voter_ids, queued)
    progress(f"rest: the server applies {queued:,} queued votes before it answers")
    server = Server(data_dir, work / "rest.log", timeout=3600, env=ENV)
    applying_s = server.ready_s
    try:
        totals = asyncio.run(finish(server, data["room_id"], rest))
    finally:
        codes.append(server.stop())
    found = re.search(r"applied (\d+) queued votes", (work / "rest.log").read_text())
    applied = int(found.group(1)) if found else 0
    res.add(
        "the rest: votes queued while the server was stopped, applied by its workers at start",
        f"{applied:,} of {queued:,} in {len(rest):,} polls ({applying_s:.0f} s to ready), "
        "then the polls closed",
        f"all {queued:,}",
        applied == queued,
    )
    counted = totals == [voters] * args.polls
    res.add(
        "polls' total_votes",
        f"{sum(totals):,} in {len(totals):,} polls ({sum(t == voters for t in totals):,} "
        f"with {voters:,})",
        f"{args.polls * voters:,}, each poll {voters:,}",
        counted,
    )

    size_mb = sum(f.stat().st_size for f in data_dir.glob("*.db*")) / 1024**2
    progress(f"start-up: {args.starts} restarts on {size_mb:,.0f} MB of data, then on an empty dir")
    full, full_rss, full_codes = restarts(data_dir, work, "full", args.starts - 1)
    server = Server(data_dir, work / f"full-{args.starts - 1}.log", env=ENV)
    full.append(server.ready_s)
    full_rss.append(rss_mb(server.proc.pid))
    try:
        again, new = asyncio.run(retry_first(server.base, data["first_vote"], data["first_token"]))
    finally:
        full_codes.append(server.stop())
    empty_dir = work / "empty"
    Server(empty_dir, work / "empty-first.log", env=ENV).stop()
    empty, empty_rss, empty_codes = restarts(empty_dir, work, "empty", args.starts)
    codes += full_codes + empty_codes
    full_s, empty_s = statistics.median(full), statistics.median(empty)
    full_mb, empty_mb = statistics.median(full_rss), statistics.median(empty_rss)
    data.update(
        votes=args.polls * voters,
        polls=args.polls,
        start_full_s=full_s,
        start_empty_s=empty_s,
        start_full_rss_mb=full_mb,
        start_empty_rss_mb=empty_mb,
        data_mb=size_mb,
    )
    total = args.polls * voters
    res.add(
        f"start to ready on {total:,} counted votes in {args.polls:,} closed polls "
        f"({size_mb:,.0f} MB) / on an empty data dir",
        f"{full_s:.2f} s / {empty_s:.2f} s (medians of {args.starts}) = {full_s / empty_s:.2f}",
        "seconds, not a scan per vote",
    )
    res.add(
        "RSS when ready, on that data dir / on an empty one",
        f"{full_mb:.1f} / {empty_mb:.1f} MB = {full_mb / empty_mb:.2f}",
        "",
    )
    retried = again == 202 and new == 409
    res.add(
        "after a restart: the first live vote sent again / a new vote in its (closed) poll",
        f"{again} / {new}",
        "202 / 409 poll_not_open",
        retried,
    )
    stopped = all(code == 0 for code in codes)
    res.add("exit status after each SIGTERM", " ".join(str(c) for c in codes), "0", stopped)
    res.ok = accepted and applied == queued and counted and retried and stopped
    return res, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000, help="votes in the semester")
    parser.add_argument("--polls", type=int, default=1_000, help="polls, one after another")
    parser.add_argument(
        "--live",
        type=int,
        default=200_000,
        help="of the votes, those sent through the attendees' sockets (the first polls')",
    )
    parser.add_argument("--starts", type=int, default=3, help="timed restarts of each data dir")
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help="replace the '## Semester' section of FILE"
    )
    parser.add_argument("--data", type=Path, metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    if not 0 < args.live <= args.votes or args.votes < args.polls:
        parser.error("need 0 < --live <= --votes, and --votes >= --polls")
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="opus-bench-semester-") as tmp:
        res, data = bench(args, Path(tmp))
    command = " ".join(["bench/semester.py", *sys.argv[1:]])
    body = (
        f"{time.strftime('%Y-%m-%d')}: `{command}` on {machine_facts()}.\n\n"
        "One room; poll after poll is opened, voted in by every voter and closed. The live "
        "votes go through the attendees' sockets into a running server (its memory is "
        "measured meanwhile); the rest are queued while it is stopped and applied by its "
        "workers at start. The ledger keeps only the votes of polls that are not closed, and "
        "start-up reads only those.\n\n" + res.markdown()
    )
    print(body)
    if args.write:
        replace_section(args.write, "Semester", body)
    if args.data:
        args.data.write_text(json.dumps({**data, "ok": res.ok, "table": res.markdown()}))
    if not res.ok:
        progress("FAILED: see the table")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
