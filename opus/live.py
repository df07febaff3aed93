"""Live fan-out to sockets: coalesced results, poll life-cycle, notifications, the host feed.

Results are coalesced: a vote only marks its poll dirty; every `coalesce_ms` each dirty poll's
results are read once, serialized once, and the same string is queued for every watcher. Each
client has its own writer task and a bounded outbox in which a newer results frame replaces an
older one for the same poll, so a slow phone skips stale results instead of stalling the hall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import repeat
from typing import Any, Protocol

from aiohttp import WSCloseCode, web

from opus import answers, events
from opus.catalog import Catalog
from opus.config import Settings
from opus.errors import NotFound
from opus.metrics import LatencyWindow
from opus.rooms import Rooms

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 4008  # application range: the client could not keep up
CLOSE_FULL = WSCloseCode.TRY_AGAIN_LATER
CLOSE_TOO_MANY = 4029  # application range: this address has too many sockets open
_POLL_CHANGES = (events.POLL_CREATED, events.POLL_OPENED, events.POLL_CLOSED, events.POLL_UPDATED)
# The events the sockets follow (app.py subscribes `Broadcaster.on_event` to them).
LIVE_EVENTS = (
    events.POLL_VOTE_CAST,
    *_POLL_CHANGES,
    events.POLL_DELETED,
    events.ROOM_UPDATED,
    events.ROOM_DELETED,
    events.QUESTION_UPDATED,
)
_HIGH_WATER = 64 * 1024  # bytes buffered for one socket before it counts as slow
_FAN_OUT_CHUNK = 2000  # sockets written to between two turns of the event loop (a few ms)


def text_frame(text: str | bytes) -> bytes:
    """A server-to-client WebSocket text frame (RFC 6455: final, unmasked, uncompressed).

    Server frames are not masked, so one frame's bytes serve every socket: a broadcast is one
    serialization and one transport.write per watcher, with no per-socket coroutine.
    """
    payload = text.encode() if isinstance(text, str) else text
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


class Transport(Protocol):
    """What a client needs of its connection (asyncio's and uvloop's transports both fit)."""

    def write(self, data: bytes) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class Client:
    """One socket. Frames go straight to its transport while it keeps up; once its buffer is
    past the high-water mark they wait in a bounded outbox (a newer results frame replaces an
    older one for the same poll) that a writer task drains, closing the socket when it cannot
    keep up."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: Transport,
        room_id: str,
        voter_id: str | None,
        is_host: bool,
        settings: Settings,
        address: str = "?",
    ) -> None:
        self.ws = ws
        self.address = address
        self.room_id = room_id
        self.voter_id = voter_id
        self.is_host = is_host
        self._transport = transport
        self._settings = settings
        self._results: dict[str, bytes] = {}  # poll id -> newest results frame not yet sent
        self._frames: deque[bytes] = deque()
        self._ready = False  # nothing goes out before the snapshot
        self._gone = False  # dropped as too slow
        self._writer: asyncio.Task[None] | None = None

    def caught_up(self) -> bool:
        """Nothing waits for this socket: it took everything it was sent."""
        return (
            not self._frames
            and not self._results
            and self._transport.get_write_buffer_size() < _HIGH_WATER
        )

    def send_first(self, frame: bytes) -> None:
        """The snapshot goes ahead of anything queued while it was being read."""
        self._frames.appendleft(frame)
        self._ready = True
        self._flush()

    def send(self, frame: bytes, poll_id: str | None = None) -> None:
        if self._gone:
            return
        if (
            self._ready
            and not self._frames
            and not self._results
            and self._transport.get_write_buffer_size() < _HIGH_WATER
        ):
            if not self._transport.is_closing():
                self._transport.write(frame)
            return
        if poll_id is not None:
            self._results[poll_id] = frame  # an unsent older frame for this poll is stale
        elif len(self._frames) < self._settings.ws_max_queue:
            self._frames.append(frame)
        else:
            self._frames.clear()
            self._results.clear()
            self._close_soon()
            return
        if self._ready:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    def _close_soon(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        self._writer = asyncio.get_running_loop().create_task(self._close_too_slow())

    async def _close_too_slow(self) -> None:
        """Tell a slow peer why (one that still reads gets 4008 and reconnects), but never wait
        on one that takes nothing: its close frame cannot be delivered either, and aiohttp's
        close() would wait for buffer room forever with the heartbeat already cancelled. Such a
        connection is cut, which frees its buffers and its place under the socket caps."""
        self._gone = True
        try:
            async with asyncio.timeout(self._settings.ws_send_timeout_s):
                await self.ws.close(code=CLOSE_TOO_SLOW, message=b"too slow; reconnect")
        except TimeoutError:
            self._transport.abort()

    def release(self) -> None:
        """After the socket's receive loop ended. asyncio's close() keeps a connection open until
        its unsent bytes drain, which never happens for a peer that stopped reading: one that
        missed its pong is cut at once; any other is given the send timeout to take what is
        left (a slow reader still gets its close frame), then cut."""
        if not self._transport.get_write_buffer_size():
            return
        if self.ws.close_code == WSCloseCode.ABNORMAL_CLOSURE and not self._gone:
            self._transport.abort()
        else:
            asyncio.get_running_loop().call_later(
                self._settings.ws_send_timeout_s, self._transport.abort
            )

    async def _drain(self) -> None:
        blocked_since: float | None = None
        while self._frames or self._results:
            if self._transport.is_closing():
                return
            if self._transport.get_write_buffer_size() >= _HIGH_WATER:
                now = time.monotonic()
                blocked_since = blocked_since or now
                if now - blocked_since > self._settings.ws_send_timeout_s:
                    # A peer that takes nothing for this long is gone or hopeless.
                    await self._close_too_slow()
                    return
                await asyncio.sleep(0.02)
                continue
            blocked_since = None
            if self._frames:
                self._transport.write(self._frames.popleft())
            else:
                self._transport.write(self._results.pop(next(iter(self._results))))

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer


class Broadcaster:
    def __init__(
        self,
        settings: Settings,
        rooms: Rooms,
        catalog: Catalog,
        depth: Callable[[], int],
        latency: LatencyWindow,
    ) -> None:
        self._settings = settings
        self._rooms = rooms
        self._catalog = catalog
        self._depth = depth
        self._latency = latency
        self.clients: dict[str, set[Client]] = {}  # room id -> its sockets
        self.voters: dict[str, set[Client]] = {}  # voter id -> their sockets
        self.per_address: Counter[str] = Counter()  # client address -> its sockets
        self.count = 0
        # Microseconds since the epoch at start: a restarted server's seq still only grows.
        self.seq = time.time_ns() // 1000
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._votes: dict[str, deque[float]] = {}  # room id -> times of recent votes
        # In a venue: the other boxes as this box sees them (app.py sets it), and what the
        # screens were last told of them.
        self.venue: Callable[[], dict[str, Any]] | None = None
        self._venue_told: dict[str, Any] | None = None

    # -- sockets -------------------------------------------------------------------------

    def add(self, client: Client) -> None:
        self.clients.setdefault(client.room_id, set()).add(client)
        if client.voter_id:
            self.voters.setdefault(client.voter_id, set()).add(client)
        self.per_address[client.address] += 1
        self.count += 1

    def remove(self, client: Client) -> None:
        room = self.clients.get(client.room_id)
        if room is not None:
            room.discard(client)
            if not room:
                del self.clients[client.room_id]
        if client.voter_id and client.voter_id in self.voters:
            self.voters[client.voter_id].discard(client)
            if not self.voters[client.voter_id]:
                del self.voters[client.voter_id]
        self.per_address[client.address] -= 1
        if self.per_address[client.address] <= 0:
            del self.per_address[client.address]
        self.count -= 1

    def online_voters(self, room_id: str) -> list[str]:
        return sorted({c.voter_id for c in self.clients.get(room_id, ()) if c.voter_id})

    def push_notification(self, voter_id: str, notification: answers.Notification) -> None:
        frame = text_frame(json.dumps({"type": "notification", "notification": notification}))
        for client in self.voters.get(voter_id, ()):
            client.send(frame)

    async def close_all(self) -> None:
        sockets = [c.ws for room in self.clients.values() for c in room]
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                for ws in sockets
            ),
            return_exceptions=True,
        )

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def snapshot(self, room_id: str, is_host: bool) -> bytes:
        """The room, its polls and their results. Its seq is taken before the reads, so every
        frame numbered after it carries results at least as new."""
        seq = self.seq
        room = await self._rooms.room(room_id, include_drafts=is_host)
        results = []
        for poll in room["polls"]:
            view = self._catalog.polls.get(poll["id"])
            if is_host or (view is not None and not view.results_hidden):
                results.append(await self._rooms.results(poll["id"], for_host=is_host))
        body: dict[str, Any] = {"type": "snapshot", "room": room, "results": results, "seq": seq}
        if self.venue is not None:
            body["venue"] = self.venue()
        return text_frame(json.dumps(body))

    # -- events from the hub -------------------------------------------------------------

    def votes_applied(self, touched: dict[tuple[str, str], int]) -> None:
        """A batch of votes is committed: {(room id, poll id): votes applied}. Their polls'
        results go out at the next tick, coalesced; the rooms' activity counts them."""
        if not touched:
            return
        self.seq += 1  # the rooms changed, watched or not: a later snapshot says so
        now = time.monotonic()
        for (room_id, poll_id), n in touched.items():
            recent = self._votes.setdefault(room_id, deque())
            recent.extend(repeat(now, n))
            while recent[0] < now - 60:  # watched or not, a room keeps only its last minute
                recent.popleft()
            self._dirty.add(poll_id)
        self._wake.set()

    async def on_event(self, event: events.Event) -> None:
        kind = event.type
        if isinstance(event, events.VoteCast):  # an outbox row written before votes were told
            self.votes_applied({(event.data.room_id, event.data.poll_id): 1})
        elif isinstance(
            event, events.PollCreated | events.PollOpened | events.PollClosed | events.PollUpdated
        ):
            poll_id, room_id = event.data.poll_id, event.data.room_id
            try:
                host_poll = await self._rooms.poll(poll_id, for_host=True)
            except NotFound:
                return  # deleted since; its own event follows
            public_poll = await self._rooms.poll(poll_id, for_host=False)
            seq = self.next_seq()
            frames = {
                is_host: text_frame(
                    json.dumps(
                        {
                            "type": "poll",
                            "poll_id": poll_id,
                            "status": poll["status"],
                            "poll": poll,
                            "seq": seq,
                        }
                    )
                )
                for is_host, poll in ((True, host_poll), (False, public_poll))
            }
            for client in self.clients.get(room_id, ()):
                if client.is_host or public_poll["status"] != "draft":
                    client.send(frames[client.is_host])
            if kind != events.POLL_CREATED:
                self._dirty.add(poll_id)  # the final (or first visible) results
                self._wake.set()
        elif isinstance(event, events.PollDeleted):
            frame = text_frame(
                json.dumps(
                    {
                        "type": "poll",
                        "poll_id": event.data.poll_id,
                        "status": "deleted",
                        "seq": self.next_seq(),
                    }
                )
            )
            for client in self.clients.get(event.data.room_id, ()):
                client.send(frame)
        elif isinstance(event, events.RoomUpdated | events.RoomDeleted):
            await self._room_changed(event.data.room_id, deleted=kind == events.ROOM_DELETED)
        elif isinstance(event, events.QuestionUpdated):
            self._dirty.add(event.data.poll_id)
            self._wake.set()

    async def _room_changed(self, room_id: str, *, deleted: bool) -> None:
        """A renamed or reordered room goes to its sockets whole; a deleted one says so."""
        clients = list(self.clients.get(room_id, ()))
        if not clients:
            return
        seq = self.next_seq()
        frames: dict[bool, bytes] = {}
        for is_host in (True, False):
            if deleted:
                body: dict[str, Any] = {"type": "room", "room_id": room_id, "deleted": True}
            else:
                body = {
                    "type": "room",
                    "room_id": room_id,
                    "room": await self._rooms.room(room_id, include_drafts=is_host),
                }
            frames[is_host] = text_frame(json.dumps({**body, "seq": seq}))
        for client in clients:
            client.send(frames[client.is_host])
        if deleted:  # nothing more will happen in this room
            await asyncio.gather(
                *(c.ws.close(code=WSCloseCode.OK, message=b"room deleted") for c in clients),
                return_exceptions=True,
            )

    async def run_results(self) -> None:
        """Every coalesce interval, one results frame per dirty poll for the screens and the
        consoles watching it. Attendees' phones (voters' sockets) get the latest frame at most
        once per `voter_results_ms`, at once when they have had none for that long: in a
        hall, phones are nearly every socket, and a frame to each of them twenty times a
        second was most of the server's work while the hall voted."""
        interval = self._settings.coalesce_ms / 1000
        phones_every = self._settings.voter_results_ms / 1000
        latest: dict[str, dict[bool, bytes]] = {}  # poll id -> its newest frames
        owed: dict[str, float] = {}  # poll id -> when its phones get its newest frame
        phones_next: dict[str, float] = {}  # poll id -> when its phones may get another
        while True:
            if owed:
                wait = min(owed.values()) - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, wait))
            else:
                await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            dirty, self._dirty = self._dirty, set()
            for poll_id in dirty:
                frames = await self._results_frames(poll_id)
                if frames is None:
                    continue
                latest[poll_id] = frames
                owed[poll_id] = max(now, phones_next.get(poll_id, 0.0))
                await self._fan_out(poll_id, frames, phones=False)
            for poll_id, due in list(owed.items()):
                if due > now:
                    continue
                del owed[poll_id]
                phones_next[poll_id] = now + phones_every
                await self._fan_out(poll_id, latest.pop(poll_id), phones=True)
            for poll_id in [p for p, t in phones_next.items() if t < now and p not in owed]:
                del phones_next[poll_id]  # quiet for a while: its next frame goes at once
            await asyncio.sleep(interval)

    async def _results_frames(self, poll_id: str) -> dict[bool, bytes] | None:
        """A poll's results frames (for attendees, and for hosts when they see more), or None
        when nobody watches it."""
        view = self._catalog.polls.get(poll_id)
        watchers = self.clients.get(view.room_id, ()) if view else ()
        if view is None or not watchers:
            return None
        # Hosts see a Q&A's pending questions and a quiz's right answers early.
        private = view.kind in ("qa", "quiz") and any(c.is_host for c in watchers)
        seq = self.next_seq()
        try:
            return {
                is_host: text_frame(
                    json.dumps(
                        {
                            "type": "results",
                            **await self._rooms.results(poll_id, for_host=is_host),
                            "seq": seq,
                        }
                    )
                )
                for is_host in ((False, True) if private else (False,))
            }
        except Exception:
            log.exception("could not read results of %s", poll_id)
            return None

    async def _fan_out(self, poll_id: str, frames: dict[bool, bytes], *, phones: bool) -> None:
        """A poll's frames to its room's phones, or to its other sockets; a few thousand
        sockets at a time, letting the event loop run in between."""
        view = self._catalog.polls.get(poll_id)
        if view is None:
            return
        hidden = view.results_hidden
        for i, client in enumerate(list(self.clients.get(view.room_id, ()))):
            if (client.voter_id is not None) != phones:
                continue
            if client.is_host or not hidden:
                client.send(frames.get(client.is_host, frames[False]), poll_id)
            if i % _FAN_OUT_CHUNK == _FAN_OUT_CHUNK - 1:
                await asyncio.sleep(0)

    def _tell_venue(self) -> None:
        """In a venue: every socket (screens, phones, hosts) learns when a box becomes
        unreachable or reachable again, and how many of its events wait."""
        if self.venue is None:
            return
        now = self.venue()
        if now == self._venue_told:
            return
        self._venue_told = now
        frame = text_frame(json.dumps({"type": "venue", **now}))
        for clients in self.clients.values():
            for client in clients:
                client.send(frame)

    async def run_activity(self) -> None:
        """Once a second, each room's counters to the host sockets watching it (and, in a
        venue, the other boxes' state to every socket when it changes)."""
        while True:
            await asyncio.sleep(self._settings.activity_interval_s)
            self._tell_venue()
            now = time.monotonic()
            for room_id, clients in list(self.clients.items()):
                hosts = [c for c in clients if c.is_host]
                votes = self._votes.get(room_id, deque())
                while votes and votes[0] < now - 60:
                    votes.popleft()
                if not hosts:
                    continue
                frame = text_frame(
                    json.dumps(
                        {
                            "type": "activity",
                            "room_id": room_id,
                            "participants_online": len({c.voter_id for c in clients if c.voter_id}),
                            "watchers": len(clients),
                            "votes_per_minute": len(votes),
                            "queue_depth": self._depth(),
                            "p99_ms": round(self._latency.p99() * 1000, 1),
                        }
                    )
                )
                for client in hosts:
                    client.send(frame)
