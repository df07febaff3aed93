"""A full disk, for real: two small tmpfs filesystems (one holds the queue, the other the
database, through a symlink, so each can be filled on its own), filled with a ballast file
while a real server runs. Needs root for `mount`; CI runs as root."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from conftest import Api, ServerProcess, fill
from opus.cli import main


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two 8 MB filesystems: the data dir, and a second one for the database."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []
    try:
        for name in ("data", "database-disk"):
            path = tmp_path / name
            path.mkdir()
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            mounted.append(path)
        yield mounted[0], mounted[1]
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)


async def post_vote(
    http: aiohttp.ClientSession,
    base: str,
    voter: dict[str, Any],
    poll: dict[str, Any],
    event_id: str,
) -> tuple[int, Any, str | None]:
    async with http.post(
        f"{base}/api/v1/polls/{poll['id']}/votes",
        json={"option_ids": [poll["options"][0]["id"]], "event_id": event_id},
        headers=voter["headers"],
    ) as answer:
        return answer.status, await answer.json(), answer.headers.get("Retry-After")


def queue_stats(data_dir: Path) -> dict[str, int]:
    output = CliRunner().invoke(main, ["queue", "stats", "--data-dir", str(data_dir)]).output
    return {name: int(count) for name, count in (line.split() for line in output.splitlines())}


async def test_a_full_disk_is_a_503_then_heals_itself_losing_nothing(
    small_disks: tuple[Path, Path], http: aiohttp.ClientSession
) -> None:
    data, database_disk = small_disks
    (data / "opus.db").symlink_to(database_disk / "opus.db")
    # Two attempts before a vote is dead-lettered: a worker that counted a full disk as
    # the vote's fault would give up on the votes below within a second.
    server = ServerProcess(data, OPUS_MAX_ATTEMPTS="2")
    server.start()
    try:
        api = Api(http, server.base)
        room = await api.room()
        poll = await api.poll(room["id"])
        voters = [await api.join(room["code"]) for _ in range(10)]
        accepted: list[tuple[dict[str, Any], str]] = []

        async def vote(voter: dict[str, Any]) -> tuple[int, Any, str | None]:
            event_id = str(uuid.uuid4())
            answer = await post_vote(http, server.base, voter, poll, event_id)
            if answer[0] == 202:
                accepted.append((voter, event_id))
            return answer

        for voter in voters[:2]:
            assert (await vote(voter))[0] == 202
        await api.total_when(poll["id"], 2)

        # 1. The database's disk is full. Votes are still accepted (the queue has room) and
        # wait for space; none is given up. What needs the database answers 503.
        database_ballast = fill(database_disk)
        for voter in voters[2:5]:
            status, body, _ = await vote(voter)
            assert status == 202, body
        status, body = await api.call("POST", "/api/v1/join", json={"code": room["code"]})
        assert status == 503 and body["error"]["code"] == "storage_full"
        await asyncio.sleep(3)  # the workers try, and try again
        for voter, event_id in accepted[2:]:
            assert (await api.receipt(voter, event_id))["status"] == "queued"
        stats = await asyncio.to_thread(queue_stats, data)
        assert stats["failed"] == 0 and stats["ready"] + stats["claimed"] == 3

        # 2. The queue's disk is full too: a vote cannot be made durable, so it is refused
        # with a clear 503 and Retry-After, and nothing about it is kept.
        queue_ballast = fill(data)
        refused = str(uuid.uuid4())
        status, body, retry_after = await post_vote(http, server.base, voters[5], poll, refused)
        assert status == 503 and retry_after is not None and int(retry_after) > 0
        assert (
            body["error"]["code"] == "storage_full" and "disk is full" in body["error"]["message"]
        )
        status, _ = await api.call("GET", f"/api/v1/votes/{refused}", headers=voters[5]["headers"])
        assert status == 404
        status, _ = await api.call("GET", "/healthz")
        assert status == 200

        # 3. Space comes back: no restart, the refused vote goes through when sent again,
        # and every vote that was ever answered 202 is counted once.
        queue_ballast.unlink()
        database_ballast.unlink()
        status, body, _ = await post_vote(http, server.base, voters[5], poll, refused)
        assert status == 202, body
        accepted.append((voters[5], refused))
        for voter in voters[6:]:
            assert (await vote(voter))[0] == 202
        assert (await api.total_when(poll["id"], len(accepted)))["total_votes"] == 10
        for voter, event_id in accepted:
            assert (await api.settled(voter, event_id))["status"] == "counted"
        stats = await asyncio.to_thread(queue_stats, data)
        assert stats["failed"] == 0 and stats["ready"] == 0
        status, _ = await api.call("POST", "/api/v1/join", json={"code": room["code"]})
        assert status == 201
        assert server.terminate() == 0
    finally:
        server.stop()
