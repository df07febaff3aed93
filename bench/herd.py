"""Thundering herd: a whole hall votes in the same second.

One server, started here on a free port with a fresh data dir. N voters (default 10,000) join
one room through the API ahead of time, at their own pace; W screens (default 20) watch the
room's live socket, as projectors do. Then the poll opens and every voter sends its vote within
about one second (`--burst`), each on a new connection, as phones do: spread evenly over the
burst, from several client processes so that Python on a small machine can produce the herd.
A voter answered 429 or 503 waits `Retry-After` and sends the same vote again (same event_id),
as the attendee page does; a connection error or a timeout is a failure, and is retried too so
that the count below stays exact.

Reported: every answer's status; timeouts and connection errors (goal: none); whether every 429
and 503 carried Retry-After; the time from the poll opening to the last 202, to the last vote
counted (the results call reaching the number of 202s; also the server's own counted_at), and
to the last screen showing the final tally; and the tally checked three ways against the voters
that got a 202 (the results call, the export's votes, the database's rows): per option, and
with every voter counted once.

    .venv/bin/python bench/herd.py [--voters 10000] [--screens 20] [--burst 1.0]
                                   [--procs 4] [--keep-alive | --socket]
                                   [--env OPUS_X=VALUE]
                                   [--write docs/benchmarks.md]

`--keep-alive` opens every voter's connection before the poll opens (phones whose page's
connection is still open) and sends the first try on it: the herd without the cost of
10,000 new connections. `--socket` is the attendee page as it is: each voter's live socket is
open (`/ws?room=CODE&token=TOKEN`, receiving every results update, as a phone does) and the vote
goes on it (`{"type": "vote", ...}`, answered `vote_accepted` or `vote_refused`: a refusal
with `retry_after` is sent again after it, on the socket); a vote whose socket closed is sent
with a POST on a new connection, as the page does. The voters' sockets use bench/wsclient.py,
which reads results frames without decoding them.

`--env OPUS_MAX_BACKLOG=10` makes the server refuse (503) most of the burst, to exercise the
retries.

Progress goes to stderr, the Markdown section to stdout; --write replaces the
`## Thundering herd` section of FILE. Exit status 1 on a correctness failure (a timeout, a
connection error, an answer other than 202/429/503, a refusal without Retry-After, a 202 not
counted, a vote counted twice, a screen showing the wrong result), never for speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from ingest import (
    ADMIN_TOKEN,
    HOST,
    ROOT,
    Results,
    Server,
    api,
    free_port,
    machine_facts,
    metrics,
    progress,
    replace_section,
)
from wsclient import Closed, RawSocket

SECTION = "Thundering herd"
SOCKET_SECTION = "Thundering herd over the sockets"  # --socket
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_GIVE_UP_S = 120.0  # a voter still without a 202 after this long is a failure


READING = """\
The checks (answers, Retry-After, counts, screens) must hold on any machine. The times depend
on how much CPU the server gets: the herd is served at the server's rate, and the clients, the
screens and any other work share the same cores (see the load average). `server CPU per answer`
does not depend on that: it is the cost of one vote on a new connection (accept, HTTP, durable
group commit, worker, close), and its inverse is the rate one core of its own would give.
Counting follows the last 202 within a few hundred milliseconds, and the screens follow the
count."""


def raise_nofile() -> int:
    """Thousands of sockets in one process: the soft open-files limit up to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_loop(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# -- voters (child processes) ---------------------------------------------------------------


@dataclass
class Ballot:
    index: int  # the voter's place in the burst: it sends at opening + index / N * burst
    voter_id: str
    token: str
    option_id: str
    event_id: str


@dataclass
class VoterReport:
    """What one client process saw, sent back to the parent."""

    answers: Counter[str] = field(default_factory=Counter)  # "202", "503", "timeout", ...
    refusals_without_retry_after: int = 0
    accepted: dict[str, float] = field(default_factory=dict)  # voter id -> time of its 202
    failed: list[str] = field(default_factory=list)  # voters that never got a 202
    first_sent: list[float] = field(default_factory=list)
    first_answer_s: list[float] = field(default_factory=list)  # first try: scheduled -> answer
    max_tries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # what the connection errors were


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def vote_request(port: int, poll_id: str, ballot: Ballot, close: bool = True) -> bytes:
    body = json.dumps({"event_id": ballot.event_id, "option_ids": [ballot.option_id]}).encode()
    head = (
        f"POST /api/v1/polls/{poll_id}/votes HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {ballot.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{'Connection: close\r\n' if close else ''}\r\n"
    )
    return head.encode() + body


_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
_RETRY_AFTER = re.compile(rb"(?i)\r\nretry-after: *(\d+)")


async def _attempt(port: int, request: bytes, held: Stream | None) -> tuple[int, int | None]:
    """One try, on the connection held open for it or on a new one: (status, Retry-After
    seconds or None). Either way the connection is closed after the answer."""
    reader, writer = held or await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = _LENGTH.search(head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        retry = _RETRY_AFTER.search(head)
        return int(head[9:12]), int(retry.group(1)) if retry else None
    finally:
        writer.close()


async def _on_socket(
    ws: RawSocket, poll_id: str, ballot: Ballot, limit_s: float
) -> tuple[int, int | None]:
    """One try on the voter's live socket: (status as the API would say it, retry_after)."""
    answer = await ws.vote(
        {
            "type": "vote",
            "poll_id": poll_id,
            "event_id": ballot.event_id,
            "option_ids": [ballot.option_id],
        },
        limit_s,
    )
    if answer["type"] == "vote_accepted":
        return 202, None
    return int(answer["status"]), answer.get("retry_after")


async def _vote(
    port: int,
    poll_id: str,
    ballot: Ballot,
    at: float,
    limit_s: float,
    report: VoterReport,
    held: Stream | None,
    ws: RawSocket | None,
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, at - loop.time()))
    request = vote_request(port, poll_id, ballot)
    report.first_sent.append(loop.time())
    tries = 0
    while True:
        tries += 1
        report.max_tries = max(report.max_tries, tries)
        wait = 1.0
        try:
            if ws is not None and not ws.closed:  # the page's live socket
                attempt = _on_socket(ws, poll_id, ballot, limit_s)
            elif held is not None:  # the first try goes on the connection opened earlier
                attempt = _attempt(port, vote_request(port, poll_id, ballot, close=False), held)
                held = None
            else:
                attempt = _attempt(port, request, None)
            status, retry_after = await asyncio.wait_for(attempt, limit_s)
        except TimeoutError:
            report.answers["timeout"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, Closed) as exc:
            report.answers["connection error"] += 1
            report.errors[type(exc).__name__] += 1
        else:
            if tries == 1:
                report.first_answer_s.append(loop.time() - at)
            report.answers[str(status)] += 1
            if status == 202:
                report.accepted[ballot.voter_id] = loop.time()
                return
            if status not in (429, 503):
                report.failed.append(ballot.voter_id)
                return
            if retry_after is None:
                report.refusals_without_retry_after += 1
            else:
                wait = float(retry_after)
        if loop.time() - at > _GIVE_UP_S:
            report.failed.append(ballot.voter_id)
            return
        await asyncio.sleep(wait)  # the page re-sends the same vote, as the server asked


async def _voters(
    port: int,
    poll_id: str,
    ballots: list[Ballot],
    total: int,
    burst: float,
    limit_s: float,
    mode: str,
    code: str,
    pipe: Connection,
) -> None:
    loop = asyncio.get_running_loop()
    report = VoterReport()
    held: dict[int, Stream] = {}
    sockets: dict[int, RawSocket] = {}
    gate = asyncio.Semaphore(100)
    if mode == "keep-alive":  # phones whose page's connection is still open when the poll opens

        async def hold(ballot: Ballot) -> None:
            async with gate:
                held[ballot.index] = await asyncio.open_connection(HOST, port)

        await asyncio.gather(*(hold(b) for b in ballots))
    elif mode == "socket":  # phones with the page open: its live socket

        async def connect(ballot: Ballot) -> None:
            async with gate:
                path = f"/ws?room={code}&token={ballot.token}"
                sockets[ballot.index] = await RawSocket.connect(HOST, port, path)

        await asyncio.gather(*(connect(b) for b in ballots))
    pipe.send("ready")
    opened: float = await loop.run_in_executor(None, pipe.recv)
    # time.monotonic() is the same clock in every process: the parent's opening is our origin.
    start = loop.time() + (opened - time.monotonic())
    await asyncio.gather(
        *(
            _vote(
                port,
                poll_id,
                b,
                start + b.index * burst / total,
                limit_s,
                report,
                held.get(b.index),
                sockets.get(b.index),
            )
            for b in ballots
        )
    )
    for ws in sockets.values():
        await ws.close()
    # Times back on the shared clock, relative to nothing: the parent subtracts the opening.
    shift = time.monotonic() - loop.time()
    report.accepted = {v: t + shift for v, t in report.accepted.items()}
    report.first_sent = [t + shift for t in report.first_sent]
    pipe.send(report)


def _voter_process(
    port: int,
    poll_id: str,
    ballots: list[Ballot],
    total: int,
    burst: float,
    limit_s: float,
    mode: str,
    code: str,
    pipe: Connection,
) -> None:
    raise_nofile()
    run_loop(_voters(port, poll_id, ballots, total, burst, limit_s, mode, code, pipe))


# -- screens (in the parent) ------------------------------------------------------------------


@dataclass
class Screen:
    frames: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)
    closed: str | None = None


async def watch(
    session: aiohttp.ClientSession,
    base: str,
    code: str,
    poll_id: str,
    screen: Screen,
    ready: asyncio.Event,
) -> None:
    async with session.ws_connect(f"{base}/ws?room={code}", heartbeat=None) as ws:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["type"] == "snapshot":
                ready.set()
            elif data["type"] == "results" and data["poll_id"] == poll_id:
                screen.frames.append(
                    (
                        time.monotonic(),
                        data["total_votes"],
                        {o["id"]: o["votes"] for o in data["options"]},
                    )
                )
        screen.closed = f"closed ({ws.close_code})"


async def sample_results(
    session: aiohttp.ClientSession,
    base: str,
    poll_id: str,
    into: list[tuple[float, int]],
    stop: asyncio.Event,
) -> None:
    """The results call every 100 ms: when the count reached its final value."""
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{base}/api/v1/polls/{poll_id}/results") as r:
                if r.status == 200:
                    into.append((time.monotonic(), (await r.json())["total_votes"]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(row.get("ListenOverflows", 0))
    return 0


# -- the run -----------------------------------------------------------------------------------


async def join_voters(
    session: aiohttp.ClientSession, base: str, code: str, count: int
) -> list[tuple[str, str]]:
    """(voter id, token) for `count` new voters, 64 joins at a time."""
    gate = asyncio.Semaphore(64)
    done = 0

    async def one() -> tuple[str, str]:
        nonlocal done
        async with gate:
            body = await api(session, "POST", base + "/api/v1/join", 201, json={"code": code})
        done += 1
        if done % 2000 == 0:
            progress(f"joined {done:,} of {count:,} voters")
        return body["voter_id"], body["voter_token"]

    return list(await asyncio.gather(*(one() for _ in range(count))))


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _reached(timeline: list[tuple[float, int]], total: int) -> float | None:
    """The first time a sampled count equals `total` and stays there."""
    found = None
    for t, n in timeline:
        if n == total:
            found = found if found is not None else t
        else:
            found = None
    return found


async def wait_until(done: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if done() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


def verdict(res: Results, name: str, value: str, goal: str, met: bool) -> None:
    """A correctness row: a miss makes the run fail."""
    res.add(name, value, goal, met=met)
    res.ok &= met


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def herd(args: argparse.Namespace, work: Path) -> Results:
    res = Results()
    server = Server(work / "data", free_port(), args.env)
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        await server.wait_ready(session)
        base = server.base
        room = await api(
            session,
            "POST",
            base + "/api/v1/rooms",
            201,
            headers=ADMIN,
            json={"title": "Thundering herd"},
        )
        poll = await api(
            session,
            "POST",
            f"{base}/api/v1/rooms/{room['id']}/polls",
            201,
            headers=ADMIN,
            json={
                "question": "Which one?",
                "kind": "single",
                "options": ["Red", "Green", "Blue", "Yellow"],
            },
        )
        poll_id, options = poll["id"], [o["id"] for o in poll["options"]]
        progress(f"server on {base}; joining {args.voters:,} voters")
        started = time.monotonic()
        voters = await join_voters(session, base, room["code"], args.voters)
        progress(f"joined {len(voters):,} voters in {time.monotonic() - started:.1f} s")
        ballots = [
            Ballot(i, v, t, options[i % len(options)], str(uuid.uuid4()))
            for i, (v, t) in enumerate(voters)
        ]
        chosen = {b.voter_id: b.option_id for b in ballots}

        screens = [Screen() for _ in range(args.screens)]
        ready = [asyncio.Event() for _ in screens]
        watchers = [
            asyncio.create_task(watch(session, base, room["code"], poll_id, s, r))
            for s, r in zip(screens, ready, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 30)

        ctx = mp.get_context("spawn")
        pipes: list[Connection] = []
        procs = []
        for k in range(args.procs):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_voter_process,
                daemon=True,
                args=(
                    server.port,
                    poll_id,
                    ballots[k :: args.procs],
                    len(ballots),
                    args.burst,
                    args.timeout,
                    args.mode,
                    room["code"],
                    theirs,
                ),
            )
            proc.start()
            pipes.append(mine)
            procs.append(proc)
        for pipe in pipes:
            assert await asyncio.to_thread(pipe.recv) == "ready"
        progress(
            f"{args.screens} screens watching, {args.procs} voter processes ready; opening the poll"
        )

        overflows = listen_overflows()
        load = os.getloadavg()[0]
        before = await metrics(session, base)
        cpu_s = cpu_seconds(server.proc.pid)
        await api(session, "POST", f"{base}/api/v1/polls/{poll_id}/open", 200, headers=ADMIN)
        opened = time.monotonic()
        for pipe in pipes:
            pipe.send(opened)
        timeline: list[tuple[float, int]] = []
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(
            sample_results(session, base, poll_id, timeline, stop_sampling)
        )
        reports: list[VoterReport] = []
        for pipe in pipes:
            reports.append(await asyncio.to_thread(pipe.recv))
            progress(f"voter process {len(reports)} of {args.procs} done")
        for proc in procs:
            proc.join(30)
        overflows = listen_overflows() - overflows

        accepted: dict[str, float] = {}
        for r in reports:
            accepted.update(r.accepted)
        # Close enough to the last 202: the processes report right after their last answer.
        cpu_s = cpu_seconds(server.proc.pid) - cpu_s
        answers = sum((r.answers for r in reports), Counter[str]())
        errors = sum((r.errors for r in reports), Counter[str]())
        failed = [v for r in reports for v in r.failed]
        expected = Counter(chosen[v] for v in accepted)
        total = len(accepted)

        # Counted: the results call at the final total (or 30 s), then the screens (10 s more).
        await wait_until(lambda: bool(timeline) and timeline[-1][1] == total, 30)
        await asyncio.sleep(0.3)  # one more sample: the count stays there
        await wait_until(lambda: all(s.frames and s.frames[-1][1] == total for s in screens), 10)
        stop_sampling.set()
        await sampler
        after = await metrics(session, base)
        final = await api(session, "GET", f"{base}/api/v1/polls/{poll_id}/results", 200)
        export = await api(
            session, "GET", f"{base}/api/v1/polls/{poll_id}/export?format=json", 200, headers=ADMIN
        )
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    code, _ = server.stop()
    with contextlib.closing(sqlite3.connect(work / "data" / "opus.db")) as db:
        rows, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT voter_id) FROM votes WHERE poll_id = ?", (poll_id,)
        ).fetchone()

    # -- the table --------------------------------------------------------------------------
    first_sent = sorted(t for r in reports for t in r.first_sent)
    first_answer = [s for r in reports for s in r.first_answer_s]
    refusals = answers["429"] + answers["503"]
    no_retry_after = sum(r.refusals_without_retry_after for r in reports)
    other = {
        k: n
        for k, n in answers.items()
        if k not in ("202", "429", "503", "timeout", "connection error")
    }
    last_202 = max(accepted.values()) - opened if accepted else None
    counted = _reached(timeline, total)
    exported = [v["voter_id"] for v in export["votes"]]
    server_counted = None
    if export["votes"] and export["poll"].get("opened_at"):
        last = max(datetime.fromisoformat(v["counted_at"]) for v in export["votes"])
        server_counted = (
            last - datetime.fromisoformat(export["poll"]["opened_at"])
        ).total_seconds()
    right_screens = 0
    screen_times: list[float] = []
    for s in screens:
        if (
            s.frames
            and s.frames[-1][1] == total
            and s.frames[-1][2] == {o: expected[o] for o in options}
        ):
            right_screens += 1
            # When this screen first showed the final tally.
            final_frames = [t for t, n, _ in s.frames if n == total]
            screen_times.append(final_frames[0] - opened)
    final_counts = {o["id"]: o["votes"] for o in final["options"]}

    res.add(
        "load average of the machine before the opening (other work sharing the cores)",
        f"{load:.1f}",
    )
    res.add(
        "voters joined before the opening / screens watching", f"{len(ballots):,} / {args.screens}"
    )
    res.add(
        "first tries sent, opening -> last sent",
        f"{len(first_sent):,} in {first_sent[-1] - opened:.2f} s" if first_sent else "none",
        f"all within about {args.burst:g} s",
    )
    verdict(
        res,
        "answers: 202 / 429 / 503 / other",
        f"{answers['202']:,} / {answers['429']:,} / {answers['503']:,} / "
        f"{sum(other.values())}" + (f" {dict(other)}" if other else ""),
        "other = 0",
        not other,
    )
    verdict(
        res,
        "timeouts / connection errors",
        f"{answers['timeout']} / {answers['connection error']}"
        + (f" ({dict(errors)})" if errors else ""),
        "0 / 0",
        not answers["timeout"] and not answers["connection error"],
    )
    verdict(
        res,
        "429 and 503 answers carrying Retry-After",
        f"{refusals - no_retry_after:,} of {refusals:,}",
        "all",
        no_retry_after == 0,
    )
    verdict(
        res,
        "voters with a 202 in the end / most tries by one voter",
        f"{total:,} of {len(ballots):,} / {max((r.max_tries for r in reports), default=0)}",
        "all",
        total == len(ballots) and not failed,
    )
    res.add(
        "first try: scheduled send -> answer, p50 / p99 / max",
        " / ".join(f"{1000 * percentile(first_answer, q):,.0f} ms" for q in (0.5, 0.99, 1.0)),
    )
    res.add("opening -> last 202", seconds(last_202))
    res.add(
        "opening -> last vote counted (results call at the final total, 100 ms samples)",
        seconds(None if counted is None else counted - opened),
        "within seconds",
    )
    res.add(
        "opening -> last vote counted (server: last counted_at - opened_at)",
        seconds(server_counted),
    )
    res.add(
        "opening -> last screen showing the final tally",
        seconds(max(screen_times)) if len(screen_times) == len(screens) else "never",
    )
    verdict(
        res,
        "screens whose last frame shows the right counts",
        f"{right_screens} of {len(screens)}",
        "all",
        right_screens == len(screens),
    )
    verdict(
        res,
        "counted: results call / export / DB rows / distinct voters in DB",
        f"{final['total_votes']:,} / {len(exported):,} / {rows:,} / {distinct:,}",
        f"all = {total:,} (the 202s)",
        final["total_votes"] == len(exported) == rows == distinct == total,
    )
    verdict(
        res,
        "results per option = the 202s' choices; export's voters = the 202s' voters",
        "yes"
        if final_counts == {o: expected[o] for o in options}
        and sorted(exported) == sorted(accepted)
        else "NO",
        "yes",
        final_counts == {o: expected[o] for o in options} and sorted(exported) == sorted(accepted),
    )

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    commits = delta("opus_group_commit_size_count")
    res.add(
        "durable group commits for the herd",
        f"{commits:,.0f}, {delta('opus_group_commit_size_sum') / (commits or 1):,.0f} votes"
        f" and {1000 * delta('opus_group_commit_seconds_sum') / (commits or 1):.1f} ms each",
    )
    batches = delta("opus_worker_batch_size_count")
    res.add(
        "worker batches applying the herd",
        f"{batches:,.0f}, {delta('opus_worker_batch_size_sum') / (batches or 1):,.0f} votes"
        f" and {1000 * delta('opus_worker_apply_seconds_sum') / (batches or 1):.1f} ms each",
    )
    if last_202:
        res.add(
            "server CPU from the opening to the last 202 (100% = one core)",
            f"{100 * cpu_s / last_202:.0f}% ({cpu_s:.1f} s)",
        )
        tries = sum(answers.values())
        res.add(
            "server CPU per answer: the herd's rate on one core of its own",
            f"{1000 * cpu_s / tries:.2f} ms: {tries / cpu_s:,.0f} answers/s",
        )
    res.add("connections dropped by a full listen queue (kernel ListenOverflows)", f"{overflows:,}")
    verdict(res, "exit status after SIGTERM", str(code), "0", code == 0)
    if failed:
        progress(f"{len(failed)} voters never got a 202")
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voters", type=int, default=10_000)
    parser.add_argument("--screens", type=int, default=20, help="WebSockets watching the room")
    parser.add_argument(
        "--burst", type=float, default=1.0, help="seconds over which the first tries are spread"
    )
    parser.add_argument("--procs", type=int, default=4, help="voter client processes")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds one try may take before it counts as a timeout",
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--keep-alive",
        dest="mode",
        action="store_const",
        const="keep-alive",
        default="new",
        help="open each voter's connection before the poll opens (a phone whose"
        " page's connection is still open) instead of at its vote",
    )
    how.add_argument(
        "--socket",
        dest="mode",
        action="store_const",
        const="socket",
        help="each voter's live socket is open before the poll opens, and the vote goes on it"
        " (the attendee page with JavaScript)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="OPUS_X=VALUE",
        help="a setting for the server, e.g. --env OPUS_MAX_BACKLOG=500",
    )
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help=f"replace the '## {SECTION}' section of FILE"
    )
    args = parser.parse_args()
    if not (ROOT / ".venv/bin/opus").exists():
        print("No .venv/bin/opus: run `make venv` first.", file=sys.stderr)
        return 2
    hard = raise_nofile()
    if hard < args.voters // args.procs + 1000:
        progress(
            f"warning: the open-files limit is {hard}; raise it (ulimit -Hn) for"
            f" {args.voters:,} voters"
        )
    with tempfile.TemporaryDirectory(prefix="opus-bench-herd-") as tmp:
        res = run_loop(herd(args, Path(tmp)))
    command = " ".join(["bench/herd.py", *sys.argv[1:]])
    connection = {
        "new": "a new connection",
        "keep-alive": "a connection opened before the opening",
        "socket": "the voter's live socket, open before the opening",
    }[args.mode]
    body = (
        f"{time.strftime('%Y-%m-%d')}: `{command}` ({args.voters:,} voters, first tries"
        f" spread over {args.burst:g} s from {args.procs} client processes, each on"
        f" {connection}; {args.screens} screens) on {machine_facts()}; server and clients"
        " on this one machine.\n\n" + res.markdown() + "\n\n" + READING
    )
    print(body)
    if args.write:
        section = SOCKET_SECTION if args.mode == "socket" else SECTION
        replace_section(args.write, section, body)
        progress(f"wrote the {section} section of {args.write}")
    if not res.ok:
        progress("FAILED: see the table")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
