"""JSON API handlers: thin (parse, call, answer). Errors are raised, never answered here."""

from __future__ import annotations

import hmac
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from opus import bodies, export, outbox
from opus.auth import Voter, pseudonym
from opus.callers import VOTER_COOKIE, VOTER_COOKIE_S, identify, origin_matches
from opus.errors import BadRequest, Forbidden, NotFound, TooLarge, TooManyRequests, Unauthorized
from opus.keys import (
    ADDRESSES,
    CATALOG,
    DB,
    INGEST,
    LEDGER,
    NOTIFIER,
    REPLICATION,
    ROOMS,
    SETTINGS,
    SIGNER,
    VENUE,
)
from opus.rooms import MODERATION_PAGE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = web.RouteTableDef()
# The handlers that take a body, and its declaration: the OpenAPI document reads them here.
BODIES: dict[Handler, type[bodies.Body]] = {}


def accepts[H: Handler](cls: type[bodies.Body]) -> Callable[[H], H]:
    """Declare the body a route takes (read it with `read_body`)."""

    def register(handler: H) -> H:
        BODIES[handler] = cls
        return handler

    return register


async def read_body[B: bodies.Body](request: web.Request, cls: type[B]) -> B:
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"The request body is larger than {limit} bytes.")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"The request body is larger than {limit} bytes.") from None
    return bodies.decode(raw, cls)


def require_admin(request: web.Request) -> None:
    caller = identify(request)
    if caller.host:
        return
    if caller.via != "header":
        raise Unauthorized("This call needs the admin token (Authorization: Bearer ...).")
    if caller.voter is not None:
        raise Forbidden("This call is for the host; an attendee token cannot make it.")
    raise Unauthorized("The admin token is wrong.", code="bad_token")


def is_admin(request: web.Request) -> bool:
    return identify(request).host


def require_voter(request: web.Request) -> Voter:
    caller = identify(request)
    if (
        caller.via == "cookie"
        and request.method not in ("GET", "HEAD")
        and request.content_type != "application/json"
        and origin_matches(request) is not True
    ):
        # A browser sends the cookie with another site's form too: a write on the strength of
        # the cookie must be JSON (a form cannot send that without the site's leave) or come
        # from this site's own page.
        raise Forbidden("This request came from another site's page.", code="cross_site_request")
    if caller.voter is not None:
        return caller.voter
    if not caller.via:
        raise Unauthorized("Join the room first: this call needs a voter token.")
    if caller.host:
        raise Forbidden("This call is for attendees; join the room to get a voter token.")
    raise Unauthorized("The voter token is not valid; join the room again.", code="bad_token")


# Wrong codes (or passcodes) one address may send in a minute. Generous, since a whole hall may
# share one address behind the venue's NAT; with 10^11 codes this still makes guessing hopeless.
JOIN_MISSES_PER_MINUTE = 300


class JoinThrottle:
    """Slows down guessing of room codes: a few wrong codes a minute per address."""

    def __init__(self, allowed: int = JOIN_MISSES_PER_MINUTE, window_s: float = 60.0) -> None:
        self._allowed = allowed
        self._window = window_s
        self._misses: dict[str, deque[float]] = {}

    def check(self, address: str) -> None:
        misses = self._misses.get(address)
        if not misses:
            return
        now = time.monotonic()
        while misses and misses[0] < now - self._window:
            misses.popleft()
        if len(misses) >= self._allowed:
            retry = int(misses[0] + self._window - now) + 1
            raise TooManyRequests("Too many wrong codes; wait a moment.", retry_after=retry)

    def miss(self, address: str) -> None:
        if len(self._misses) > 10_000:
            self._misses.clear()
        self._misses.setdefault(address, deque()).append(time.monotonic())


_throttle_key = web.AppKey("join_throttle", JoinThrottle)


# -- host ---------------------------------------------------------------------------------


@routes.post("/api/v1/rooms")
@accepts(bodies.CreateRoom)
async def create_room(request: web.Request) -> web.Response:
    require_admin(request)
    room = await request.app[ROOMS].create_room(await read_body(request, bodies.CreateRoom))
    return web.json_response(room, status=201)


@routes.get("/api/v1/rooms")
async def list_rooms(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response({"rooms": await request.app[ROOMS].list_rooms()})


@routes.patch("/api/v1/rooms/{room_id}")
@accepts(bodies.RenameRoom)
async def rename_room(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, bodies.RenameRoom)
    return web.json_response(
        await request.app[ROOMS].update_room(request.match_info["room_id"], body)
    )


@routes.delete("/api/v1/rooms/{room_id}")
async def delete_room(request: web.Request) -> web.Response:
    require_admin(request)
    await request.app[ROOMS].delete_room(request.match_info["room_id"])
    return web.json_response({"id": request.match_info["room_id"], "deleted": True})


@routes.post("/api/v1/rooms/{room_id}/duplicate")
@accepts(bodies.DuplicateRoom)
async def duplicate_room(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, bodies.DuplicateRoom)
    room = await request.app[ROOMS].duplicate_room(request.match_info["room_id"], body)
    return web.json_response(room, status=201)


@routes.put("/api/v1/rooms/{room_id}/order")
@accepts(bodies.PollOrder)
async def reorder_polls(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, bodies.PollOrder)
    room = await request.app[ROOMS].reorder_polls(request.match_info["room_id"], body.poll_ids)
    return web.json_response(room)


@routes.get("/api/v1/rooms/{room_id}/leaderboard")
async def leaderboard(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    if not is_admin(request) and require_voter(request).room_id != room_id:
        raise Forbidden("You joined another room.", code="wrong_room")
    return web.json_response(
        {"room_id": room_id, "leaderboard": await request.app[ROOMS].leaderboard(room_id)}
    )


@routes.get("/api/v1/rooms/{room_id}")
async def get_room(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    if is_admin(request):
        return web.json_response(await request.app[ROOMS].room(room_id, include_drafts=True))
    voter = require_voter(request)
    if voter.room_id != room_id:
        raise Forbidden("You joined another room.", code="wrong_room")
    return web.json_response(await request.app[ROOMS].room(room_id, include_drafts=False))


@routes.post("/api/v1/rooms/{room_id}/polls")
@accepts(bodies.CreatePoll)
async def create_poll(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, bodies.CreatePoll)
    poll = await request.app[ROOMS].create_poll(request.match_info["room_id"], body)
    return web.json_response(poll, status=201)


@routes.get("/api/v1/polls/{poll_id}")
async def get_poll(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[ROOMS].poll(request.match_info["poll_id"]))


@routes.patch("/api/v1/polls/{poll_id}")
@accepts(bodies.UpdatePoll)
async def update_poll(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, bodies.UpdatePoll)
    return web.json_response(
        await request.app[ROOMS].update_poll(request.match_info["poll_id"], body)
    )


@routes.delete("/api/v1/polls/{poll_id}")
async def delete_poll(request: web.Request) -> web.Response:
    require_admin(request)
    await request.app[ROOMS].delete_poll(request.match_info["poll_id"])
    return web.json_response({"id": request.match_info["poll_id"], "deleted": True})


@routes.get("/api/v1/polls/{poll_id}/questions")
async def poll_questions(request: web.Request) -> web.Response:
    require_admin(request)
    poll_id = request.match_info["poll_id"]
    limit = _count(request, "limit", MODERATION_PAGE, MODERATION_PAGE)
    offset = _count(request, "offset", 0, 1 << 31)
    rooms = request.app[ROOMS]
    await rooms.poll(poll_id)  # 404 for an unknown poll
    return web.json_response(
        {
            "poll_id": poll_id,
            "questions": await rooms.questions(poll_id, limit, offset),
            "total": await rooms.question_count(poll_id),
            "limit": limit,
            "offset": offset,
        }
    )


def _count(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > most:
        raise BadRequest(f"'{name}' must be a whole number from 0 to {most}.", code="invalid_field")
    return int(raw)


@routes.patch("/api/v1/questions/{question_id}")
@accepts(bodies.Moderate)
async def moderate_question(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, bodies.Moderate)
    return web.json_response(
        await request.app[ROOMS].moderate(request.match_info["question_id"], body)
    )


@routes.post("/api/v1/polls/{poll_id}/open")
async def open_poll(request: web.Request) -> web.Response:
    require_admin(request)
    poll = await request.app[ROOMS].set_status(request.match_info["poll_id"], "open")
    return web.json_response(poll)


@routes.post("/api/v1/polls/{poll_id}/close")
async def close_poll(request: web.Request) -> web.Response:
    require_admin(request)
    poll = await request.app[ROOMS].set_status(request.match_info["poll_id"], "closed")
    return web.json_response(poll)


@routes.post("/api/v1/polls/{poll_id}/reopen")
async def reopen_poll(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[ROOMS].reopen(request.match_info["poll_id"]))


@routes.post("/api/v1/polls/{poll_id}/show")
async def show_poll(request: web.Request) -> web.Response:
    require_admin(request)
    room = await request.app[ROOMS].show(request.match_info["poll_id"])
    return web.json_response(room)


@routes.post("/api/v1/rooms/{room_id}/next")
async def show_next(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[ROOMS].step(request.match_info["room_id"], 1))


@routes.post("/api/v1/rooms/{room_id}/previous")
async def show_previous(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[ROOMS].step(request.match_info["room_id"], -1))


@routes.post("/api/v1/polls/{poll_id}/duplicate")
async def duplicate_poll(request: web.Request) -> web.Response:
    require_admin(request)
    poll = await request.app[ROOMS].duplicate_poll(request.match_info["poll_id"])
    return web.json_response(poll, status=201)


@routes.get("/api/v1/polls/{poll_id}/export")
async def export_poll(request: web.Request) -> web.Response:
    require_admin(request)
    fmt = export.check_format(request.query.get("format", "json"))
    poll_id = request.match_info["poll_id"]
    body = await export.poll_export(request.app[ROOMS], poll_id)
    return _attachment(export.render(body, fmt), fmt, f"poll-{poll_id}")


@routes.get("/api/v1/rooms/{room_id}/export")
async def export_room(request: web.Request) -> web.Response:
    require_admin(request)
    fmt = export.check_format(request.query.get("format", "json"))
    room_id = request.match_info["room_id"]
    body = await export.room_export(request.app[ROOMS], room_id)
    return _attachment(export.render(body, fmt), fmt, f"room-{room_id}")


def _attachment(text: str, fmt: str, name: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="application/json" if fmt == "json" else "text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


# -- attendees ----------------------------------------------------------------------------


@routes.post("/api/v1/join")
@accepts(bodies.Join)
async def join(request: web.Request) -> web.Response:
    throttle = request.app[_throttle_key]
    address = request.app[ADDRESSES].of(request)
    throttle.check(address)
    body = await read_body(request, bodies.Join)
    code = body.code
    if not code.strip():
        raise BadRequest(
            "'code' must be the room's code, as shown on the screen.", code="invalid_field"
        )
    known = identify(request).voter
    try:
        voter = await request.app[ROOMS].join(
            code[:64], known, address=address, passcode=body.passcode
        )
    except (NotFound, Forbidden) as exc:
        if exc.code in ("room_not_found", "wrong_passcode"):
            throttle.miss(address)  # guessing codes or passcodes
        raise
    token = request.app[SIGNER].voter_token(voter)
    response = web.json_response(
        {
            "voter_id": voter.voter_id,
            "voter_token": token,
            "room_id": voter.room_id,
            "name": pseudonym(voter.voter_id),
        },
        status=201,
    )
    response.set_cookie(VOTER_COOKIE, token, max_age=VOTER_COOKIE_S, httponly=True, samesite="Lax")
    return response


@routes.post("/api/v1/polls/{poll_id}/votes")
@accepts(bodies.CastVote)
async def cast_vote(request: web.Request) -> web.Response:
    voter = require_voter(request)
    body = await read_body(request, bodies.CastVote)
    event_id = await request.app[INGEST].cast(voter, request.match_info["poll_id"], body)
    return web.Response(
        text=f'{{"event_id": "{event_id}", "status": "accepted"}}',
        status=202,
        content_type="application/json",
    )


@routes.get("/api/v1/votes/{event_id}")
async def vote_receipt(request: web.Request) -> web.Response:
    voter = require_voter(request)
    try:
        event_id = str(uuid.UUID(request.match_info["event_id"]))
    except ValueError:
        raise NotFound("No vote of yours has this event_id.", code="vote_not_found") from None
    ledger = request.app[LEDGER]
    entry = ledger.by_event.get(event_id)
    if entry is not None and entry.voter_id != voter.voter_id:
        raise NotFound("No vote of yours has this event_id.", code="vote_not_found")
    # Pending is checked first: a worker commits the receipt before it leaves `pending`.
    if event_id in ledger.pending:
        return web.json_response({"event_id": event_id, "status": "queued"})
    rows = await request.app[ROOMS].receipts([event_id])
    if entry is None and (not rows or rows[0]["voter_id"] != voter.voter_id):
        # Not in the ledger, nor in SQLite as this voter's (a closed poll's votes are there).
        raise NotFound("No vote of yours has this event_id.", code="vote_not_found")
    if not rows:
        return web.json_response({"event_id": event_id, "status": "queued"})
    body = {"event_id": event_id, "status": rows[0]["status"]}
    if rows[0]["reason"]:
        body["reason"] = rows[0]["reason"]
    return web.json_response(body)


@routes.get("/api/v1/polls/{poll_id}/results")
async def results(request: web.Request) -> web.Response:
    poll_id = request.match_info["poll_id"]
    poll = request.app[CATALOG].polls.get(poll_id)
    host = is_admin(request)
    if not host:
        if poll is None or poll.status == "draft":
            raise NotFound("No poll has this id.", code="poll_not_found")
        if poll.results_hidden:
            raise Forbidden(
                "The host shows these results when the poll closes.", code="results_hidden"
            )
    return web.json_response(await request.app[ROOMS].results(poll_id, for_host=host))


@routes.get("/api/v1/venue")
async def venue(request: web.Request) -> web.Response:
    require_admin(request)
    replication = request.app.get(REPLICATION)
    if replication is None:
        raise NotFound(
            "This box is not part of a venue (opus serve --venue FILE --box NAME).",
            code="not_a_venue",
        )
    status = replication.status
    return web.json_response(
        {
            "box": status.box,
            "peers": [
                {
                    "box": p.box,
                    "reachable": p.reachable,
                    "behind": p.behind,
                    "clock_ahead_s": p.clock_ahead_s,
                }
                for p in status.peers.values()
            ],
        }
    )


@routes.get("/api/v1/venue/log")
async def venue_log(request: web.Request) -> web.Response:
    """A page of this box's log, for another box of the venue catching up (a stream trimmed
    past what it had); MessagePack, as the streams carry events."""
    venue = request.app.get(VENUE)
    if venue is None:
        raise NotFound(
            "This box is not part of a venue (opus serve --venue FILE --box NAME).",
            code="not_a_venue",
        )
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {venue.log_token}".encode()):
        raise Unauthorized("This call is for the venue's boxes.", code="bad_token")
    after = _count(request, "after", 0, 2**62)
    limit = max(1, _count(request, "limit", 1000, 5000))
    rows = await outbox.log_page(request.app[DB], after, limit)
    page = {
        "events": [envelope for _, envelope in rows],
        "next": rows[-1][0] if len(rows) == limit else None,
    }
    return web.Response(body=msgspec.msgpack.encode(page), content_type="application/msgpack")


@routes.get("/api/v1/notifications")
async def notifications(request: web.Request) -> web.Response:
    voter = require_voter(request)
    return web.json_response(await request.app[NOTIFIER].inbox(voter.voter_id))


@routes.post("/api/v1/notifications/read-all")
async def read_all_notifications(request: web.Request) -> web.Response:
    voter = require_voter(request)
    changed = await request.app[NOTIFIER].mark_read(voter.voter_id, None)
    return web.json_response({"marked_read": changed})


@routes.post("/api/v1/notifications/{notification_id}/read")
async def read_notification(request: web.Request) -> web.Response:
    voter = require_voter(request)
    raw = request.match_info["notification_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):  # SQLite's integer range
        raise NotFound("You have no notification with this id.", code="notification_not_found")
    await request.app[NOTIFIER].mark_read(voter.voter_id, int(raw))
    return web.json_response({"id": int(raw), "is_read": True})


def setup(app: web.Application) -> None:
    app[_throttle_key] = JoinThrottle()
    app.router.add_routes(routes)
