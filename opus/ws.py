"""GET /ws?room=<room id or code>: live results for screens, notifications for voters, the
activity feed for hosts. Who is calling: callers.identify (a voter token in ?token=, either
token in the Authorization header, the voter cookie; the console's session on /host/live)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import msgspec
from aiohttp import WSMsgType, web

from opus import bodies
from opus.auth import Voter
from opus.callers import Caller, identify, origin_matches
from opus.codes import normalize_code
from opus.errors import BadRequest, Forbidden, NotFound, OpusError, TooManyRequests, Unauthorized
from opus.identity import IdentityLimits
from opus.keys import ADDRESSES, BROADCASTER, DB, INGEST, METRICS, ROOMS, SETTINGS
from opus.live import CLOSE_FULL, CLOSE_TOO_MANY, Client, Transport, text_frame

log = logging.getLogger(__name__)

_MAX_INCOMING = 4096  # control messages and votes (a question is at most 280 characters)
_PONG = text_frame('{"type": "pong"}')
RESUME_INTERVAL_S = 1.0
VOTES_IN_FLIGHT = 32  # votes one socket may have waiting for their commit


class _Incoming(msgspec.Struct):
    """What every message from a page has: its type, and for a vote what its answer echoes
    (read leniently here: a vote with a wrong field is refused with the API's error, and the
    refusal still names the vote)."""

    type: Any = None
    event_id: Any = None
    poll_id: Any = None


_incoming = msgspec.json.Decoder(_Incoming).decode
_answer = msgspec.json.Encoder().encode


def _echo(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= 64 else None


async def _vote(
    app: web.Application, client: Client, voter: Voter, head: _Incoming, raw: bytes
) -> None:
    """One vote from the socket: the API's checks and durable commit (ingest.py), then its
    answer on the same socket: `vote_accepted` once durable, or `vote_refused` with the API's
    status, error code and message."""
    event_id, poll_id = _echo(head.event_id), _echo(head.poll_id)
    answer: dict[str, Any]
    try:
        body = bodies.decode(raw, bodies.SocketVote)
        event_id = await app[INGEST].cast(voter, body.poll_id, body)
        app[METRICS].socket_votes_accepted.inc()
        answer = {"type": "vote_accepted", "event_id": event_id, "poll_id": poll_id}
    except OpusError as exc:
        answer = _refusal(exc, event_id, poll_id)
    except Exception:  # what the middleware answers a request with 500 (views/middleware.py)
        log.exception("unexpected error on a socket vote")
        failed = OpusError("Something went wrong on the server; nothing was lost, try again.")
        answer = _refusal(failed, event_id, poll_id)
    client.send(text_frame(_answer(answer)))


def _refusal(exc: OpusError, event_id: str | None, poll_id: str | None) -> dict[str, Any]:
    answer = {
        "type": "vote_refused",
        "event_id": event_id,
        "poll_id": poll_id,
        "status": exc.status,
        "error": {"code": exc.code, "message": exc.message},
    }
    if exc.retry_after is not None:
        answer["retry_after"] = exc.retry_after
    return answer


def _who_votes(request: web.Request, caller: Caller) -> Voter | OpusError:
    """The voter whose votes this socket may carry, or why it may carry none (what the API
    answers a vote without a voter's token). A socket that has only the cookie must come from
    this server's own page: another site's page cannot vote in the attendee's name."""
    if caller.voter is not None:
        if caller.via == "cookie" and origin_matches(request) is False:
            return Forbidden(
                "This request came from another site's page.", code="cross_site_request"
            )
        return caller.voter
    if caller.host:
        return Forbidden("This call is for attendees; join the room to get a voter token.")
    return Unauthorized("Join the room first: this call needs a voter token.")


async def _room_id(request: web.Request, ref: str) -> str:
    db = request.app[DB]
    row = await db.fetchone("SELECT id FROM rooms WHERE id = ?", (ref,))
    if row is None:
        row = await db.fetchone("SELECT id FROM rooms WHERE code = ?", (normalize_code(ref),))
    if row is None:
        raise NotFound("No room has this id or code.", code="room_not_found")
    return str(row["id"])


async def websocket(request: web.Request) -> web.WebSocketResponse:
    return await open_socket(request)


async def open_socket(request: web.Request, *, session: bool = False) -> web.WebSocketResponse:
    """A socket on the room; `session`: the host's console session makes a host socket (the
    console's /host/live, where the browser holds a session, not the admin token)."""
    app = request.app
    settings, broadcaster = app[SETTINGS], app[BROADCASTER]
    ref = request.query.get("room", "").strip()
    if not ref:
        raise BadRequest("Say which room: /ws?room=<room id or code>.", code="room_required")
    room_id = await _room_id(request, ref[:64])

    caller = identify(request, query=True, session=session)
    if caller.bad_token:
        raise Unauthorized("The token is not valid; join the room again.", code="bad_token")
    is_host, voter = caller.host, caller.voter
    if voter is not None and voter.room_id != room_id:
        raise Forbidden("You joined another room.", code="wrong_room")

    ws = web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat_s,
        compress=False,  # a compressed frame cannot be shared between sockets, and costs RSS
        max_msg_size=_MAX_INCOMING,
    )
    transport = request.transport
    address = app[ADDRESSES].of(request)
    await ws.prepare(request)
    if broadcaster.count >= settings.max_sockets:
        await ws.close(code=CLOSE_FULL, message=b"server is full; try again in a moment")
        return ws
    cap = settings.max_sockets_per_address
    if cap and IdentityLimits.limited(address) and broadcaster.per_address[address] >= cap:
        # One laptop must not take the places of a hall's phones.
        await ws.close(code=CLOSE_TOO_MANY, message=b"too many sockets from this address")
        return ws

    if transport is None:  # the peer left during the handshake
        return ws
    voter_id = voter.voter_id if voter else None
    client = Client(ws, cast(Transport, transport), room_id, voter_id, is_host, settings, address)
    broadcaster.add(client)
    last_resume = time.monotonic()
    # The projector's keys move everyone (presenter mode) when it holds the host's session,
    # from this server's own page: another site's page cannot drive the room.
    steers = is_host and origin_matches(request) is not False
    votes_as = _who_votes(request, caller)
    voting: set[asyncio.Task[None]] = set()
    try:
        client.send_first(await broadcaster.snapshot(room_id, is_host))
        # The receive loop is what answers pings and notices a close.
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            raw = message.data.encode()
            try:
                head = _incoming(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not a JSON object: no page sends that
            kind = head.type
            if kind == "vote":
                refusal: OpusError | None = None
                if isinstance(votes_as, OpusError):
                    refusal = votes_as
                elif len(voting) >= VOTES_IN_FLIGHT:
                    refusal = TooManyRequests(
                        "Too many votes are waiting on this socket; try again.", retry_after=1
                    )
                if refusal is not None:
                    answer = _refusal(refusal, _echo(head.event_id), _echo(head.poll_id))
                    client.send(text_frame(_answer(answer)))
                    continue
                # Each vote waits for its group commit on its own: the loop goes on reading
                # (pings, more votes). A vote whose socket closes before its answer is still
                # committed or refused; the page sends it again, and it counts once.
                task = asyncio.create_task(_vote(app, client, cast(Voter, votes_as), head, raw))
                voting.add(task)
                task.add_done_callback(voting.discard)
            elif kind == "ping":
                client.send(_PONG)
            elif kind == "resume":
                # A snapshot is the costliest frame: one every RESUME_INTERVAL_S at most, and
                # none while this client has not taken what it was sent. A page resumes
                # after a reconnect, and a reconnect already starts with a snapshot.
                now = time.monotonic()
                if now - last_resume < RESUME_INTERVAL_S or not client.caught_up():
                    continue
                last_resume = now
                client.send_first(await broadcaster.snapshot(room_id, is_host))
            elif kind in ("next", "previous") and steers:
                try:
                    await app[ROOMS].step(room_id, 1 if kind == "next" else -1)
                except OpusError:
                    pass  # no poll that way: the screen stays where it is
    finally:
        broadcaster.remove(client)
        await client.stop()
        client.release()
    return ws
