"""Ingest benchmark: how many durable votes per second one Opus server takes, and how fast.

Usage (from the repository root):

    make bench-ingest                       # or: .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --seconds 5
    .venv/bin/python bench/ingest.py --write docs/benchmarks.md

Needs `wrk` (Debian: `apt-get install wrk`). The script starts its own server
(`.venv/bin/opus serve` on a free port, fresh data dir), then runs these phases:

1. setup: a room, --polls open single-choice polls, voters joined through the API;
2. baseline: wrk against GET /healthz;
3. max durable vote rate: wrk POSTing votes, every request a new (voter, poll) pair, so every
   request is a real vote answered 202; the rate is the `opus_votes_accepted_total` delta over
   the run;
   `/metrics` is sampled every 0.25 s meanwhile (accepted and counted totals, queue depth:
   the throughput and queue-depth charts), and the queue's drain time measured after;
4. latency at 25%, 50% and 75% of that rate (--levels): an open-loop generator (fixed arrival
   rate, raw keep-alive connections) timing each vote from its *scheduled* send time, so
   queueing delay counts; then the same generator on GET /healthz at the same rate, the floor
   that the client and machine add;
5. check: the polls' `total_votes` add up to `opus_votes_accepted_total`.

Both load phases also report the group commits from the server's histograms: mean votes and
milliseconds per commit, and how busy the one commit thread was (near 100%: the bottleneck).
`--env OPUS_WORKERS=1` (repeatable) passes a setting to the server.

It prints a Markdown table to stdout, progress to stderr; --write replaces the `## Ingest`
section of the given file (created with the machine's facts when absent); --data writes the
raw figures as JSON (latencies, /metrics samples) for bench/charts.py. Missed performance
goals are marked in the table; the exit status is 1 only when a request failed, a vote was not
counted exactly once, or the server did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
HOST = "127.0.0.1"
STEAL_WARN_PCT = 5  # more than this, and a run says its figures are not comparable

# Shared by both wrk runs: one parseable line at the end. The vote script adds its hooks above.
LUA_DONE = """
function done(summary, latency, requests)
  local wrapped = 0
  for _, t in ipairs(threads or {}) do wrapped = wrapped + (t:get("wrapped") or 0) end
  local e = summary.errors
  io.write(string.format("WRK-RESULT %d %d %d %d %d %d %d %d %.0f %.0f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    wrapped, latency:percentile(50), latency:percentile(99)))
end
"""

# Each thread takes every n-th voter and walks (voter, poll) pairs in order: no pair repeats
# unless a thread runs out of pairs, which `wrapped` reports.
LUA_VOTES = """
local tokens_file, polls_file, nthreads = %(tokens)s, %(polls)s, %(nthreads)d
threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  polls, tokens, made, wrapped = {}, {}, 0, 0
  for line in io.lines(polls_file) do
    local poll_id, options = line:match("(%%S+) (%%S+)")
    local opts = {}
    for o in options:gmatch("[^,]+") do table.insert(opts, o) end
    table.insert(polls, {path = "/api/v1/polls/" .. poll_id .. "/votes", options = opts})
  end
  local i = 0
  for line in io.lines(tokens_file) do
    if i %% nthreads == tid then table.insert(tokens, "Bearer " .. line) end
    i = i + 1
  end
end

function request()
  local n = #polls
  local v = math.floor(made / n)
  local poll = polls[made %% n + 1]
  if v >= #tokens then wrapped = 1; v = v %% #tokens end
  local option = poll.options[(made + v) %% #poll.options + 1]
  made = made + 1
  return wrk.format("POST", poll.path,
    {["Authorization"] = tokens[v + 1], ["Content-Type"] = "application/json"},
    '{"option_ids":["' .. option .. '"]}')
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    socket_errors: int
    non_2xx: int
    wrapped: bool
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s


@dataclass
class Poll:
    id: str
    option_ids: list[str]


@dataclass
class Results:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    ok: bool = True

    def add(self, name: str, value: str, goal: str = "", met: bool | None = None) -> None:
        if met is not None:
            goal += " (met)" if met else " (missed)"
        self.rows.append((name, value, goal))

    def markdown(self) -> str:
        lines = ["| measure | value | goal |", "| --- | --- | --- |"]
        lines += [f"| {n} | {v} | {g} |" for n, v, g in self.rows]
        return "\n".join(lines)


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- the server -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, ticks stolen by the hypervisor) of the whole machine so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]  # user nice system idle iowait irq softirq steal


def stolen_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time the host gave to other guests between two readings.
    On a shared VM this swings from 0 to 30% between runs; every rate and latency here moves
    with it, so each phase reports it."""
    total = after[0] - before[0]
    return 100 * (after[1] - before[1]) / total if total else 0.0


async def healthy(
    session: aiohttp.ClientSession, base: str, alive: Callable[[], bool], limit_s: float
) -> bool:
    """Whether GET {base}/healthz answers 200 within `limit_s`, while `alive()` holds."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and alive():
        try:
            async with session.get(base + "/healthz") as r:
                if r.status == 200:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    return False


class Server:
    def __init__(self, data_dir: Path, port: int, extra_env: list[str]) -> None:
        self.port = port
        self.base = f"http://{HOST}:{port}"
        self.log_path = data_dir.parent / "server.log"
        env = {
            **os.environ,
            **dict(e.split("=", 1) for e in extra_env),
            "OPUS_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/opus"),
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, session: aiohttp.ClientSession, limit_s: float = 30.0) -> None:
        if not await healthy(session, self.base, lambda: self.proc.poll() is None, limit_s):
            raise RuntimeError(
                f"the server did not become ready; see {self.log_path}:\n"
                + self.log_path.read_text()[-2000:]
            )

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM, then wait; returns (exit code or None when it hung, seconds)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._log.close()
        return code, time.monotonic() - started


async def metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """Every sample of GET /metrics, keyed by its name with labels."""
    async with session.get(base + "/metrics") as r:
        text = await r.text()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in ("", "#"))
    return {name: float(value) for name, value in samples}


def commit_figures(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Group commits between two scrapes: mean votes and time per commit, and how busy the
    single commit thread was (near 100%: it is the bottleneck)."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    commits = delta("opus_group_commit_size_count") or 1.0
    return (
        f"{delta('opus_group_commit_size_sum') / commits:.1f} votes, "
        f"{1000 * delta('opus_group_commit_seconds_sum') / commits:.1f} ms per commit; "
        f"committer busy {100 * delta('opus_group_commit_seconds_sum') / seconds:.0f}%"
    )


def stall_figures(before: dict[str, float], after: dict[str, float]) -> str:
    """How often the event loop was held over 20 ms, and by worker batches in particular."""

    def over_20ms(name: str) -> int:
        total = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        fast = after.get(f'{name}_bucket{{le="0.02"}}', 0.0) - before.get(
            f'{name}_bucket{{le="0.02"}}', 0.0
        )
        return int(total - fast)

    return (
        f"loop late > 20 ms: {over_20ms('opus_event_loop_lag_seconds')} times; "
        f"worker batches > 20 ms: {over_20ms('opus_worker_apply_seconds')}"
    )


async def wait_drained(session: aiohttp.ClientSession, base: str, limit_s: float = 120) -> float:
    """Seconds until opus_queue_depth is 0 (polled every 50 ms)."""
    started = time.monotonic()
    while (await metrics(session, base))["opus_queue_depth"] > 0:
        if time.monotonic() - started > limit_s:
            raise RuntimeError(f"the queue did not drain within {limit_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# -- setup through the API --------------------------------------------------------------------


async def api(
    session: aiohttp.ClientSession, method: str, url: str, want: int, **kw: Any
) -> dict[str, Any]:
    async with session.request(method, url, **kw) as r:
        body = await r.json()
        if r.status != want:
            raise RuntimeError(f"{method} {url}: {r.status} {body}")
        return body  # type: ignore[no-any-return]


async def make_polls(
    session: aiohttp.ClientSession, base: str, count: int
) -> tuple[str, list[Poll]]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    room = await api(
        session,
        "POST",
        base + "/api/v1/rooms",
        201,
        headers=admin,
        json={"title": "Ingest benchmark"},
    )
    polls = []
    for i in range(count):
        labels = [f"Option {j + 1}" for j in range(2 + i % 3)]  # 2-4 options
        poll = await api(
            session,
            "POST",
            f"{base}/api/v1/rooms/{room['id']}/polls",
            201,
            headers=admin,
            json={"question": f"Question {i + 1}?", "kind": "single", "options": labels},
        )
        await api(session, "POST", f"{base}/api/v1/polls/{poll['id']}/open", 200, headers=admin)
        polls.append(Poll(poll["id"], [o["id"] for o in poll["options"]]))
    return room["code"], polls


async def join(session: aiohttp.ClientSession, base: str, code: str, count: int) -> list[str]:
    gate = asyncio.Semaphore(64)

    async def one() -> str:
        async with gate:
            body = await api(session, "POST", base + "/api/v1/join", 201, json={"code": code})
            return str(body["voter_token"])

    return list(await asyncio.gather(*(one() for _ in range(count))))


# -- wrk ---------------------------------------------------------------------------------------


async def run_wrk(
    url: str, script: Path, seconds: float, threads: int, connections: int
) -> WrkResult:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    match = re.search(r"^WRK-RESULT (.*)$", text, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    n = [float(x) for x in match.group(1).split()]
    return WrkResult(
        requests=int(n[0]),
        duration_s=n[1] / 1e6,
        socket_errors=int(n[2] + n[3] + n[4] + n[6]),
        non_2xx=int(n[5]),
        wrapped=n[7] > 0,
        p50_ms=n[8] / 1000,
        p99_ms=n[9] / 1000,
    )


def vote_script(work: Path, tokens: list[str], polls: list[Poll], threads: int) -> Path:
    tokens_file, polls_file = work / "tokens.txt", work / "polls.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    polls_file.write_text("".join(f"{p.id} {','.join(p.option_ids)}\n" for p in polls))
    script = work / "votes.lua"
    script.write_text(
        LUA_VOTES
        % {
            "tokens": json.dumps(str(tokens_file)),
            "polls": json.dumps(str(polls_file)),
            "nthreads": threads,
        }
        + LUA_DONE
    )
    return script


SAMPLED = ("opus_votes_accepted_total", "opus_votes_counted_total", "opus_queue_depth")


async def sample_metrics(
    session: aiohttp.ClientSession,
    base: str,
    into: list[tuple[float, ...]],
    stop: asyncio.Event,
    every_s: float = 0.25,
) -> None:
    """(seconds since the start, accepted total, counted total, queue depth) every `every_s`."""
    started = time.monotonic()
    while not stop.is_set():
        scrape = await metrics(session, base)
        into.append((time.monotonic() - started, *(scrape.get(name, 0.0) for name in SAMPLED)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


# -- open-loop latency ---------------------------------------------------------------------------


def vote_request(port: int, token: str, poll: Poll, option_id: str) -> bytes:
    body = json.dumps({"option_ids": [option_id]}).encode()
    head = (
        f"POST /api/v1/polls/{poll.id}/votes HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def open_loop(
    port: int, requests: list[bytes], rate: float, connections: int
) -> tuple[list[float], dict[int, int], float]:
    """Send `requests` at a fixed `rate` over keep-alive connections; returns each latency
    (seconds, from the scheduled send time), the count per status, and the elapsed time."""
    # Not loop.time(): uvloop's counts whole milliseconds, too coarse for a 1 ms floor.
    clock = time.perf_counter
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        while (item := await queue.get()) is not None:
            scheduled, request = item
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append(clock() - scheduled)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.5)  # let every connection open before the clock starts
    gc.freeze()  # a collection pause in this process would count as server latency
    gc.disable()
    try:
        start = clock()
        sent = 0
        while sent < len(requests):
            due = min(len(requests), int((clock() - start) * rate) + 1)
            for i in range(sent, due):
                queue.put_nowait((start + i / rate, requests[i]))
            sent = due
            await asyncio.sleep(max(0.0, start + sent / rate - clock()))
        for _ in tasks:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)
        return latencies, statuses, clock() - start
    finally:
        gc.enable()
        gc.unfreeze()


def latency_ms(latencies: list[float]) -> dict[float, float]:
    """p50, p90, p99 and p99.9 in milliseconds (nearest rank)."""
    ordered = sorted(latencies)
    return {
        q: 1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in (0.5, 0.9, 0.99, 0.999)
    }


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    work: Path
    server: Server
    session: aiohttp.ClientSession
    res: Results
    code: str = ""
    polls: list[Poll] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw figures for --data

    @property
    def base(self) -> str:
        return self.server.base

    async def scrape(self) -> dict[str, float]:
        return await metrics(self.session, self.base)

    def note_steal(self, phase: str, before: tuple[int, int]) -> None:
        pct = stolen_pct(before, machine_ticks())
        self.data.setdefault("steal_pct", {})[phase] = round(pct, 1)
        self.data["steal_warn_pct"] = STEAL_WARN_PCT
        if pct > STEAL_WARN_PCT:
            progress(
                f"WARNING: the host took {pct:.0f}% of this machine's CPU during "
                f"{phase}: the figures of this run are not comparable"
            )


async def phase_setup(run: Run) -> list[str]:
    """A room, its polls, and enough voters that wrk never repeats a (voter, poll) pair."""
    args = run.args
    progress(f"server ready on {run.base}; setup: {args.polls} polls")
    run.code, run.polls = await make_polls(run.session, run.base, args.polls)
    count = math.ceil(args.rate_cap * args.seconds * 1.25 / args.polls)  # room for uneven threads
    started = time.monotonic()
    tokens = await join(run.session, run.base, run.code, count)
    took = time.monotonic() - started
    progress(f"joined {count} voters in {took:.1f} s ({count / took:.0f}/s)")
    return tokens


async def phase_healthz(run: Run) -> float:
    args = run.args
    progress(f"baseline: wrk GET /healthz for {args.seconds:g} s")
    script = run.work / "healthz.lua"
    script.write_text(LUA_DONE)
    cpu, ticks = run.server.cpu_seconds(), machine_ticks()
    health = await run_wrk(
        run.base + "/healthz", script, args.seconds, args.wrk_threads, args.wrk_connections
    )
    cpu = (run.server.cpu_seconds() - cpu) / health.requests
    run.note_steal("GET /healthz", ticks)
    run.res.add("GET /healthz (wrk)", f"{health.rate:,.0f} req/s", "baseline")
    run.data["healthz_rate"] = health.rate
    run.data["healthz_cpu_us"] = cpu * 1e6
    return health.rate


async def phase_max_rate(run: Run, tokens: list[str], healthz_rate: float) -> float:
    args, res = run.args, run.res
    progress(f"max rate: wrk POST votes for {args.seconds:g} s")
    script = vote_script(run.work, tokens, run.polls, args.wrk_threads)
    before = await run.scrape()
    samples: list[tuple[float, ...]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_metrics(run.session, run.base, samples, stop))
    cpu, ticks = run.server.cpu_seconds(), machine_ticks()
    votes = await run_wrk(
        run.base + "/", script, args.seconds, args.wrk_threads, args.wrk_connections
    )
    run.note_steal("max vote rate", ticks)
    after = await run.scrape()
    drain = await wait_drained(run.session, run.base)
    # Server CPU per vote, counting the work to apply it: noisy neighbours move req/s far
    # more than they move CPU time per request, so this explains a ratio that moved.
    vote_cpu = (run.server.cpu_seconds() - cpu) / max(1, votes.requests)
    drained = await run.scrape()
    await asyncio.sleep(0.5)  # the chart shows the queue empty after the load
    stop.set()
    await sampler
    depths = [s[3] for s in samples if s[0] <= votes.duration_s]
    key = "opus_votes_accepted_total"
    rate = (after[key] - before[key]) / votes.duration_s
    res.add("durable votes (wrk; accepted delta / s)", f"{rate:,.0f} votes/s", "")
    res.add(
        "ratio votes/s : healthz req/s",
        f"{rate / healthz_rate:.2f}",
        ">= 0.6",
        rate / healthz_rate >= 0.6,
    )
    health_cpu, vote_us = run.data["healthz_cpu_us"], vote_cpu * 1e6
    res.add(
        "server CPU per request: GET /healthz : vote (applied)",
        f"{health_cpu:.0f} : {vote_us:.0f} µs = {health_cpu / vote_us:.2f}",
        "",
    )
    # Where a vote's time goes on the one event loop, from the server's own histograms.
    counted = (drained["opus_votes_counted_total"] - before["opus_votes_counted_total"]) or 1.0
    applying = (
        1e6
        * (drained["opus_worker_apply_seconds_sum"] - before["opus_worker_apply_seconds_sum"])
        / counted
    )
    committing = (
        1e6
        * (drained["opus_group_commit_seconds_sum"] - before["opus_group_commit_seconds_sum"])
        / counted
    )
    res.add(
        "per vote on the event loop: applying batches / group commit",
        f"{applying:.0f} / {committing:.0f} µs (wall time, fsync included)",
        "",
    )
    res.add(
        "CPU ratio with applying taken off this loop (a bound, not a run)",
        f"{health_cpu / max(1.0, vote_us - applying):.2f}",
        "",
    )
    res.add(
        "wrk vote requests / non-2xx / socket errors",
        f"{votes.requests:,} / {votes.non_2xx:,} / {votes.socket_errors:,}",
        "0 / 0",
        votes.non_2xx == 0 and votes.socket_errors == 0,
    )
    res.add(
        "wrk latency p50 / p99 (closed loop)", f"{votes.p50_ms:.1f} / {votes.p99_ms:.1f} ms", ""
    )
    res.add("group commits at max rate", commit_figures(before, after, votes.duration_s), "")
    res.add("queue depth, max of 0.25 s samples", f"{max(depths, default=0):,.0f}", "bounded")
    res.add("queue drain time after the load", f"{drain:.2f} s", "")
    if votes.wrapped:
        progress(
            f"WARNING: wrk ran out of fresh (voter, poll) pairs; raise --rate-cap "
            f"(now {args.rate_cap})"
        )
    res.ok &= votes.non_2xx == 0 and votes.socket_errors == 0 and not votes.wrapped
    run.data.update(
        vote_cpu_us=vote_us,
        apply_us=applying,
        commit_us=committing,
        vote_rate=rate,
        ratio=rate / healthz_rate,
        wrk_seconds=votes.duration_s,
        samples=samples,
        sampled=["seconds", *SAMPLED],
    )
    return rate


# The framework alone: aiohttp on uvloop as Opus runs it, a GET answering a small JSON body as
# /healthz does and a POST reading a JSON body and answering 202 as the vote route does, with
# none of Opus's work. Its POST : GET ratio is as high as the vote route's can be.
BARE_APP = """
import json, sys, uvloop
from aiohttp import web
async def get(request):
    return web.json_response({"status": "ok", "version": "0", "node_id": "0" * 36})
async def post(request):
    json.loads(await request.read())
    return web.Response(text='{"event_id": "0", "status": "accepted"}', status=202,
                        content_type="application/json")
app = web.Application()
app.router.add_get("/healthz", get)
app.router.add_post("/api/v1/polls/{poll_id}/votes", post)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""

# A vote's request line, headers and body (the bare app ignores the token; parsing it is part
# of the cost).
LUA_BARE_POST = """
wrk.method = "POST"
wrk.path = "/api/v1/polls/0197abcd-1234-7000-8000-000000000001/votes"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer v1.MDE5N2FiY2QtMTIzNC03MDAwLTgwMDAtMDAwMDAwMDAwMDA.x"
wrk.body = '{"option_ids":["0197abcd-1234-7000-8000-000000000002"]}'
"""


async def phase_framework(run: Run) -> None:
    """The same two wrk runs against a bare aiohttp app: the ceiling of the ratio."""
    args = run.args
    seconds = max(2.0, args.seconds / 2)
    progress(f"framework floor: bare aiohttp GET and POST for {seconds:g} s each")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BARE_APP,
        HOST,
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        if not await healthy(
            run.session, f"http://{HOST}:{port}", lambda: proc.returncode is None, 20
        ):
            raise RuntimeError("the bare aiohttp app did not start")
        get_lua, post_lua = run.work / "bare_get.lua", run.work / "bare_post.lua"
        get_lua.write_text(LUA_DONE)
        post_lua.write_text(LUA_BARE_POST + LUA_DONE)
        cpu, ticks = [cpu_seconds(proc.pid)], machine_ticks()
        get = await run_wrk(
            f"http://{HOST}:{port}/healthz",
            get_lua,
            seconds,
            args.wrk_threads,
            args.wrk_connections,
        )
        cpu.append(cpu_seconds(proc.pid))
        post = await run_wrk(
            f"http://{HOST}:{port}/", post_lua, seconds, args.wrk_threads, args.wrk_connections
        )
        cpu.append(cpu_seconds(proc.pid))
        run.note_steal("bare aiohttp", ticks)
    finally:
        proc.terminate()
        await proc.wait()
    ratio = post.rate / get.rate if get.rate else 0.0
    get_us = 1e6 * (cpu[1] - cpu[0]) / max(1, get.requests)
    post_us = 1e6 * (cpu[2] - cpu[1]) / max(1, post.requests)
    run.res.add(
        "bare aiohttp, no Opus code: POST with JSON : GET",
        f"{post.rate:,.0f} : {get.rate:,.0f} req/s = {ratio:.2f}; CPU per request "
        f"{get_us:.0f} : {post_us:.0f} µs = {get_us / post_us:.2f}",
        "the ceiling",
    )
    run.data.update(
        bare_get_rate=get.rate,
        bare_post_rate=post.rate,
        bare_ratio=ratio,
        bare_cpu_ratio=get_us / post_us,
        bare_post_cpu_us=post_us,
    )


async def phase_latency(run: Run, max_rate: float, level: float) -> None:
    """Open-loop POST latency at `level` times the maximum rate, then the /healthz floor."""
    args, res, polls = run.args, run.res, run.polls
    pct = f"{100 * level:.0f}%"
    target = level * max_rate
    count = math.ceil(target * args.seconds)
    voters = math.ceil(count / len(polls))
    progress(
        f"latency at {pct}: joining {voters} voters, then {count:,} votes at "
        f"{target:,.0f}/s, open loop, {args.latency_connections} connections"
    )
    tokens = await join(run.session, run.base, run.code, voters)
    requests = [
        vote_request(
            run.server.port,
            tokens[i // len(polls)],
            polls[i % len(polls)],
            polls[i % len(polls)].option_ids[(i // len(polls)) % 2],
        )
        for i in range(count)
    ]
    before, ticks = await run.scrape(), machine_ticks()
    latencies, statuses, elapsed = await open_loop(
        run.server.port, requests, target, args.latency_connections
    )
    run.note_steal(f"votes at {pct}", ticks)
    after = await run.scrape()
    ms = latency_ms(latencies)
    achieved = len(latencies) / elapsed
    res.add(
        f"open loop at {pct}: target / achieved rate",
        f"{target:,.0f} / {achieved:,.0f} votes/s",
        "achieved = target",
        achieved >= 0.95 * target,
    )
    # Issue 2's goal is set at half the maximum rate; the other levels show the curve.
    goal, met = ("p99 < 20 ms", ms[0.99] < 20) if level == 0.5 else ("", None)
    res.add(
        f"open loop at {pct}: vote latency p50 / p99 / p99.9",
        f"{ms[0.5]:.1f} / {ms[0.99]:.1f} / {ms[0.999]:.1f} ms",
        goal,
        met,
    )
    res.add(f"group commits at {pct}", commit_figures(before, after, elapsed), "")
    res.add(f"event loop stalls at {pct}", stall_figures(before, after), "")
    not_202 = {status: n for status, n in statuses.items() if status != 202}
    res.add(f"open loop at {pct}: answers other than 202", str(not_202 or 0), "0", not not_202)
    if achieved < 0.95 * target:
        progress(
            "WARNING: the generator fell behind its target rate: the server or this "
            "process could not keep up (latencies include the delay)"
        )
    res.ok &= not not_202

    # The same generator at the same rate on GET /healthz: what the client, the machine and
    # aiohttp add by themselves, to read the vote latencies against.
    seconds = min(3.0, args.seconds)
    progress(f"latency floor at {pct}: GET /healthz at {target:,.0f}/s for {seconds:g} s")
    healthz = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{run.server.port}\r\n\r\n".encode()
    floor, _, _ = await open_loop(
        run.server.port, [healthz] * math.ceil(target * seconds), target, args.latency_connections
    )
    floor_ms = latency_ms(floor)
    res.add(
        f"open loop at {pct}: GET /healthz p50 / p99 / p99.9 (floor)",
        f"{floor_ms[0.5]:.1f} / {floor_ms[0.99]:.1f} / {floor_ms[0.999]:.1f} ms",
        "",
    )
    run.data.setdefault("latency", []).append(
        {
            "level": level,
            "target": target,
            "achieved": achieved,
            "votes_ms": [round(1000 * x, 3) for x in latencies],
            "healthz_ms": [round(1000 * x, 3) for x in floor],
        }
    )


async def phase_check(run: Run) -> None:
    """Every accepted vote counted exactly once: the polls add up to the accepted counter."""
    progress("check: waiting for the queue to drain, then adding up the polls")
    await wait_drained(run.session, run.base)
    total = 0
    for poll in run.polls:
        body = await api(run.session, "GET", f"{run.base}/api/v1/polls/{poll.id}/results", 200)
        total += body["total_votes"]
    accepted = int((await run.scrape())["opus_votes_accepted_total"])
    same = total == accepted
    run.res.add(
        "sum of polls' total_votes vs opus_votes_accepted_total",
        f"{total:,} vs {accepted:,}",
        "equal",
        same,
    )
    run.res.ok &= same


async def bench(args: argparse.Namespace, work: Path) -> tuple[Results, dict[str, Any]]:
    res = Results()
    server = Server(work / "data", free_port(), args.env)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        run = Run(args, work, server, session, res)
        try:
            await server.wait_ready(session)
            tokens = await phase_setup(run)
            healthz_rate = await phase_healthz(run)
            max_rate = await phase_max_rate(run, tokens, healthz_rate)
            await phase_framework(run)
            for level in args.levels:
                await phase_latency(run, max_rate, level)
            await phase_check(run)
            steal = run.data.get("steal_pct", {})
            res.add(
                "CPU stolen by the host (other guests) during each load phase",
                ", ".join(f"{phase} {pct:.0f}%" for phase, pct in steal.items()),
                f"< {STEAL_WARN_PCT}% for comparable figures",
            )
        finally:
            code, took = server.stop()
            progress(f"server stopped: exit {code} after {took:.1f} s")
            if code != 0:
                print(server.log_path.read_text()[-4000:], file=sys.stderr)
    res.add("exit status after SIGTERM", f"{code} ({took:.1f} s)", "0", code == 0)
    res.ok &= code == 0
    return res, run.data


# -- docs/benchmarks.md ------------------------------------------------------------------------


def machine_facts() -> str:
    memory = "unknown memory"
    with contextlib.suppress(OSError, AttributeError):
        found = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        memory = f"{int(found.group(1)) / 1024**2:.1f} GiB memory"  # type: ignore[union-attr]
    return (
        f"{os.cpu_count()} cores, {memory}, Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def replace_section(path: Path, title: str, body: str) -> None:
    """Write `## {title}` of docs/benchmarks.md, keeping the other sections."""
    if path.exists():
        text = path.read_text()
    else:
        text = (
            "# Benchmarks\n\nThe server and the load generators share one machine: "
            f"{machine_facts()}.\n\nEach section comes from its script in bench/ "
            "(`make bench-ingest`, `make bench-live`), which says what each figure means.\n"
        )
    section = f"## {title}\n\n" + body.strip() + "\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each load phase")
    parser.add_argument("--polls", type=int, default=20, help="open polls in the room")
    parser.add_argument(
        "--rate-cap",
        type=int,
        default=8000,
        help="highest vote rate to prepare fresh pairs for (votes/s)",
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-connections", type=int, default=64)
    parser.add_argument("--latency-connections", type=int, default=128)
    parser.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 0.75],
        help="open-loop rates, as fractions of the measured maximum",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="OPUS_X=VALUE",
        help="a setting for the server, e.g. --env OPUS_WORKERS=2 (repeatable)",
    )
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="replace the '## Ingest' section of FILE (e.g. docs/benchmarks.md)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="write the raw figures as JSON (for bench/charts.py)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/ingest.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    if not (ROOT / ".venv/bin/opus").exists():
        print("No .venv/bin/opus: run `make venv` first.", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with tempfile.TemporaryDirectory(prefix="opus-bench-") as tmp:
        res, data = runner(bench(args, Path(tmp)))
    if args.data:
        args.data.write_text(json.dumps({**data, "ok": res.ok, "table": res.markdown()}))
    command = " ".join(["bench/ingest.py", *sys.argv[1:]])
    body = (
        f"{time.strftime('%Y-%m-%d')}: `{command}` (phases of {args.seconds:g} s, wrk "
        f"-t{args.wrk_threads} -c{args.wrk_connections}) on {machine_facts()}.\n\n" + res.markdown()
    )
    print(body)
    if args.write:
        replace_section(args.write, "Ingest", body)
        progress(f"wrote the Ingest section of {args.write}")
    if not res.ok:
        progress("FAILED: see the table")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
