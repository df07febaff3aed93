"""GET /ws?room=<room id or code>: live results for screens, notifications for voters, the
activity feed for hosts. Who is calling: callers.identify (a voter token in ?token=, either
token in the Authorization header, the voter cookie; the console's session on /host/live)."""

from __future__ import annotations

import json
import logging
import time
from typing import cast

from aiohttp import WSMsgType, web

from opus.callers import identify, origin_matches
from opus.codes import normalize_code
from opus.errors import BadRequest, Forbidden, NotFound, OpusError, Unauthorized
from opus.identity import IdentityLimits
from opus.keys import ADDRESSES, BROADCASTER, DB, ROOMS, SETTINGS
from opus.live import CLOSE_FULL, CLOSE_TOO_MANY, Client, Transport, text_frame

log = logging.getLogger(__name__)

_MAX_INCOMING = 4096  # clients only send small control messages
_PONG = text_frame('{"type": "pong"}')
RESUME_INTERVAL_S = 1.0


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
    try:
        client.send_first(await broadcaster.snapshot(room_id, is_host))
        # The receive loop is what answers pings and notices a close.
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                kind = json.loads(message.data).get("type")
            except (ValueError, AttributeError):
                kind = None
            if kind == "ping":
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
