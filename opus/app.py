"""create_app(settings): the shared objects, their start and stop order, and the routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from opus import __version__, auth, files, quizclock, ws
from opus.auth import same_token
from opus.catalog import Catalog
from opus.config import Settings
from opus.db import Database, checkpoint
from opus.errors import Unauthorized
from opus.events import never_before, uuid7
from opus.hub import Hub
from opus.identity import ClientAddresses, IdentityLimits, is_loopback
from opus.ingest import Ingest
from opus.keys import (
    ADDRESSES,
    ADMIN_TOKEN,
    BOX,
    BROADCASTER,
    CATALOG,
    COMMITTED,
    DB,
    HUB,
    IDENTITIES,
    INGEST,
    LEDGER,
    METRICS,
    NODE_ID,
    NOTIFIER,
    ON_COMMIT,
    ON_VOTES,
    QUEUE,
    REPLICATION,
    ROOMS,
    SETTINGS,
    SIGNER,
    SOURCE,
    VENUE,
)
from opus.ledger import Ledger
from opus.live import LIVE_EVENTS, Broadcaster
from opus.lock import DataDirLock
from opus.metrics import Metrics
from opus.natsbox import NatsServer
from opus.notifications import NOTIFIED_EVENTS, Notifier
from opus.outbox import Relay
from opus.queue import VoteQueue
from opus.replica import Applied, Replica
from opus.replication import Replication
from opus.rooms import Rooms
from opus.venue import load as load_venue
from opus.views import api, attendee, host, kit, middleware, openapi, screen
from opus.worker import Workers

log = logging.getLogger(__name__)

_CHECKPOINT_S = 1.0  # the only checkpoints: the loop's connections make none (db.py)
_MAX_CHUNKS = 100  # per prune; what is left waits for the next one
_LAG_TICK_S = 0.05
_RENOTIFY_S = 900.0  # at start, poll events of the last 15 minutes notify again (see _pipeline)


def load_node_id(data_dir: Path) -> str:
    """This appliance's stable id: the `source` of every event it creates."""
    return files.read_or_create(
        data_dir / "node_id",
        uuid7,
        min_length=len(uuid7()),
        consequence="this box gets a new node id (events it made keep the old one)",
    )


async def _data_dir_lock(app: web.Application) -> AsyncIterator[None]:
    """One server per data dir (two would each trust their own in-memory record of votes),
    and no restore under a running server: see lock.py."""
    held = DataDirLock(app[SETTINGS].data_dir, port=app[SETTINGS].port)
    await asyncio.to_thread(held.acquire)
    yield
    held.release()


async def _database(app: web.Application) -> AsyncIterator[None]:
    db = Database(app[SETTINGS].db_path)
    await db.open()
    app[DB] = db
    yield
    await db.close()


async def _queue(app: web.Application) -> AsyncIterator[None]:
    queue = await asyncio.to_thread(VoteQueue, app[SETTINGS].queue_path)
    app[QUEUE] = queue
    yield
    await asyncio.to_thread(queue.close)


async def _pipeline(app: web.Application) -> AsyncIterator[None]:
    """Recover, then run: the relay, the workers and the group committer, stopped in the
    reverse order so that every vote handed in is committed and every claim finished."""
    settings, db, queue, metrics = app[SETTINGS], app[DB], app[QUEUE], app[METRICS]
    ledger, hub = Ledger(db), Hub()
    catalog = Catalog(on_status=ledger.poll_changed)
    await catalog.load(db)
    # New queue ids sort after every counted vote's, even those of pruned messages (read
    # from the index on queued_id: no scan of the votes).
    newest = await db.fetchone("SELECT MAX(queued_id) FROM votes")
    if newest is not None and newest[0]:
        never_before(newest[0])
    app[CATALOG], app[LEDGER], app[HUB] = catalog, ledger, hub
    relay = Relay(db, hub, metrics, keep_log=VENUE in app)
    app[IDENTITIES] = identities = IdentityLimits(settings)
    await identities.load(db)
    wakers = app[ON_COMMIT] = [relay.wake]  # in a venue, the publisher's too

    def committed() -> None:
        """New events are in the outbox: for this box's hub, and for the venue's boxes."""
        for wake in wakers:
            wake()

    app[COMMITTED] = committed

    app[ROOMS] = Rooms(db, catalog, app[SOURCE], committed, identities)
    work_available = asyncio.Event()
    # The screens learn of counted votes straight from the workers (the broadcaster, made
    # below, after the backlog is applied: nobody watches yet).
    told: list[Callable[[dict[tuple[str, str], int]], None]] = []

    def votes_applied(touched: dict[tuple[str, str], int]) -> None:
        for tell in told:
            tell(touched)

    app[ON_VOTES] = votes_applied
    workers = Workers(
        settings,
        db,
        queue,
        ledger,
        metrics,
        app[SOURCE],
        work_available,
        committed,
        votes_applied,
        log=VENUE in app,
    )
    # No worker is alive yet, so every claim is a dead worker's: give them back, then apply
    # the backlog before the first request, so the ledger rebuilt from SQLite is complete.
    returned = queue.return_expired(0)
    drained = await workers.drain()
    if returned or drained:
        log.info("recovered %d claimed votes, applied %d queued votes", returned, drained)
    ledger.load()
    metrics.watch_depth(lambda: len(ledger.pending))

    app[INGEST] = ingest = Ingest(settings, queue, catalog, ledger, metrics, work_available)
    app[BROADCASTER] = broadcaster = Broadcaster(
        settings, app[ROOMS], catalog, lambda: len(ledger.pending), metrics.recent_latency
    )
    told.append(broadcaster.votes_applied)
    app[NOTIFIER] = notifier = Notifier(
        db, broadcaster.push_notification, broadcaster.online_voters, app[SOURCE], committed
    )
    # The relay marks an event sent once it is handed to the hub; a crash before the notifier's
    # task wrote its notifications would lose them. Recent ones are written again (those that
    # exist are skipped: one per voter and event).
    for event in await relay.recently_sent(NOTIFIED_EVENTS, _RENOTIFY_S):
        await notifier.fan_out(event)
    hub.subscribe("live", broadcaster.on_event, LIVE_EVENTS)
    hub.subscribe("notifications", notifier.fan_out, NOTIFIED_EVENTS)
    relay_task = asyncio.create_task(relay.run(), name="opus-outbox-relay")
    helpers = [
        asyncio.create_task(_housekeeping(app, relay), name="opus-housekeeping"),
        asyncio.create_task(broadcaster.run_results(), name="opus-live-results"),
        asyncio.create_task(broadcaster.run_activity(), name="opus-activity-feed"),
        asyncio.create_task(_watch_loop(metrics), name="opus-loop-lag"),
        asyncio.create_task(quizclock.close_when_due(app[ROOMS], catalog), name="opus-quiz-clock"),
    ]
    async with workers.running(), ingest.running():
        yield
    await relay.stop()
    await relay_task
    await hub.close()
    for task in helpers:
        task.cancel()
    await asyncio.gather(*helpers, return_exceptions=True)


async def _venue(app: web.Application) -> AsyncIterator[None]:
    """In a venue: the box's NATS server (unless --nats-url names one), then the publishing of
    this box's events and the pulling of its peers'; stopped before the pipeline."""
    if VENUE not in app:
        yield
        return
    venue, box, settings = app[VENUE], app[BOX], app[SETTINGS]
    server = None
    if settings.nats_url is None:
        server = NatsServer(venue, box, settings.data_dir)
        await server.start()
    notifier = app[NOTIFIER]
    later: set[asyncio.Task[int]] = set()

    def learned(done: Applied) -> None:
        """Voters, and votes in closed polls, that arrived after their notifications' events;
        and the addresses of voters who joined at other boxes (the limits are the venue's)."""
        for room_id, address in done.addresses:
            app[IDENTITIES].record(room_id, address)
        catalog = app[CATALOG]
        voted: dict[str, list[str]] = {}
        for vote in done.votes:
            view = catalog.polls.get(vote.poll_id)
            if view is not None and view.status == "closed":
                voted.setdefault(vote.poll_id, []).append(vote.voter_id)
        if not (voted or done.joined):
            return
        task = asyncio.create_task(notifier.catch_up(done.joined, voted))
        later.add(task)
        task.add_done_callback(later.discard)

    replica = Replica(
        app[DB], app[CATALOG], app[LEDGER], box.name, app[COMMITTED], app[ON_VOTES], learned
    )
    own = settings.nats_url or (server.url if server is not None else box.nats_url())
    app[REPLICATION] = replication = Replication(venue, box, app[DB], replica, own, app[METRICS])
    app[ON_COMMIT].append(replication.wake)
    app[BROADCASTER].venue = replication.summary
    await replication.start()
    yield
    await replication.stop()
    if server is not None:
        await server.stop()


async def _close_sockets(app: web.Application) -> None:
    """Sockets first: their handlers must end before the server can finish shutting down."""
    await app[BROADCASTER].close_all()


async def _housekeeping(app: web.Application, relay: Relay) -> None:
    """WAL checkpoints in a thread, and, every `prune_interval_s`, pruning in small chunks:
    nothing here may hold the event loop for long. A failure (a full disk) is logged and the
    next round tries again."""
    queue, metrics, settings = app[QUEUE], app[METRICS], app[SETTINGS]
    loop = asyncio.get_running_loop()
    next_checkpoint = loop.time() + _CHECKPOINT_S
    next_prune = loop.time() + settings.prune_interval_s
    while True:
        await asyncio.sleep(max(0.0, min(next_checkpoint, next_prune) - loop.time()))
        try:
            if loop.time() >= next_checkpoint:
                next_checkpoint = loop.time() + _CHECKPOINT_S
                for path in (settings.db_path, settings.queue_path):
                    await asyncio.to_thread(checkpoint, path)
                metrics.queue_failed.set(queue.failed_count())
            if loop.time() >= next_prune:
                next_prune = loop.time() + settings.prune_interval_s
                for prune in (queue.prune, relay.prune):
                    for _ in range(_MAX_CHUNKS):
                        if not prune():
                            break
                        await asyncio.sleep(0)  # let requests in between chunks
        except Exception:
            log.exception("housekeeping failed; will try again")


async def _watch_loop(metrics: Metrics) -> None:
    """Everything here shares one event loop: a stall shows as a late timer."""
    longest = 0.0
    while True:
        # perf_counter, not loop.time(): uvloop's clock is in milliseconds, read once per turn
        started = time.perf_counter()
        await asyncio.sleep(_LAG_TICK_S)
        late = max(0.0, time.perf_counter() - started - _LAG_TICK_S)
        metrics.loop_lag.observe(late)
        if late > longest:
            longest = late
            metrics.loop_lag_max.set(late)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(
        {"status": "ok", "version": __version__, "node_id": request.app[NODE_ID]}
    )


async def metrics_view(request: web.Request) -> web.Response:
    """Prometheus text, for the box itself and the admin token (`--metrics-public` opens it to
    everyone): it tells how busy every room is."""
    if not (
        request.app[SETTINGS].metrics_public or is_loopback(request.app[ADDRESSES].of(request))
    ):
        header = request.headers.get("Authorization", "")
        if not same_token(
            header[7:] if header[:7].lower() == "bearer " else "", request.app[ADMIN_TOKEN]
        ):
            raise Unauthorized(
                "/metrics needs the admin token from other machines.", code="unauthorized"
            )
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def _nosniff(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Every response, the API's JSON, static files and errors alike: a browser must not guess
    another type than the one sent."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[middleware.handle],
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[NODE_ID] = app[SOURCE] = load_node_id(settings.data_dir)
    app[ADDRESSES] = ClientAddresses(settings.trusted_proxies)
    if settings.venue is not None:
        # One venue, one set of keys: a token made at any box is valid at every box.
        venue = load_venue(settings.venue)
        app[VENUE], app[BOX] = venue, venue.box(settings.box)
        app[SOURCE] = app[BOX].name
        app[SIGNER] = auth.Signer(venue.signing_secret)
        app[ADMIN_TOKEN] = settings.admin_token or venue.admin_token
    else:
        app[SIGNER] = auth.Signer(auth.load_secret(settings.data_dir))
        app[ADMIN_TOKEN], _ = auth.load_admin_token(settings.data_dir, settings.admin_token)
    app.cleanup_ctx.extend([_data_dir_lock, _database, _queue, _pipeline, _venue])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/ws", ws.websocket)
    app.on_shutdown.append(_close_sockets)
    app.on_response_prepare.append(_nosniff)
    api.setup(app)
    openapi.setup(app)
    kit.setup(app)
    attendee.setup(app)
    screen.setup(app)
    host.setup(app)
    return app
