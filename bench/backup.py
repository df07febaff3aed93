"""Backup benchmark: how long `opus backup` takes on a data dir with many votes, idle and while
votes flow, and what it costs the votes meanwhile.

Usage (from the repository root):

    .venv/bin/python bench/backup.py              # 20,000 votes
    .venv/bin/python bench/backup.py --votes 100000

It starts its own server (`.venv/bin/opus serve`, free port, fresh data dir), joins voters and
has each vote in one poll, then times `opus backup` twice: with the server idle, and while
voters cast votes in a second poll at full speed. It reports the vote rate before and during
the second backup (as a ratio, measured in the same run), restores the second backup into a
fresh data dir and checks that every vote answered 202 before it began is in it. Progress goes
to stderr, a Markdown table to stdout (--write replaces the `## Backup` section of the given
file); exit status 1 when a vote is missing or a server did not stop with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from ingest import machine_facts, replace_section

ROOT = Path(__file__).resolve().parent.parent
OPUS = str(ROOT / ".venv" / "bin" / "opus")
ADMIN = {"Authorization": "Bearer bench-admin-token"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([OPUS, "serve"], env=env, stderr=subprocess.DEVNULL)


def restore(archive: Path, data_dir: Path) -> None:
    subprocess.run(
        [OPUS, "restore", str(archive), "--data-dir", str(data_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


async def run(votes: int, concurrency: int, write: Path | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="opus-bench-backup-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "OPUS_ADMIN_TOKEN": ADMIN["Authorization"][7:],
        "OPUS_HOST": "127.0.0.1",
        "OPUS_PORT": str(port),
        "OPUS_DATA_DIR": str(work / "data"),
    }
    server = start_server(env)
    try:
        await wait_ready(base)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
                async with http.post(base + path, json=body, headers=headers) as r:
                    assert r.status in (201, 202, 200), (r.status, await r.text())
                    return await r.json()

            room = await post("/api/v1/rooms", {"title": "bench"}, ADMIN)
            polls = []
            for _ in range(2):
                poll = await post(
                    f"/api/v1/rooms/{room['id']}/polls",
                    {"question": "?", "kind": "single", "options": ["A", "B", "C"]},
                    ADMIN,
                )
                await post(f"/api/v1/polls/{poll['id']}/open", {}, ADMIN)
                polls.append(poll)

            async def in_parallel(n: int, job: Any) -> list[Any]:
                results: list[Any] = [None] * n
                queue = iter(range(n))

                async def runner() -> None:
                    for i in queue:
                        results[i] = await job(i)

                await asyncio.gather(*(runner() for _ in range(concurrency)))
                return results

            log(f"joining {votes} voters")
            voters = await in_parallel(
                votes, lambda _: post("/api/v1/join", {"code": room["code"]}, {})
            )
            headers = [{"Authorization": f"Bearer {v['voter_token']}"} for v in voters]

            def vote(poll: dict[str, Any], i: int) -> Any:
                option = poll["options"][i % 3]["id"]
                return post(
                    f"/api/v1/polls/{poll['id']}/votes", {"option_ids": [option]}, headers[i]
                )

            log(f"casting {votes} votes")
            await in_parallel(votes, lambda i: vote(polls[0], i))

            async def backup(name: str) -> tuple[float, Path]:
                target = work / name
                started = time.perf_counter()
                done = await asyncio.create_subprocess_exec(
                    OPUS,
                    "backup",
                    str(target),
                    "--data-dir",
                    str(work / "data"),
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await done.communicate()
                assert done.returncode == 0, out
                return time.perf_counter() - started, target

            idle_s, _ = await backup("idle.tar.gz")
            log(f"idle backup: {idle_s:.2f} s")

            acknowledged: list[tuple[float, int]] = []
            loop = asyncio.get_running_loop()

            async def voting(i: int) -> None:
                await vote(polls[1], i)
                acknowledged.append((loop.time(), i))

            flow = asyncio.create_task(in_parallel(votes, voting))
            await asyncio.sleep(2.0)
            before_rate = len(acknowledged) / 2.0
            began = loop.time()
            busy_s, archive = await backup("busy.tar.gz")
            ended = loop.time()
            during = sum(began <= at < ended for at, _ in acknowledged)
            acked_before = sum(at < began for at, _ in acknowledged)
            await flow
            log(f"backup while voting: {busy_s:.2f} s")
        db_mb = (work / "data" / "opus.db").stat().st_size / 2**20
        server.terminate()
        stopped = [server.wait(30)]

        restored = work / "restored"
        await asyncio.to_thread(restore, archive, restored)
        env["OPUS_DATA_DIR"] = str(restored)
        server = start_server(env)
        await wait_ready(base)
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{base}/api/v1/polls/{polls[1]['id']}/results", headers=ADMIN
            ) as r:
                counted = (await r.json())["total_votes"]
        missing = max(0, acked_before - counted)
        server.terminate()
        stopped.append(server.wait(30))
        table = "\n".join(
            [
                "| measure | figure |",
                "| --- | --- |",
                f"| votes in the data dir | {votes} (opus.db {db_mb:.1f} MB) |",
                f"| `opus backup`, server idle | {idle_s:.2f} s,"
                f" {(work / 'idle.tar.gz').stat().st_size / 2**20:.1f} MB archive |",
                f"| `opus backup` while votes flow | {busy_s:.2f} s |",
                f"| vote rate during : before the backup | {during / max(busy_s, 1e-9):.0f} :"
                f" {before_rate:.0f} votes/s = {during / max(busy_s, 1e-9) / before_rate:.2f} |",
                f"| votes acknowledged before the backup, counted after restore |"
                f" {min(counted, acked_before)} of {acked_before} ({missing} missing) |",
                f"| exit status of the two servers after SIGTERM | {stopped[0]} {stopped[1]} |",
            ]
        )
        print(table)
        if write:
            replace_section(
                write,
                "Backup",
                (
                    f"{time.strftime('%Y-%m-%d')}: `bench/backup.py --votes {votes}` on "
                    f"{machine_facts()}.\n\n{table}"
                ),
            )
        return 1 if missing or stopped != [0, 0] else 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help="replace the '## Backup' section of FILE"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.votes, args.concurrency, args.write)))


if __name__ == "__main__":
    main()
