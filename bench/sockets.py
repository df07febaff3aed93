"""Votes over the attendee's socket: the server CPU one costs, against `GET /healthz`'s, in the
same run (issue 17: a socket vote should cost no more than the cheapest request).

Usage (from the repository root):

    .venv/bin/python bench/sockets.py [--voters 5000] [--polls 20] [--seconds 8]
                                      [--write docs/benchmarks.md]

Needs `wrk`. One server, started here on a free port with a fresh data dir:

1. setup: a room with --polls open single-choice polls whose results show only once closed
   (`hide_results`: the phones' sockets then carry votes and answers only, so the figure is
   the vote's cost, not the live results'), and --voters voters joined through the API;
2. baseline: wrk `GET /healthz` for --seconds; server CPU per request from /proc;
3. socket votes: every voter opens its attendee socket (`/ws?room=CODE&token=TOKEN`), then
   votes in every poll, one vote after the other's answer, all voters at once, from --procs
   client processes (bench/wsclient.py: a lean client, so that the load generators leave the
   server its core). The phase ends when the last vote is counted; server CPU per vote over
   the whole phase (accepting, committing, applying, answering). The votes come faster than
   the workers apply them, so a backlog builds, and drains once the last vote is answered: the
   event loop's stalls over the whole phase, and over that drain alone (the load generators
   idle, so that a late timer is the server's own doing, not a core it waited for), are read
   from the server's own timer (a 50 ms sleep, and how late it wakes:
   `opus_event_loop_lag_seconds`), as the bucket the longest one falls in;
4. check: every vote answered `vote_accepted`, and the polls' `total_votes` add up to the
   votes answered, each counted once.

Prints a Markdown table; --write replaces the `## Socket votes` section of FILE; --data writes
the figures as JSON. Exit status 1 only on a correctness failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from ingest import (
    ADMIN_TOKEN,
    HOST,
    LUA_DONE,
    Results,
    Server,
    api,
    free_port,
    join,
    machine_facts,
    machine_ticks,
    metrics,
    progress,
    replace_section,
    run_wrk,
    stolen_pct,
)
from wsclient import RawSocket

SECTION = "Socket votes"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _client(port: int, code: str, tokens: list[str], polls: list[dict[str, Any]], out: Any) -> None:
    """One load process: its voters' sockets, each voting in every poll in turn."""
    import uvloop

    async def main() -> dict[str, int]:
        sockets = []
        for token in tokens:
            sockets.append(await RawSocket.connect(HOST, port, f"/ws?room={code}&token={token}"))
        out.send("connected")
        out.recv()  # go
        answers: dict[str, int] = {}

        async def voter(ws: RawSocket, i: int) -> None:
            for j, poll in enumerate(polls):
                options = poll["options"]
                message = {
                    "type": "vote",
                    "poll_id": poll["id"],
                    "event_id": str(uuid.uuid4()),
                    "option_ids": [options[(i + j) % len(options)]],
                }
                answer = await ws.vote(message)
                key = (
                    answer["type"]
                    if answer["type"] == "vote_accepted"
                    else (f"{answer['status']} {answer['error']['code']}")
                )
                answers[key] = answers.get(key, 0) + 1

        await asyncio.gather(*(voter(ws, i) for i, ws in enumerate(sockets)))
        for ws in sockets:
            await ws.close()
        return answers

    out.send(uvloop.run(main()))


async def _sample_depth(
    session: aiohttp.ClientSession, base: str, into: list[float], stop: asyncio.Event
) -> None:
    """The queue's depth (votes taken, not yet applied) every 0.2 s until `stop`."""
    while not stop.is_set():
        into.append((await metrics(session, base)).get("opus_queue_depth", 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


_BUCKETS = ("0.001", "0.0025", "0.005", "0.01", "0.02", "0.05", "0.1", "0.25", "0.5", "1.0")


def _longest_stall(before: dict[str, float], after: dict[str, float]) -> tuple[str, int, int]:
    """From the loop-lag histogram's change over the phase: the range the longest stall falls
    in, how many ticks were late more than 10 ms, and how many ticks there were."""
    name = "opus_event_loop_lag_seconds"

    def delta(key: str) -> int:
        return int(after.get(key, 0.0) - before.get(key, 0.0))

    ticks = delta(f"{name}_count")
    over = ticks - delta(f'{name}_bucket{{le="0.01"}}')
    lower = "0"
    for bound in _BUCKETS:
        if delta(f'{name}_bucket{{le="{bound}"}}') >= ticks:
            return f"{float(lower) * 1000:g} to {float(bound) * 1000:g} ms", over, ticks
        lower = bound
    return f"over {float(lower) * 1000:g} ms", over, ticks


async def _counted(session: aiohttp.ClientSession, base: str, polls: list[dict[str, Any]]) -> int:
    total = 0
    for poll in polls:
        body = await api(
            session, "GET", f"{base}/api/v1/polls/{poll['id']}/results", 200, headers=ADMIN
        )
        total += body["total_votes"]
    return total


async def run(args: argparse.Namespace) -> tuple[Results, dict[str, Any]]:
    res, data = Results(), {}
    work = Path(tempfile.mkdtemp(prefix="opus-bench-sockets-"))
    port = free_port()
    server = Server(work / "data", port, args.env)
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            base = server.base
            room = await api(
                session,
                "POST",
                base + "/api/v1/rooms",
                201,
                headers=ADMIN,
                json={"title": "Sockets"},
            )
            polls = []
            for i in range(args.polls):
                poll = await api(
                    session,
                    "POST",
                    f"{base}/api/v1/rooms/{room['id']}/polls",
                    201,
                    headers=ADMIN,
                    json={
                        "question": f"Q{i}?",
                        "kind": "single",
                        "options": ["A", "B", "C"],
                        "hide_results": True,
                    },
                )
                await api(
                    session, "POST", f"{base}/api/v1/polls/{poll['id']}/open", 200, headers=ADMIN
                )
                polls.append({"id": poll["id"], "options": [o["id"] for o in poll["options"]]})
            progress(f"setup: {args.polls} polls; joining {args.voters} voters")
            tokens = await join(session, base, room["code"], args.voters)

            progress(f"baseline: wrk GET /healthz for {args.seconds:g} s")
            script = work / "healthz.lua"
            script.write_text(LUA_DONE)
            cpu, ticks = server.cpu_seconds(), machine_ticks()
            health = await run_wrk(base + "/healthz", script, args.seconds, 2, 50)
            health_us = (server.cpu_seconds() - cpu) / health.requests * 1e6
            steal_health = stolen_pct(ticks, machine_ticks())

            progress(
                f"socket votes: {args.voters} sockets x {args.polls} polls,"
                f" {args.procs} client processes"
            )
            pipes, procs = [], []
            ctx = mp.get_context("spawn")
            for k in range(args.procs):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=_client,
                    args=(port, room["code"], tokens[k :: args.procs], polls, theirs),
                )
                proc.start()
                pipes.append(mine)
                procs.append(proc)
            for pipe in pipes:
                await asyncio.to_thread(pipe.recv)  # connected
            before = await metrics(session, base)
            cpu, ticks, started = server.cpu_seconds(), machine_ticks(), time.monotonic()
            progress("sockets open: the votes go")
            depths: list[float] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_depth(session, base, depths, stop))
            for pipe in pipes:
                pipe.send("go")
            answers: dict[str, int] = {}
            for pipe in pipes:
                for key, n in (await asyncio.to_thread(pipe.recv)).items():
                    answers[key] = answers.get(key, 0) + n
            answered_s = time.monotonic() - started
            accepted = answers.get("vote_accepted", 0)
            # From here the load generators are idle: the server drains what it took.
            at_answered = await metrics(session, base)
            deadline = started + 300
            while time.monotonic() < deadline:
                if await _counted(session, base, polls) >= accepted:
                    break
                await asyncio.sleep(0.05)
            took = time.monotonic() - started
            vote_us = (server.cpu_seconds() - cpu) / max(1, accepted) * 1e6
            stop.set()
            await sampler
            steal_votes = stolen_pct(ticks, machine_ticks())
            after = await metrics(session, base)
            for proc in procs:
                proc.join()
            await asyncio.sleep(0.5)
            counted = await _counted(session, base, polls)
            socket_accepted = after["opus_socket_votes_accepted_total"] - before.get(
                "opus_socket_votes_accepted_total", 0
            )
        code, _ = server.stop()
    finally:
        if server.proc.poll() is None:
            server.stop()

    sent = args.voters * args.polls
    stall = _longest_stall(before, after)
    drain_stall = _longest_stall(at_answered, after)
    left = at_answered.get("opus_queue_depth", 0.0)
    backlog = max(depths, default=0.0)
    res.add(
        "GET /healthz (wrk), server CPU per request",
        f"{health.rate:,.0f} req/s, {health_us:.0f} µs",
        "baseline",
    )
    res.add(
        "socket votes: sent / answered vote_accepted / counted",
        f"{sent:,} / {accepted:,} / {counted:,}",
        "all, once",
        accepted == sent == counted == socket_accepted,
    )
    res.add(
        "socket votes answered / counted in",
        f"{answered_s:.2f} s / {took:.2f} s ({accepted / took:,.0f} votes/s)",
        "",
    )
    res.add(
        "server CPU per request: durable vote over the socket : GET /healthz",
        f"{vote_us:.0f} : {health_us:.0f} µs = {vote_us / health_us:.2f}",
        "<= 1.0",
        vote_us / health_us <= 1.0,
    )
    res.add(
        "the event loop's longest stall while the votes were taken and applied (a backlog of"
        f" up to {backlog:,.0f} votes; the load generators' processes share the two cores, and"
        " a timer is late also when the server waits for a core)",
        f"{stall[0]}; late more than 10 ms {stall[1]:,} times of {stall[2]:,}",
        "",
    )
    res.add(
        f"the event loop's longest stall while it drained the {left:,.0f} votes still queued"
        " when the last was answered (the load generators idle)",
        f"{drain_stall[0]}; late more than 10 ms {drain_stall[1]:,} times of {drain_stall[2]:,}",
        "<= 10 ms",
        drain_stall[1] == 0,
    )
    res.add(
        "CPU the host gave other guests: baseline / votes",
        f"{steal_health:.0f}% / {steal_votes:.0f}%",
        "< 5% for comparable figures",
    )
    res.add("server stopped with", f"exit {code}", "exit 0", code == 0)
    res.ok = accepted == sent == counted == socket_accepted and code == 0
    if answers.keys() - {"vote_accepted"}:
        res.add(
            "refusals",
            json.dumps({k: v for k, v in answers.items() if k != "vote_accepted"}),
            "none",
            False,
        )
    data.update(
        healthz_cpu_us=health_us,
        socket_vote_cpu_us=vote_us,
        votes=accepted,
        seconds=took,
        steal=max(steal_health, steal_votes),
        stall=drain_stall[0],
        stalls_over_10ms=drain_stall[1],
        backlog=left,
    )
    shutil.rmtree(work, ignore_errors=True)
    return res, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voters", type=int, default=5000)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0, help="the /healthz baseline")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--env", action="append", default=[], metavar="OPUS_X=VALUE")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/sockets.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    res, data = asyncio.run(run(args))
    body = (
        f"Written by `bench/sockets.py` ({machine_facts()}): {args.voters:,} attendee sockets, "
        f"each voting in {args.polls} polls, one vote after the other's answer.\n\n"
        + res.markdown()
    )
    print(body)
    if args.write:
        replace_section(args.write, SECTION, body)
    if args.data:
        args.data.write_text(json.dumps(data))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
