"""kill -9 under load, again and again, on the same data dir: every vote answered 202 is counted
exactly once, and a vote that got no answer is counted once or not at all, whatever the client
does next (sends it again under the same event id, under a new one, or only at the end)."""

from __future__ import annotations

import math
import os
import random
import signal
import uuid
from collections import Counter
from pathlib import Path

from conftest import ServerProcess
from faults.conftest import Figures, Sizes
from faults.harness import Ballot, Campaign, start, wait_exit


def run_seed() -> int:
    """The run's random seed (printed with the figures; OPUS_FAULTS_SEED replays one)."""
    return int(os.environ.get("OPUS_FAULTS_SEED") or random.randrange(1 << 32))


def switch_to(ballot: Ballot, event_id: str) -> None:
    """Send this ballot under `event_id` from now on (one of the ids it was sent under)."""
    if event_id != ballot.event_id:
        ballot.old_ids.remove(event_id)
        ballot.old_ids.append(ballot.event_id)
        ballot.event_id = event_id


async def test_kill_9_cycles_lose_nothing_acknowledged_and_count_nothing_twice(
    tmp_path: Path, sizes: Sizes, figures: Figures
) -> None:
    seed = run_seed()
    rng = random.Random(seed)
    server = ServerProcess(tmp_path / "data")
    stats: Counter[str] = Counter()
    try:
        await start(server)
        campaign = Campaign(server)
        await campaign.setup(sizes.kill_polls, sizes.kill_voters)
        fresh = campaign.ballots[:]
        rng.shuffle(fresh)
        per_cycle = math.ceil(len(fresh) / sizes.kill_cycles)
        again: list[Ballot] = []  # unanswered, to send again in the next cycle
        later: list[Ballot] = []  # unanswered, left alone until the end
        kept: dict[Ballot, str | None] = {}  # what the server kept of an unanswered ballot

        def kill() -> None:
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)

        for cycle in range(sizes.kill_cycles):
            acked = [b for b in campaign.ballots if b.acked]
            # A phone that never saw its 202 sends the same vote again: still one vote.
            duplicates = rng.sample(acked, min(len(acked), per_cycle // 4))
            todo = fresh[cycle * per_cycle : (cycle + 1) * per_cycle] + again + duplicates
            rng.shuffle(todo)
            # A ballot whose first event id was kept, sent under another id, is a second vote.
            conflicting = {b for b in again if kept.get(b) not in (None, b.event_id)}
            outcome = await campaign.send(
                todo,
                sizes.concurrency,
                after_acks=rng.randint(1, max(1, len(todo) - 1)),
                interrupt=kill,
                allow_conflict=conflicting,
            )
            for b in conflicting:
                assert not b.acked, "a second vote by the same voter was accepted"
            stats["sent"] += len(todo)
            stats["acked_in_cycles"] += outcome.acked
            stats["duplicates_of_acked"] += len(duplicates)
            stats["conflicts_409"] += outcome.conflicts
            assert await wait_exit(server) == -signal.SIGKILL
            await start(server)

            unanswered = list(dict.fromkeys(b for b in outcome.unanswered if not b.acked))
            stats["unanswered"] += len(unanswered)
            kept.update(await campaign.kept(unanswered))
            again = []
            for ballot in unanswered:
                stats["unanswered_kept" if kept[ballot] else "unanswered_lost"] += 1
                choice = rng.choice(["same id", "new id", "at the end"])
                stats[f"resent {choice}"] += 1
                if choice == "new id":  # a client that lost the id it sent
                    ballot.old_ids.append(ballot.event_id)
                    ballot.event_id = str(uuid.uuid4())
                (later if choice == "at the end" else again).append(ballot)

        # The end: what the server kept of every unanswered vote, then every vote sent once
        # more under the id the server kept (or its own), so that each is acknowledged.
        rest = [b for b in campaign.ballots if not b.acked]
        final = await campaign.kept(rest)
        for ballot, event_id in final.items():
            if event_id is not None:
                switch_to(ballot, event_id)
        stats["kept_but_unacked_at_end"] = sum(1 for e in final.values() if e)
        outcome = await campaign.send(rest, sizes.concurrency)
        assert outcome.acked == len(rest), outcome.statuses
        result = await campaign.reconcile(complete=True)
        assert result["counted"] == len(campaign.ballots)
        assert result["processed_rejected"] == 0
        assert server.terminate() == 0
        figures.add(f"{sizes.kill_cycles} kill -9 cycles, seed {seed}", **result, **stats)
    finally:
        server.stop()
