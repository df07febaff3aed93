"""How a venue's boxes share their events, over NATS.

Each box publishes its outbox, in order, to its own stream (`opus-<box>`, subject `opus.<box>`)
on its own NATS server, once the events are committed here: a vote's `202` never waits for
NATS. A message's `Nats-Msg-Id` is the event's id, so a publish repeated after a timeout or a
restart is stored once. How far the outbox is published is kept in SQLite (`venue_published`).

Each box pulls every peer's stream from the peer's own NATS server, from just after the last
sequence it applied (kept in SQLite in the same transaction as the apply, see replica.py), and
applies the events. Events learned from a peer go into this box's outbox too, so they are in
this box's stream as well: a chain A-B-C converges while the A-C link is cut.

nats-py's `connect` never returns for a server that is down when reconnects are unlimited:
every connection here is made with a bound, without reconnects, and made again by its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from opus import events, outbox
from opus.db import Database, fetchall
from opus.metrics import Metrics
from opus.replica import Replica
from opus.venue import Box, Venue

log = logging.getLogger(__name__)

_CONNECT_S = 2.0
_PUBLISH_S = 2.0
_RETRY_S = 1.0
_BATCH = 500
_FETCH_WAIT_S = 1.0
_DUPLICATE_WINDOW_S = 2 * 3600.0
_LOG_PAGE = 2000  # events per page of a peer's log
_LOG_TIMEOUT_S = 30.0


def stream(box: str) -> str:
    return f"opus-{box}"


def subject(box: str) -> str:
    return f"opus.{box}"


@dataclass(slots=True)
class PeerState:
    box: str
    reachable: bool = False
    behind: int = 0  # events in its stream this box has not applied yet
    applied: int = 0  # the last sequence of its stream applied here
    last_contact: float | None = None  # time.time() of the last answer
    replication_s: float = 0.0  # how old its newest applied event was when applied
    clock_ahead_s: float = 0.0  # how far ahead of this box's clock its last event was stamped
    stream_created: str | None = None  # when its stream was made, as last seen


@dataclass(slots=True)
class Status:
    box: str
    peers: dict[str, PeerState] = field(default_factory=dict)
    published: int = 0  # the last outbox seq published to this box's stream
    unpublished: int = 0


class Replication:
    def __init__(
        self,
        venue: Venue,
        box: Box,
        db: Database,
        replica: Replica,
        own_url: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._venue = venue
        self._box = box
        self._db = db
        self._replica = replica
        self._own_url = own_url
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.status = Status(box.name, {p.name: PeerState(p.name) for p in venue.peers(box.name)})
        if metrics is not None:
            self._export(metrics)

    def _export(self, metrics: Metrics) -> None:
        """The status as Prometheus series, read when /metrics is scraped."""
        for name, state in self.status.peers.items():
            series = (
                (metrics.venue_peer_reachable, "reachable"),
                (metrics.venue_peer_behind, "behind"),
                (metrics.venue_peer_last_contact, "last_contact"),
                (metrics.venue_peer_replication, "replication_s"),
                (metrics.venue_peer_clock_ahead, "clock_ahead_s"),
            )
            for gauge, field_name in series:
                gauge.labels(name).set_function(partial(_read, state, field_name))
        metrics.venue_unpublished.set_function(lambda: self.status.unpublished)

    def summary(self) -> dict[str, Any]:
        """What the screens show of the venue: the boxes this one does not reach, and the
        events of the others known and not yet applied here."""
        peers = self.status.peers.values()
        return {
            "box": self.status.box,
            "unreachable": sorted(p.box for p in peers if not p.reachable),
            "behind": {p.box: p.behind for p in peers if p.behind},
        }

    def wake(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    async def start(self) -> None:
        with self._db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO venue_published (one, seq) VALUES (1, 0)")
        self._tasks.append(asyncio.create_task(self._publish(), name="opus-venue-publish"))
        for peer in self._venue.peers(self._box.name):
            self._tasks.append(
                asyncio.create_task(self._pull(peer), name=f"opus-venue-pull-{peer.name}")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _connect(self, url: str) -> NATS:
        return await asyncio.wait_for(
            nats.connect(
                servers=[url],
                user=Venue.NATS_USER,
                password=self._venue.nats_password,
                name=f"opus-{self._box.name}",
                connect_timeout=_CONNECT_S,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=_quiet,  # its default logs a traceback per refused connection
            ),
            _CONNECT_S * 2,
        )

    # -- publishing this box's outbox ----------------------------------------------------

    async def _publish(self) -> None:
        while True:
            nc: NATS | None = None
            try:
                nc = await self._connect(self._own_url)
                js = nc.jetstream(timeout=_PUBLISH_S)
                config = StreamConfig(
                    name=stream(self._box.name),
                    subjects=[subject(self._box.name)],
                    storage=StorageType.FILE,
                    duplicate_window=_DUPLICATE_WINDOW_S,
                )
                try:
                    await js.add_stream(config)
                except nats.js.errors.BadRequestError:
                    await js.update_stream(config)
                await self._after_lost_store(js)
                while True:
                    while await self._publish_some(js):
                        pass
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    self._wake.clear()
                    if nc.is_closed:
                        raise ConnectionError("the connection to this box's NATS server closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("venue: publishing to this box's NATS server failed: %s", exc)
                await asyncio.sleep(_RETRY_S)
            finally:
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()

    async def _after_lost_store(self, js: nats.js.JetStreamContext) -> None:
        """An empty stream after events were published: the NATS server's store was lost (a
        wiped disk, a new box in the old one's place). Everything still in the outbox (the
        last hour) is published again; the peers apply each event once all the same."""
        info = await js.stream_info(stream(self._box.name))
        with self._db.read() as conn:
            (done,) = fetchall(conn, "SELECT seq FROM venue_published")[0]
        if info.state.messages == 0 and done > 0:
            log.warning("venue: this box's stream is empty: publishing its outbox again")
            with self._db.write() as conn:
                conn.execute("UPDATE venue_published SET seq = 0")

    async def _publish_some(self, js: nats.js.JetStreamContext) -> int:
        with self._db.read() as conn:
            (done,) = fetchall(conn, "SELECT seq FROM venue_published")[0]
            rows = fetchall(
                conn,
                "SELECT seq, event_id, envelope FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (done, _BATCH),
            )
            (last,) = fetchall(conn, "SELECT COALESCE(MAX(seq), 0) FROM outbox")[0]
        self.status.published = done
        self.status.unpublished = max(0, last - done)
        if not rows:
            return 0
        # In flight together: each acknowledgement is a synced write on the server.
        acks = [
            js.publish(
                subject(self._box.name),
                outbox.wire(row["envelope"]),
                timeout=_PUBLISH_S,
                headers={"Nats-Msg-Id": row["event_id"]},
            )
            for row in rows
        ]
        results = await asyncio.gather(*acks, return_exceptions=True)
        sent = 0
        for result in results:  # in order: the first failure ends the published prefix
            if isinstance(result, BaseException):
                log.warning("venue: a publish failed (%s); it will be sent again", result)
                break
            sent += 1
        if sent:
            with self._db.write() as conn:
                conn.execute("UPDATE venue_published SET seq = ?", (rows[sent - 1]["seq"],))
            self.status.published = rows[sent - 1]["seq"]
            self.status.unpublished = max(0, last - self.status.published)
        return sent if sent == len(rows) else 0

    # -- pulling a peer's stream ---------------------------------------------------------

    async def _pull(self, peer: Box) -> None:
        state = self.status.peers[peer.name]
        state.applied = self._replica.cursor(peer.name)
        failures = 0  # in a row: the first retries come soon (a peer starting up)
        while True:
            nc: NATS | None = None
            try:
                nc = await self._connect(peer.nats_url())
                js = nc.jetstream(timeout=_PUBLISH_S)
                info = await js.stream_info(stream(peer.name))
                created = str(info.created)
                remade = state.stream_created not in (None, created)
                if remade or info.state.last_seq < self._replica.cursor(peer.name):
                    # Its stream was made again (its store lost): read it from the start.
                    log.warning("venue: %s's stream was made again; reading it again", peer.name)
                    self._replica.reset(peer.name)
                    state.applied = 0
                state.stream_created = created
                start = self._replica.cursor(peer.name) + 1
                sub = await js.pull_subscribe(
                    subject(peer.name),
                    stream=stream(peer.name),
                    config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=start,
                        ack_policy=AckPolicy.NONE,
                        inactive_threshold=30.0,
                    ),
                )
                self._contact(state)
                failures = 0
                while True:
                    try:
                        messages = await sub.fetch(_BATCH, timeout=_FETCH_WAIT_S)
                    except (TimeoutError, nats.errors.TimeoutError):
                        # Nothing new, or a link that silently drops everything: a ping
                        # tells which (a stalled connection is closed and made again).
                        await nc.flush(timeout=2)
                        state.behind = 0
                        self._contact(state)
                        continue
                    batch = [(m.metadata.sequence.stream, events.decode(m.data)) for m in messages]
                    if batch[0][0] != state.applied + 1:
                        first = (await js.stream_info(stream(peer.name))).state.first_seq
                        if first <= state.applied + 1:
                            # Messages in flight were dropped (a fetch that timed out):
                            # subscribe again from the first one not applied.
                            raise _Gap(f"{peer.name}: expected {state.applied + 1}")
                        log.warning(
                            "venue: %s's stream starts at %d, after %d applied here (it was"
                            " trimmed): catching up from that box's log",
                            peer.name,
                            first,
                            state.applied,
                        )
                        await self._catch_up(peer, js, state)
                        raise _Gap(f"{peer.name}: caught up to {state.applied}")
                    applied = self._replica.apply_batch(peer.name, batch)
                    state.applied = batch[-1][0]
                    state.behind = messages[-1].metadata.num_pending
                    if applied.events:
                        newest = max(events.stamp_ms(e.hlc) for _, e in batch if e.hlc)
                        state.replication_s = max(0.0, time.time() - newest / 1000)
                        self._clocks(batch)
                    self._contact(state)
            except asyncio.CancelledError:
                raise
            except _Gap as gap:
                log.info("venue: pulling again after a gap (%s)", gap)
            except Exception as exc:
                if state.reachable:
                    log.warning("venue: box %s is unreachable: %s", peer.name, exc or type(exc))
                state.reachable = False
                failures += 1
                await asyncio.sleep(min(_RETRY_S, 0.1 * failures))
            finally:
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()

    async def _catch_up(self, peer: Box, js: nats.js.JetStreamContext, state: PeerState) -> None:
        """Apply every event of `peer`'s log (its outbox, kept whole in a venue), read over
        HTTP, then go on from the end of its stream as it was before the log was read: each
        event in the stream up to there was in the log by then (a box publishes only what its
        outbox holds). Events this box has are skipped, as from the stream."""
        last = (await js.stream_info(stream(peer.name))).state.last_seq
        url = f"{peer.http_url()}/api/v1/venue/log"
        headers = {"Authorization": f"Bearer {self._venue.log_token}"}
        timeout = aiohttp.ClientTimeout(total=_LOG_TIMEOUT_S)
        after, learned = 0, 0
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                params = {"after": str(after), "limit": str(_LOG_PAGE)}
                async with session.get(url, params=params, headers=headers) as response:
                    if response.status != 200:
                        raise ConnectionError(
                            f"{url} answered {response.status}: {(await response.text())[:200]}"
                        )
                    page = msgspec.msgpack.decode(await response.read(), type=LogPage)
                if page.events:
                    # At the cursor already reached: the apply keeps it where it is.
                    batch = [(state.applied, events.decode(e)) for e in page.events]
                    learned += self._replica.apply_batch(peer.name, batch).events
                    state.behind = max(0, last - state.applied)
                    self._contact(state)
                if page.next is None:
                    break
                after = page.next
        self._replica.advance(peer.name, last)
        state.applied = last
        log.info("venue: caught up from %s's log: %d events new here", peer.name, learned)

    def _clocks(self, batch: list[tuple[int, events.Event]]) -> None:
        """Flag a box whose events are stamped ahead of this box's clock (its clock is wrong,
        or this one is): every box still orders them the same way."""
        now_ms = time.time() * 1000
        newest: dict[str, int] = {}
        for _, event in batch:
            if event.hlc and event.source in self.status.peers:
                newest[event.source] = max(newest.get(event.source, 0), events.stamp_ms(event.hlc))
        for source, stamp in newest.items():
            state = self.status.peers[source]
            ahead = (stamp - now_ms) / 1000
            flagged = ahead * 1000 > events.OBSERVE_AHEAD_MS
            if flagged and not state.clock_ahead_s:
                log.warning(
                    "venue: box %s stamps its events %.0f s ahead of this box's clock: set"
                    " the clocks right (its changes win over the others' until then)",
                    source,
                    ahead,
                )
            state.clock_ahead_s = round(ahead, 1) if flagged else 0.0

    @staticmethod
    def _contact(state: PeerState) -> None:
        if not state.reachable:
            log.info("venue: box %s is reachable", state.box)
        state.reachable = True
        state.last_contact = time.time()


async def _quiet(exc: Exception) -> None:
    """nats-py's errors: the loops here report what matters (a peer unreachable)."""
    log.debug("nats: %s", exc)


def _read(state: PeerState, name: str) -> float:
    return float(getattr(state, name) or 0)


class LogPage(msgspec.Struct):
    """A page of a box's log, as GET /api/v1/venue/log sends it (MessagePack): its events'
    envelopes, and the `after` of the next page (None: the end)."""

    events: list[bytes]
    next: int | None


class _Gap(Exception):
    """A batch did not start where this box stopped."""
