"""The vote path: check a vote against the in-memory view of polls and the ledger, write it
durably to the queue in a group commit, and only then let the handler answer 202."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from opus import events, kinds
from opus.auth import Voter
from opus.bodies import CastVote, sent
from opus.catalog import Catalog, PollView
from opus.config import Settings
from opus.db import is_disk_full
from opus.errors import (
    Conflict,
    Forbidden,
    NotFound,
    OpusError,
    StorageFull,
    TooManyRequests,
    Unavailable,
)
from opus.ledger import Entry, Ledger
from opus.metrics import Metrics
from opus.queue import DuplicateKey, VoteQueue

log = logging.getLogger(__name__)

QUESTIONS_PER_VOTER = 10  # questions one voter may ask in one Q&A
# Votes in one group commit at most: a hall's herd hands in thousands at once, and writing
# them all in one transaction held the event loop for 50-90 ms; the rest go in the next.
COMMIT_MAX = 256
ASKS_PER_MINUTE = 3  # questions one voter may ask in a minute
_ASK_WINDOW_S = 60.0


def _choice(poll: PollView, body: CastVote) -> kinds.Choice:
    """The vote's choice, after the poll kind's rules (kinds.py)."""
    if poll.kind in kinds.OPTION_KINDS:
        return kinds.option_choice(
            poll.kind,
            poll.options,
            poll.option_ids,
            option_ids=sent(body.option_ids),
            value=sent(body.value),
        )
    if poll.kind == "text":
        return kinds.text_choice(sent(body.text))
    return kinds.qa_choice(sent(body.text), sent(body.upvote))


def _event_id_conflict() -> Conflict:
    return Conflict(
        "This event_id was already used for a different vote.", code="event_id_conflict"
    )


class Ingest:
    def __init__(
        self,
        settings: Settings,
        queue: VoteQueue,
        catalog: Catalog,
        ledger: Ledger,
        metrics: Metrics,
        work_available: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._catalog = catalog
        self._ledger = ledger
        self._metrics = metrics
        self._work_available = work_available
        self._batch: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._asks: dict[str, deque[float]] = {}  # voter id -> times of recent questions
        self._wake = asyncio.Event()
        self._closing = False

    def _check_asking(self, poll_id: str, voter_id: str) -> float:
        """One voter must not fill a Q&A (and every screen's results) with questions. Returns
        the time this question is counted at in the voter's rate."""
        if self._ledger.asked[(poll_id, voter_id)] >= QUESTIONS_PER_VOTER:
            raise Conflict(
                f"You have asked {QUESTIONS_PER_VOTER} questions in this Q&A, the"
                " most one person may ask.",
                code="question_limit",
            )
        now = time.monotonic()
        recent = self._asks.setdefault(voter_id, deque())
        while recent and recent[0] < now - _ASK_WINDOW_S:
            recent.popleft()
        if len(recent) >= ASKS_PER_MINUTE:
            retry = int(recent[0] + _ASK_WINDOW_S - now) + 1
            raise TooManyRequests(
                f"You are asking faster than {ASKS_PER_MINUTE} questions a"
                f" minute; wait {retry} seconds.",
                code="too_many_questions",
                retry_after=retry,
            )
        recent.append(now)
        if len(self._asks) > 100_000:  # a long day: forget who has not asked this last minute
            self._asks = {v: q for v, q in self._asks.items() if q and q[-1] > now - _ASK_WINDOW_S}
        return now

    def _reject(self, reason: str) -> None:
        self._metrics.votes_rejected.labels(reason).inc()

    async def cast(self, voter: Voter, poll_id: str, body: CastVote) -> str:
        """Accept one vote; returns its event id once it is durable. Raises OpusError."""
        try:
            return await self._cast(voter, poll_id, body)
        except OpusError as exc:
            self._reject(exc.code)
            raise

    async def _cast(self, voter: Voter, poll_id: str, body: CastVote) -> str:
        if self._closing:
            raise Unavailable("The server is shutting down; try again.", retry_after=2)
        poll = self._catalog.polls.get(poll_id)
        if poll is None or poll.status == "draft":  # drafts are the host's secret
            raise NotFound("No poll has this id.", code="poll_not_found")
        if poll.room_id != voter.room_id:
            raise Forbidden("This poll belongs to another room.", code="wrong_room")
        event_id = events.uuid7() if body.event_id is None else str(body.event_id)
        entry = Entry(poll_id, voter.voter_id, _choice(poll, body))
        # A retry is answered as the first try was, even if the poll has closed since (the
        # ledger has let a closed poll's votes go: SQLite has them).
        known = self._ledger.by_event.get(event_id)
        if known is None and poll.status != "open":
            known = self._ledger.recorded([event_id]).get(event_id)
        if known is None and poll.status != "open":
            if poll.kind == "quiz" and poll.past_deadline(time.time()):  # closed by its clock
                raise Conflict("Time is up for this question.", code="time_up")
            raise Conflict("This poll is not open for votes.", code="poll_not_open")
        if known is not None:
            if known != entry:
                raise _event_id_conflict()
            # A retry of a vote we already have: answer as the first time, once it is durable.
            inflight = self._inflight.get(event_id)
            if inflight is not None:
                await asyncio.shield(inflight)
            return event_id
        if poll.kind == "quiz" and poll.opened_at and time.time() < poll.opened_at:
            raise Conflict("This question starts in a moment.", code="poll_not_open")
        if poll.kind == "quiz" and poll.past_deadline(time.time()):
            raise Conflict("Time is up for this question.", code="time_up")
        key = entry.key
        if key is not None and key in self._ledger.by_key:
            if key[1] != voter.voter_id:  # an upvote: once per question, whatever the poll
                raise Conflict("You have already upvoted this question.", code="already_voted")
            if not poll.allow_change:
                raise Conflict("You have already voted in this poll.", code="already_voted")
        if isinstance(entry.choice, kinds.Upvote):
            asked = self._ledger.by_event.get(entry.choice.question_id)
            if (
                asked is None
                or asked.poll_id != poll_id
                or not isinstance(asked.choice, kinds.Question)
            ):
                raise NotFound("No question in this poll has this id.", code="question_not_found")
        if len(self._ledger.pending) >= self._settings.max_backlog:
            raise Unavailable(
                "Too many votes are waiting; try again.", code="queue_full", retry_after=1
            )
        # A Q&A question: a few per voter, and not all at once. Checked last, so that only a
        # question that is then accepted (or fails to be saved, see below) takes a place.
        asked_at = self._check_asking(poll_id, voter.voter_id) if key is None else None

        previous = self._ledger.accept(event_id, entry)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[event_id] = future
        self._batch.append((event_id, entry.payload(), future))
        self._wake.set()
        try:
            await asyncio.shield(future)
        except BaseException:
            self._ledger.forget(event_id, previous)
            if asked_at is not None:  # not saved: it does not count against the voter's rate
                with contextlib.suppress(KeyError, ValueError):
                    self._asks[voter.voter_id].remove(asked_at)
            raise
        finally:
            del self._inflight[event_id]
        self._metrics.votes_accepted.inc()
        return event_id

    async def run(self) -> None:
        """The group committer: the first vote after a commit opens a window of
        `commit_interval_ms`; every vote handed in meanwhile goes into the same synced commit
        (about 60 votes per commit at the maximum rate here), and its handler answers after."""
        linger = self._settings.commit_interval_ms / 1000
        while not (self._closing and not self._batch):
            if not self._batch:
                self._wake.clear()
                await self._wake.wait()
                if linger:
                    await asyncio.sleep(linger)
            batch, self._batch = self._batch[:COMMIT_MAX], self._batch[COMMIT_MAX:]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                batch = self._unused(batch)
                outcome = self._queue.put_many([(e, d) for e, d, _ in batch])
                await self._queue.sync()  # the fsync, in a thread: the loop answers meanwhile
            except Exception as exc:  # disk full, I/O error: nothing was acknowledged
                log.error("vote commit failed for %d votes: %s", len(batch), exc)
                error = (
                    StorageFull()
                    if is_disk_full(exc)
                    else Unavailable(
                        "Votes cannot be saved right now; try again.",
                        code="storage_error",
                        retry_after=2,
                    )
                )
                for _, _, future in batch:
                    future.set_exception(error)
                continue
            self._metrics.group_commit_seconds.observe(time.perf_counter() - started)
            self._metrics.group_commit_size.observe(len(batch))
            for (_, _, future), problem in zip(batch, outcome, strict=True):
                if isinstance(problem, DuplicateKey):
                    future.set_exception(_event_id_conflict())
                else:
                    future.set_result(None)
            self._work_available.set()
            if self._batch:
                await asyncio.sleep(0)  # more wait: let the loop run between two commits

    def _unused(
        self, batch: list[tuple[str, bytes, asyncio.Future[None]]]
    ) -> list[tuple[str, bytes, asyncio.Future[None]]]:
        """Refuse the votes whose event id a different, applied vote has: one of a closed
        poll, which the ledger no longer holds (the queue catches the ids it still has). One
        read by primary key per commit, not one per vote."""
        used = self._ledger.recorded([event_id for event_id, _, _ in batch])
        if not used:
            return batch
        unused = []
        for event_id, data, future in batch:
            if event_id in used and used[event_id].payload() != data:
                future.set_exception(_event_id_conflict())
            else:
                unused.append((event_id, data, future))
        return unused

    async def close(self) -> None:
        """Refuse new votes, commit the ones already handed in, stop the committer."""
        self._closing = True
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        task = asyncio.create_task(self.run(), name="opus-group-commit")
        try:
            yield
        finally:
            await self.close()
            await task
