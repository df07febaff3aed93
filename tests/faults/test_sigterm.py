"""SIGTERM in the middle of a vote burst, several times: the server drains and exits 0, a vote
it refuses while stopping is answered 503 with Retry-After and kept nowhere, and after each
restart every vote answered 202 is counted, none twice."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

from conftest import ServerProcess
from faults.conftest import Figures, Sizes
from faults.harness import Ballot, Campaign, start, wait_exit
from faults.test_kill9 import run_seed


async def test_sigterm_mid_burst_exits_0_and_loses_nothing(
    tmp_path: Path, sizes: Sizes, figures: Figures
) -> None:
    seed = run_seed()
    rng = random.Random(seed)
    server = ServerProcess(tmp_path / "data")
    stats: Counter[str] = Counter()
    try:
        await start(server)
        campaign = Campaign(server)
        await campaign.setup(2, sizes.term_voters)
        fresh = campaign.ballots[:]
        rng.shuffle(fresh)
        per_cycle = math.ceil(len(fresh) / sizes.term_cycles)
        again: list[Ballot] = []

        def terminate() -> None:
            assert server.proc is not None
            server.proc.terminate()

        for cycle in range(sizes.term_cycles):
            todo = fresh[cycle * per_cycle : (cycle + 1) * per_cycle] + again
            before = {b: (b.refused, b.unanswered) for b in todo}
            outcome = await campaign.send(
                todo,
                sizes.concurrency,
                after_acks=rng.randint(1, max(1, len(todo) - 1)),
                interrupt=terminate,
            )
            code = await wait_exit(server)
            assert code == 0, server.log.read_text()[-3000:]
            stats["acked_in_cycles"] += outcome.acked
            stats["refused_503"] += outcome.refused
            stats["unanswered"] += len(outcome.unanswered)
            await start(server)
            again = [b for b in todo if not b.acked]
            kept = await campaign.kept(again)
            for ballot in again:
                refused_only = (
                    ballot.unanswered == before[ballot][1] and ballot.refused > before[ballot][0]
                )
                if refused_only:  # a 503 keeps nothing: sending it again is a first vote
                    assert kept[ballot] is None, "a vote refused with 503 was counted"
                stats["unanswered_kept" if kept[ballot] else "not_kept"] += 1
        outcome = await campaign.send(again, sizes.concurrency)
        assert outcome.acked == len(again), outcome.statuses
        result = await campaign.reconcile(complete=True)
        assert result["counted"] == len(campaign.ballots)
        assert result["counted_unacked"] == 0 and result["processed_rejected"] == 0
        assert server.terminate() == 0
        figures.add(f"{sizes.term_cycles} SIGTERM cycles, seed {seed}", **result, **stats)
    finally:
        server.stop()
