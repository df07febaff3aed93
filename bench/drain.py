"""Worker drain rate: how many queued votes per second the workers apply, against GET /healthz
req/s of the same server in the same run.

Usage (from the repository root):

    .venv/bin/python bench/drain.py                       # 100,000 queued votes
    .venv/bin/python bench/drain.py --votes 100000 --write docs/benchmarks.md

Needs `wrk`. The phases, each on one fresh data dir:

1. setup: a server started here (`.venv/bin/opus serve`, free port), a room with --polls open
   polls and --votes / --polls voters joined through the API; then SIGTERM (exit 0).
2. backlog: with the server stopped, so that no worker applies anything, --votes votes (each
   voter once in each poll) are written to its queue by the server's own group commit
   (`VoteQueue.put_many`, in commits of 200, with the message the vote handler writes:
   `Entry.payload()`). The same state as a server killed with that many votes acknowledged
   and not yet applied.
3. drain: the server is started on that data dir. Before it answers its first request it
   applies the whole queue (recovery, in app.py), so the drain time is its start-to-ready time
   less the start-to-ready of the same restart with an empty queue (phase 4, median of 3).
   Checked: the server's log says it applied exactly --votes votes, `opus_votes_counted_total`
   is --votes, and the polls' `total_votes` add up to --votes.
4. baseline: restarts on the now empty queue (start-to-ready), then wrk GET /healthz for
   --seconds on the last one.

--ingest-rate (bench/run.py passes the durable vote rate that bench/ingest.py measured in the
same run) adds the ratio of the drain rate to it: at least 1 means the workers keep up with the
votes the server can take. Prints a Markdown table to stdout, progress to stderr; --write
replaces the `## Worker drain` section of the given file, --data writes the figures as JSON.
Exit status 1 when a vote was not applied exactly once or the server did not stop with exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from ingest import (
    ADMIN_TOKEN,
    HOST,
    LUA_DONE,
    ROOT,
    Poll,
    Results,
    api,
    free_port,
    machine_facts,
    make_polls,
    metrics,
    progress,
    replace_section,
    run_wrk,
)

from opus import events, kinds
from opus.ledger import Entry
from opus.queue import VoteQueue

COMMIT = 200  # votes per group commit while writing the backlog


def healthy(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return s.recv(16).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


class Server:
    """`opus serve` on `data_dir` (with `env`: settings), timed from the start of the process
    to /healthz 200."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        timeout: float = 600.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        env = {
            **os.environ,
            **(env or {}),
            "OPUS_ADMIN_TOKEN": ADMIN_TOKEN,
            "OPUS_CONFIG": os.devnull,
        }
        self._log = log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/opus"),
                "serve",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        while not healthy(self.port):
            if self.proc.poll() is not None or time.perf_counter() - started > timeout:
                self._log.close()
                raise RuntimeError(
                    f"the server did not become ready; see {log_path}:\n"
                    + log_path.read_text()[-2000:]
                )
            time.sleep(0.005)  # short: the figure is this start time
        self.ready_s = time.perf_counter() - started

    def stop(self) -> int | None:
        """SIGTERM; the exit code, or None when it had to be killed after 60 s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._log.close()
        return code


async def setup(base: str, polls: int, voters: int) -> tuple[list[Poll], list[str]]:
    """The room, its open polls and the voters' ids, through the API."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        code, made = await make_polls(session, base, polls)
        gate = asyncio.Semaphore(64)

        async def one() -> str:
            async with gate:
                body = await api(session, "POST", base + "/api/v1/join", 201, json={"code": code})
                return str(body["voter_id"])

        return made, list(await asyncio.gather(*(one() for _ in range(voters))))


def write_backlog(queue_path: Path, polls: list[Poll], voters: list[str], count: int) -> float:
    """`count` votes into the stopped server's queue; returns the seconds it took."""
    started = time.perf_counter()
    queue = VoteQueue(queue_path)
    try:
        batch: list[tuple[str, str]] = []
        for i in range(count):
            poll = polls[i % len(polls)]
            voter = voters[i // len(polls)]
            choice = kinds.Options((poll.option_ids[(i // len(polls)) % len(poll.option_ids)],))
            batch.append((events.uuid7(), Entry(poll.id, voter, choice).payload()))
            if len(batch) == COMMIT or i == count - 1:
                problems = queue.put_many(batch)
                if any(problems):
                    raise RuntimeError(f"the queue refused votes: {problems}")
                batch = []
    finally:
        queue.close()
    return time.perf_counter() - started


async def totals(base: str, polls: list[Poll]) -> tuple[int, dict[str, float]]:
    """The polls' total_votes added up, and the server's metrics."""
    async with aiohttp.ClientSession() as session:
        total = 0
        for poll in polls:
            body = await api(session, "GET", f"{base}/api/v1/polls/{poll.id}/results", 200)
            total += int(body["total_votes"])
        return total, await metrics(session, base)


def bench(args: argparse.Namespace, work: Path) -> tuple[Results, dict[str, Any]]:
    res = Results()
    data_dir = work / "data"
    codes: list[int | None] = []
    voters_needed = -(-args.votes // args.polls)

    progress(f"setup: {args.polls} polls, {voters_needed:,} voters")
    server = Server(data_dir, work / "setup.log")
    try:
        polls, voters = asyncio.run(setup(server.base, args.polls, voters_needed))
    finally:
        codes.append(server.stop())

    progress(f"backlog: writing {args.votes:,} votes to the stopped server's queue")
    write_s = write_backlog(data_dir / "queue.db", polls, voters, args.votes)

    progress(f"drain: starting the server on {args.votes:,} queued votes")
    server = Server(data_dir, work / "drain.log")
    with_backlog_s = server.ready_s
    try:
        total, scrape = asyncio.run(totals(server.base, polls))
    finally:
        codes.append(server.stop())
    counted = scrape.get("opus_votes_counted_total", 0.0)
    applying_s = scrape.get("opus_worker_apply_seconds_sum", 0.0)
    found = re.search(r"applied (\d+) queued votes", (work / "drain.log").read_text())
    applied = int(found.group(1)) if found else 0

    progress("baseline: restarts on the empty queue, then wrk GET /healthz")
    empty: list[float] = []
    for i in range(3):
        server = Server(data_dir, work / f"empty-{i}.log")
        empty.append(server.ready_s)
        try:
            if i == 2:
                script = work / "healthz.lua"
                script.write_text(LUA_DONE)
                healthz = asyncio.run(
                    run_wrk(server.base + "/healthz", script, args.seconds, 2, 64)
                ).rate
        finally:
            codes.append(server.stop())

    empty_s = statistics.median(empty)
    drain_s = max(with_backlog_s - empty_s, 1e-3)
    rate = args.votes / drain_s
    res.add(
        "votes queued while no worker ran (written in commits of 200)",
        f"{args.votes:,} ({args.votes / write_s:,.0f} votes/s written)",
        "",
    )
    res.add(
        "start to ready with that backlog / with an empty queue",
        f"{with_backlog_s:.2f} s / {empty_s:.2f} s (median of {len(empty)})",
        "",
    )
    res.add("drain rate: backlog / difference", f"{rate:,.0f} votes/s ({drain_s:.2f} s)", "")
    res.add(
        "of which applying batches (opus_worker_apply_seconds_sum)",
        f"{applying_s:.2f} s, {scrape.get('opus_worker_batch_size_count', 0):,.0f} batches",
        "",
    )
    res.add("GET /healthz (wrk, same server, empty queue)", f"{healthz:,.0f} req/s", "baseline")
    res.add("ratio drain votes/s : healthz req/s", f"{rate / healthz:.2f}", "")
    if args.ingest_rate:
        res.add(
            "ratio drain votes/s : durable ingest votes/s (bench/ingest.py, this run)",
            f"{rate / args.ingest_rate:.2f} ({args.ingest_rate:,.0f} votes/s)",
            ">= 1: workers keep up",
            rate >= args.ingest_rate,
        )
    exact = applied == args.votes and total == args.votes and int(counted) == args.votes
    res.add(
        "applied (log) / opus_votes_counted_total / polls' total_votes",
        f"{applied:,} / {int(counted):,} / {total:,}",
        f"all {args.votes:,}",
        exact,
    )
    stopped = all(code == 0 for code in codes)
    res.add("exit status after each SIGTERM", " ".join(str(c) for c in codes), "0", stopped)
    res.ok = exact and stopped
    data = {
        "votes": args.votes,
        "drain_s": drain_s,
        "rate": rate,
        "healthz_rate": healthz,
        "ready_backlog_s": with_backlog_s,
        "ready_empty_s": empty,
        "applying_s": applying_s,
    }
    return res, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=100_000, help="votes in the backlog")
    parser.add_argument("--polls", type=int, default=20, help="open polls in the room")
    parser.add_argument("--seconds", type=float, default=5, help="length of the wrk baseline")
    parser.add_argument(
        "--ingest-rate",
        type=float,
        metavar="VOTES_PER_S",
        help="durable vote rate measured in the same run, for a ratio",
    )
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help="replace the '## Worker drain' section of FILE"
    )
    parser.add_argument("--data", type=Path, metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/drain.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="opus-bench-drain-") as tmp:
        res, data = bench(args, Path(tmp))
    command = " ".join(["bench/drain.py", *sys.argv[1:]])
    body = (
        f"{time.strftime('%Y-%m-%d')}: `{command}` on {machine_facts()}.\n\n"
        "A backlog is written to the queue of a stopped server (as if it had been killed "
        "with those votes acknowledged); on start, the server applies the whole queue "
        "before it answers, so the drain time is the start-to-ready time less that of the "
        "same restart on an empty queue.\n\n" + res.markdown()
    )
    print(body)
    if args.write:
        replace_section(args.write, "Worker drain", body)
    if args.data:
        args.data.write_text(json.dumps({**data, "ok": res.ok, "table": res.markdown()}))
    if not res.ok:
        progress("FAILED: see the table")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
