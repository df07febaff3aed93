"""Workers: claim votes from the queue in batches and apply each batch to SQLite in one
transaction (processed event ids, votes, tallies, outbox), then acknowledge the messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opus import events, outbox
from opus.config import Settings
from opus.db import Database, fetchall, placeholders
from opus.ledger import Ledger
from opus.metrics import Metrics
from opus.queue import Claim, VoteQueue

log = logging.getLogger(__name__)

_IDLE_MAX_S = 0.25
_BACKOFF_BASE_S = 0.2


@dataclass(slots=True)
class _Vote:
    claim: Claim
    poll_id: str
    voter_id: str
    choice: str
    option_ids: list[str]


@dataclass(slots=True)
class _Plan:
    """What one batch writes, gathered in Python so that each table gets one executemany."""

    processed: list[tuple[Any, ...]] = field(default_factory=list)
    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    replaces: list[tuple[Any, ...]] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    events: list[events.Envelope] = field(default_factory=list)
    counted: list[_Vote] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)

    def add_tally(self, option_ids: list[str], delta: int) -> None:
        for option_id in option_ids:
            self.tally[option_id] = self.tally.get(option_id, 0) + delta


class Workers:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        queue: VoteQueue,
        ledger: Ledger,
        metrics: Metrics,
        node_id: str,
        work_available: asyncio.Event,
        on_commit: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._db = db
        self._queue = queue
        self._ledger = ledger
        self._metrics = metrics
        self._node_id = node_id
        self._work_available = work_available
        self._on_commit = on_commit
        self._stopping = False
        self._claiming = asyncio.Lock()

    # -- the loop ------------------------------------------------------------------------

    async def run(self, index: int) -> None:
        """Claim a batch, apply it, again. One worker at a time waits for work (the others
        queue on the lock), so a new vote wakes one claim, not the whole pool."""
        while not self._stopping:
            claims: list[Claim] = []
            async with self._claiming:
                idle = 0.001
                while not self._stopping:
                    self._work_available.clear()
                    try:
                        claims = self._queue.claim(self._settings.worker_batch)
                    except Exception:
                        log.exception("worker %d could not claim votes", index)
                    if claims:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._work_available.wait(), idle)
                    idle = min(idle * 2, _IDLE_MAX_S)
            if claims:
                await self.process(claims)

    async def drain(self) -> int:
        """Apply everything that is ready (used at start, before the server answers)."""
        total = 0
        while claims := self._queue.claim(self._settings.worker_batch):
            await self.process(claims)
            total += len(claims)
        return total

    async def process(self, claims: list[Claim]) -> None:
        """Apply a batch; when it fails, apply its votes one by one so one bad vote cannot
        hold back the rest, and count attempts for those that still fail."""
        try:
            await self._apply(claims)
            return
        except Exception as exc:
            if len(claims) == 1:
                await self._failed(claims[0], exc)
                return
            log.warning("batch of %d failed (%s); applying one by one", len(claims), exc)
        for claim in claims:
            try:
                await self._apply([claim])
            except Exception as exc:
                await self._failed(claim, exc)

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        tasks = [
            asyncio.create_task(self.run(i), name=f"opus-worker-{i}")
            for i in range(self._settings.workers)
        ]
        reaper = asyncio.create_task(self._reap_expired(), name="opus-reaper")
        try:
            yield
        finally:
            # Finish the batches in hand, then stop; a claim cut short would only be
            # re-delivered after a restart, but finishing it is cheaper for everyone.
            self._stopping = True
            self._work_available.set()
            reaper.cancel()
            await asyncio.gather(*tasks, reaper, return_exceptions=True)

    async def _reap_expired(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self._settings.claim_timeout_s / 3))
            try:
                returned = self._queue.return_expired(self._settings.claim_timeout_s)
            except Exception:
                log.exception("could not return expired claims")
                continue
            if returned:
                log.warning("returned %d expired claims to the queue", returned)
                self._work_available.set()

    # -- applying a batch ----------------------------------------------------------------

    async def _apply(self, claims: list[Claim]) -> None:
        started = time.perf_counter()
        votes = [_parse(c) for c in claims]
        with self._db.write() as conn:
            plan = self._plan(conn, votes)
            self._write(conn, plan)
        self._queue.done(claims)
        self._ledger.settled([c.event_id for c in claims])
        self._on_commit()
        now_ns = time.time_ns()
        for vote in plan.counted:
            latency = max(0.0, (now_ns - vote.claim.in_time_ns) / 1e9)
            self._metrics.accept_to_counted.observe(latency)
            self._metrics.recent_latency.add(latency)
        self._metrics.votes_counted.inc(len(plan.counted))
        for reason, n in plan.rejected.items():
            self._metrics.votes_worker_rejected.labels(reason).inc(n)
        self._metrics.worker_batch_size.observe(len(claims))
        self._metrics.worker_apply_seconds.observe(time.perf_counter() - started)

    def _plan(self, conn: sqlite3.Connection, votes: list[_Vote]) -> _Plan:
        plan = _Plan()
        event_ids = [v.claim.event_id for v in votes]
        done = {
            r[0]
            for r in fetchall(
                conn,
                f"SELECT event_id FROM processed_events WHERE event_id IN"
                f" ({placeholders(event_ids)})",
                event_ids,
            )
        }
        poll_ids = sorted({v.poll_id for v in votes})
        polls = {
            r["id"]: r
            for r in fetchall(
                conn,
                f"SELECT id, room_id, allow_change FROM polls WHERE id IN"
                f" ({placeholders(poll_ids)})",
                poll_ids,
            )
        }
        options: dict[str, set[str]] = {}
        for r in fetchall(
            conn,
            f"SELECT id, poll_id FROM options WHERE poll_id IN ({placeholders(poll_ids)})",
            poll_ids,
        ):
            options.setdefault(r["poll_id"], set()).add(r["id"])
        keys = sorted({(v.poll_id, v.voter_id) for v in votes})
        existing: dict[tuple[str, str], tuple[str, list[str], int]] = {}
        for r in fetchall(
            conn,
            # A join from the keys, not `(poll_id, voter_id) IN (VALUES ...)`: SQLite plans
            # that as a scan of every vote, once per batch.
            f"WITH k(p, v) AS (VALUES {','.join('(?, ?)' for _ in keys)})"
            " SELECT poll_id, voter_id, event_id, choice, accepted_ns"
            " FROM k JOIN votes ON votes.poll_id = k.p AND votes.voter_id = k.v",
            [x for key in keys for x in key],
        ):
            existing[(r["poll_id"], r["voter_id"])] = (
                r["event_id"], json.loads(r["choice"]), r["accepted_ns"]
            )

        now = events.now_iso()
        for vote in votes:
            event_id = vote.claim.event_id
            if event_id in done:
                continue  # re-delivered: already applied, nothing changes
            done.add(event_id)
            key = (vote.poll_id, vote.voter_id)
            poll = polls.get(vote.poll_id)
            reason: str | None = None
            if poll is None:
                reason = "poll_not_found"
            elif not options.get(vote.poll_id, set()).issuperset(vote.option_ids):
                reason = "invalid_option"
            elif key in existing and not poll["allow_change"]:
                reason = "already_voted"
            elif key in existing and existing[key][2] > vote.claim.in_time_ns:
                reason = "superseded"  # a later vote by the same voter was applied first
            if reason is not None:
                plan.processed.append(
                    (event_id, vote.poll_id, vote.voter_id, "rejected", reason, vote.choice, now)
                )
                plan.rejected[reason] = plan.rejected.get(reason, 0) + 1
                continue
            assert poll is not None
            if key in existing:
                old_event, old_options, _ = existing[key]
                plan.add_tally(old_options, -1)
                plan.replaces.append(
                    (event_id, vote.choice, vote.claim.in_time_ns, now, *key)
                )
                plan.processed.append(
                    (old_event, vote.poll_id, vote.voter_id, "rejected", "replaced", "[]", now)
                )
            else:
                plan.inserts.append(
                    (*key, event_id, vote.choice, vote.claim.in_time_ns, now)
                )
                plan.totals[vote.poll_id] = plan.totals.get(vote.poll_id, 0) + 1
            existing[key] = (event_id, vote.option_ids, vote.claim.in_time_ns)
            plan.add_tally(vote.option_ids, +1)
            plan.processed.append(
                (event_id, vote.poll_id, vote.voter_id, "counted", None, vote.choice, now)
            )
            plan.counted.append(vote)
            plan.events.append(
                events.envelope(
                    events.POLL_VOTE_CAST,
                    {
                        "poll_id": vote.poll_id,
                        "room_id": poll["room_id"],
                        "voter_id": vote.voter_id,
                        "option_ids": vote.option_ids,
                    },
                    source=self._node_id,
                    actor=vote.voter_id,
                    event_id=event_id,
                    timestamp=now,
                )
            )
        return plan

    def _write(self, conn: sqlite3.Connection, plan: _Plan) -> None:
        if plan.inserts:
            conn.executemany(
                "INSERT INTO votes (poll_id, voter_id, event_id, choice, accepted_ns,"
                " counted_at) VALUES (?, ?, ?, ?, ?, ?)",
                plan.inserts,
            )
        if plan.replaces:
            conn.executemany(
                "UPDATE votes SET event_id = ?, choice = ?, accepted_ns = ?, counted_at = ?"
                " WHERE poll_id = ? AND voter_id = ?",
                plan.replaces,
            )
        if plan.tally:
            conn.executemany(
                "UPDATE tallies SET votes = votes + ? WHERE option_id = ?",
                [(delta, option_id) for option_id, delta in plan.tally.items() if delta],
            )
        if plan.totals:
            conn.executemany(
                "UPDATE polls SET total_votes = total_votes + ? WHERE id = ?",
                [(delta, poll_id) for poll_id, delta in plan.totals.items()],
            )
        if plan.processed:
            # A replaced vote was counted once; its receipt now says it was replaced.
            conn.executemany(
                "INSERT INTO processed_events (event_id, poll_id, voter_id, status, reason,"
                " choice, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET status = excluded.status,"
                " reason = excluded.reason",
                plan.processed,
            )
        if plan.events:
            outbox.add(conn, plan.events)
        if plan.processed:
            ids = [p[0] for p in plan.processed]
            conn.execute(
                f"DELETE FROM delivery_failures WHERE event_id IN ({placeholders(ids)})", ids
            )

    # -- failures ------------------------------------------------------------------------

    async def _failed(self, claim: Claim, exc: Exception) -> None:
        """Count the attempt in SQLite; retry later with backoff, or dead-letter the message."""
        try:
            vote = _parse(claim)
            who = (vote.poll_id, vote.voter_id, vote.choice)
        except Exception:
            who = ("", "", claim.data[:500])
        error = f"{type(exc).__name__}: {exc}"[:500]
        try:
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO delivery_failures (message_id, event_id, poll_id, voter_id,"
                    " choice, attempts, last_error, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
                    " ON CONFLICT (message_id) DO UPDATE SET attempts = attempts + 1,"
                    " last_error = excluded.last_error, updated_at = excluded.updated_at",
                    (claim.message_id, claim.event_id, *who, error, events.now_iso()),
                )
                (attempts,) = (
                    fetchall(
                        conn,
                        "SELECT attempts FROM delivery_failures WHERE message_id = ?",
                        (claim.message_id,),
                    )
                )[0]
                dead = attempts >= self._settings.max_attempts
                if dead:
                    conn.execute(
                        "UPDATE delivery_failures SET dead = 1 WHERE message_id = ?",
                        (claim.message_id,),
                    )
        except Exception:
            log.exception("could not record the failure of %s", claim.event_id)
            return  # the claim expires and the message comes back
        if dead:
            self._queue.fail(claim)
            log.error(
                "vote %s failed %d times, moved to failed: %s", claim.event_id, attempts, error
            )
            return
        self._metrics.worker_retries.inc()
        log.warning("vote %s failed (attempt %d), will retry: %s", claim.event_id, attempts,
                    error)
        delay = _BACKOFF_BASE_S * 2 ** (attempts - 1)
        asyncio.get_running_loop().call_later(delay, self._retry_later, claim)

    def _retry_later(self, claim: Claim) -> None:
        async def retry() -> None:
            with contextlib.suppress(Exception):
                self._queue.retry(claim)
            self._work_available.set()

        if not self._stopping:
            asyncio.get_running_loop().create_task(retry())


def _parse(claim: Claim) -> _Vote:
    data = json.loads(claim.data)
    option_ids = [str(o) for o in data["c"]]
    return _Vote(claim, data["p"], data["v"], json.dumps(option_ids, separators=(",", ":")),
                 option_ids)
