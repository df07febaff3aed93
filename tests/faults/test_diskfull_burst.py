"""The disk fills up in the middle of a vote burst (a small tmpfs holds the data dir; a ballast
file takes its last byte). Votes that cannot be made durable are refused with 503
storage_full and Retry-After, the server keeps answering, and once space is back (no restart)
the refused votes go through and every vote answered 202 is counted once. Needs root for
`mount`; CI runs as root."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Api, ServerProcess, fill
from faults.conftest import Figures, Sizes
from faults.harness import Campaign, session, start


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_disk_full_during_a_burst_refuses_cleanly_and_heals(
    small_disk: Path, sizes: Sizes, figures: Figures
) -> None:
    server = ServerProcess(small_disk)  # the log goes next to the disk, not on it
    await start(server)
    try:
        assert server.proc is not None
        pid = server.proc.pid
        campaign = Campaign(server)
        await campaign.setup(1, sizes.burst_voters)
        ballots = campaign.ballots[:]
        random.shuffle(ballots)
        ballast: list[Path] = []
        # The disk fills after a fifth of the burst is acknowledged; the rest keeps coming.
        outcome = await campaign.send(
            ballots,
            sizes.concurrency,
            after_acks=max(1, len(ballots) // 5),
            interrupt=lambda: ballast.append(fill(small_disk)),
        )
        assert ballast, "the disk was never filled"
        assert outcome.refused > 0, f"no vote refused on a full disk: {outcome.statuses}"
        assert not outcome.unanswered, "a vote got no answer: the server must answer 503"
        async with session() as http:
            status, _ = await Api(http, server.base).call("GET", "/healthz")
            assert status == 200

        ballast[0].unlink()
        refused = [b for b in ballots if not b.acked]
        again = await campaign.send(refused, sizes.concurrency)
        assert again.acked == len(refused), again.statuses
        result = await campaign.reconcile(complete=True)
        assert result["counted"] == len(ballots) and result["processed_rejected"] == 0
        assert server.proc.pid == pid and server.proc.poll() is None, "the server restarted"
        assert server.terminate() == 0
        figures.add(
            "disk full during a burst",
            **result,
            acked_during_burst=outcome.acked,
            refused_503=outcome.refused,
            answers=dict(outcome.statuses),
        )
    finally:
        server.stop()
