"""Workers: claim votes from the queue in batches and apply each batch to SQLite in one
transaction (apply.py), then acknowledge the messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from opus import apply, events
from opus.config import Settings
from opus.db import Database, fetchall, is_disk_full
from opus.ledger import Ledger
from opus.metrics import Metrics
from opus.queue import Claim, VoteQueue

log = logging.getLogger(__name__)

_IDLE_MAX_S = 0.25
_BACKOFF_BASE_S = 0.2
_FULL_PAUSE_S = 1.0
_FULL_LOG_EVERY_S = 10.0


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
        on_votes: Callable[[dict[tuple[str, str], int]], None],
        *,
        log: bool = False,
    ) -> None:
        self._settings = settings
        self._db = db
        self._queue = queue
        self._ledger = ledger
        self._metrics = metrics
        self._node_id = node_id
        self._work_available = work_available
        self._on_commit = on_commit  # new events in the outbox (a venue's log)
        self._on_votes = on_votes  # the polls a batch moved, for the screens (live.py)
        self._log = log  # a box of a venue: each vote's event goes to the outbox, its log
        self._stopping = False
        self._claiming = asyncio.Lock()
        # The last claim took a whole batch: more votes wait, the next claim need not linger.
        self._more_waiting = False
        # CPU seconds a batch took per vote, lately (claim to acknowledgement, on the event
        # loop's thread): batches are sized to hold the loop for `worker_budget_ms` at most.
        # CPU time, not wall time: a commit's fsync waits on the disk whatever the batch's size,
        # and counting that wait per vote would shrink batches (more commits, more waits) until
        # the workers fell behind. The first guess is 100 µs, about a vote on a quiet machine.
        self._per_vote_s = 100e-6
        self._full_logged = -_FULL_LOG_EVERY_S

    # -- the loop ------------------------------------------------------------------------

    async def run(self, index: int) -> None:
        """Claim a batch, apply it, again. One worker at a time waits for work (the others
        queue on the lock), so a new vote wakes one claim, not the whole pool.

        Before a claim the worker lets votes gather for `worker_linger_ms` (unless the pool's
        last claim was a full batch: then more are waiting). A batch has a fixed cost (two
        queue transactions, the reads, a commit, the relay's round): applied a few votes at a
        time, a steady flow of votes cost the event loop several times what the votes
        themselves do."""
        linger = self._settings.worker_linger_ms / 1000
        while not self._stopping:
            claims: list[Claim] = []
            async with self._claiming:
                while not self._stopping:
                    await self._gather(linger)
                    self._work_available.clear()
                    size = self._batch_size()
                    started = time.thread_time()
                    try:
                        claims = self._queue.claim(size)
                        claiming = time.thread_time() - started
                    except Exception as exc:
                        if not is_disk_full(exc):
                            log.exception("worker %d could not claim votes", index)
                        elif self._note_full():  # one line now and then, not a traceback a tick
                            log.error("the disk is full: votes wait in the queue for space")
                    self._more_waiting = len(claims) >= size
                    if claims:
                        break
            if claims and (cpu := await self.process(claims)) is not None:
                self._took(claiming + cpu, len(claims))

    def _batch_size(self) -> int:
        """Votes to claim: as many as fit in the loop budget, at most `worker_batch`."""
        fit = int(self._settings.worker_budget_ms / 1000 / self._per_vote_s)
        return max(1, min(self._settings.worker_batch, fit))

    def _took(self, seconds: float, votes: int) -> None:
        """Learn the time per vote from a batch: a moving average, each batch counting for at
        most four times the estimate (one slow batch, an fsync that waited on the disk or a
        full disk's pause, does not make the next ones tiny)."""
        sample = min(seconds / votes, 4 * self._per_vote_s)
        self._per_vote_s = 0.8 * self._per_vote_s + 0.2 * sample

    async def _gather(self, linger: float) -> None:
        """Wait for ready votes, then let more join them for `linger` seconds; neither when the
        last claim was a full batch (more are waiting already)."""
        if self._more_waiting:
            return
        if not self._work_available.is_set():
            # Every path that readies a vote sets the event; the timeout only notices
            # `opus queue retry` run beside a live server.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work_available.wait(), _IDLE_MAX_S)
        if linger and not self._stopping:
            await asyncio.sleep(linger)

    async def drain(self) -> int:
        """Apply everything that is ready (used at start, before the server answers)."""
        total = 0
        while claims := self._queue.claim(self._settings.worker_batch):
            await self.process(claims)
            total += len(claims)
        return total

    async def process(self, claims: list[Claim]) -> float | None:
        """Apply a batch; when it fails, apply its votes one by one so one bad vote cannot
        hold back the rest, and count attempts for those that still fail. Returns the CPU
        seconds the batch took on the loop; None when it failed (it tells nothing of what a
        vote costs)."""
        try:
            return await self._apply(claims)
        except Exception as exc:
            if is_disk_full(exc):
                await self._wait_for_space(claims)
                return None
            if len(claims) == 1:
                await self._failed(claims[0], exc)
                return None
            log.warning("batch of %d failed (%s); applying one by one", len(claims), exc)
        for claim in claims:
            try:
                await self._apply([claim])
            except Exception as exc:
                await self._failed(claim, exc)
        return None

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

    async def _apply(self, claims: list[Claim]) -> float:
        """Apply a batch and acknowledge it; returns the CPU seconds it took on the loop's
        thread: its own, not the other work the loop did while its fsync ran in a thread."""
        started, began = time.perf_counter(), time.thread_time()
        votes = [apply.parse(c) for c in claims]
        with self._db.write(synced=False) as conn:
            plan = apply.plan(conn, votes, self._node_id, log=self._log)
            apply.write(conn, plan)
        # Durable before the queue may forget the votes: its fsync in a thread, not on the loop
        # (waiting on a busy disk there held every request for tens of milliseconds).
        cpu = time.thread_time() - began
        await self._db.sync()
        resumed = time.thread_time()
        self._queue.done(claims)
        self._ledger.settled([c.event_id for c in claims])
        self._on_votes(plan.touched)
        if plan.events:
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
        return cpu + time.thread_time() - resumed

    # -- failures ------------------------------------------------------------------------

    def _note_full(self) -> bool:
        """True at most once every few seconds: whether to log that the disk is full."""
        now = time.monotonic()
        if now < self._full_logged + _FULL_LOG_EVERY_S:
            return False
        self._full_logged = now
        return True

    async def _wait_for_space(self, claims: list[Claim]) -> None:
        """A full disk is not the votes' fault: counting it as an attempt would dead-letter
        every vote of a long outage. The claims go back to the queue after a pause (if even
        that write fails, they expire and come back) and are applied once space returns."""
        if self._note_full():
            log.error("the disk is full: %d votes wait in the queue for space", len(claims))
        await asyncio.sleep(_FULL_PAUSE_S)
        for claim in claims:
            with contextlib.suppress(Exception):
                self._queue.retry(claim)
        self._work_available.set()

    async def _failed(self, claim: Claim, exc: Exception) -> None:
        """Count the attempt in SQLite; retry later with backoff, or dead-letter the message."""
        if is_disk_full(exc):
            await self._wait_for_space([claim])
            return
        try:
            vote = apply.parse(claim)
            who = (vote.poll_id, vote.voter_id, vote.choice)
        except Exception:
            who = ("", "", repr(claim.data)[:500])
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
        log.warning("vote %s failed (attempt %d), will retry: %s", claim.event_id, attempts, error)
        delay = _BACKOFF_BASE_S * 2 ** (attempts - 1)
        asyncio.get_running_loop().call_later(delay, self._retry_later, claim)

    def _retry_later(self, claim: Claim) -> None:
        async def retry() -> None:
            with contextlib.suppress(Exception):
                self._queue.retry(claim)
            self._work_available.set()

        if not self._stopping:
            asyncio.get_running_loop().create_task(retry())
