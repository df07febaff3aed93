"""The host console (`/host`): log in with the admin token, then rooms, polls, moderation,
exports and the live activity feed. Every page needs the host's session cookie; every POST
its CSRF token (see kit.py)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from opus import answers, bodies, export, i18n, kinds, ws
from opus.auth import same_token
from opus.callers import HOST_COOKIE, SESSION_S, end_session, new_session
from opus.errors import BadRequest, NotFound, OpusError, Unprocessable
from opus.i18n import N_
from opus.keys import ADMIN_TOKEN, IDENTITIES, ROOMS
from opus.rooms import MODERATION_PAGE
from opus.views import api
from opus.views.kit import (
    Form,
    field,
    gettext,
    is_host,
    join_base,
    not_found,
    page_language,
    read_form,
    redirect,
    refused,
    render,
    same_origin,
)

routes = web.RouteTableDef()
KIND_NAMES = {
    "single": N_("Single choice"),
    "multiple": N_("Multiple choice"),
    "rating": N_("Rating"),
    "text": N_("Word cloud"),
    "qa": N_("Questions (Q&A)"),
    "quiz": N_("Quiz"),
}
# A poll's status as the host reads it (the code stays in data attributes and CSS classes).
STATUS_NAMES = {"draft": N_("draft"), "open": N_("open"), "closed": N_("closed")}
_SESSION_ENDED = N_("Your session ended: log in again.")
_BAD_TIME_LIMIT = N_("The time limit is a whole number of seconds.")
_NOTHING_TO_CHANGE = N_("Nothing to change.")
_login_throttle = web.AppKey("login_throttle", api.JoinThrottle)

Action = Callable[[web.Request, Form], Awaitable[web.StreamResponse]]


def _safe_back(raw: str, default: str) -> str:
    """Only a path on this site under /host: never an open redirect, and nothing a Location
    header cannot carry (control characters)."""
    if (
        raw.startswith("/host")
        and not raw.startswith("//")
        and "\\" not in raw
        and raw.isprintable()
        and raw.isascii()
    ):
        return raw
    return default


# The domain's refusals a host can meet in the console, by their code, in the catalogs (the
# API answers them in English, its clients read the code).
REFUSALS = {
    "invalid_transition": N_(
        "That cannot be done to this poll now: only a draft opens, only an open poll closes,"
        " only a closed poll reopens."
    ),
    "poll_not_draft": N_("Only a draft poll can change its question, kind or options."),
    "no_next_poll": N_("There is no poll after the one shown."),
    "no_previous_poll": N_("There is no poll before the one shown."),
    "option_count": N_("A poll has %(low)d to %(high)d options."),
    "duplicate_option": N_("Two options have the same label."),
    "invalid_time_limit": N_("The time limit is between %(low)d and %(high)d seconds."),
    "invalid_scale": N_("A rating's scale is 5 or 10."),
    "invalid_correct": N_("A quiz needs at least one correct option among its options."),
    "too_long": N_("A text is longer than allowed: shorten it."),
    "room_not_found": N_("This room no longer exists."),
    "poll_not_found": N_("This poll no longer exists."),
    "question_not_found": N_("This question no longer exists."),
    "invalid_order": N_("List every poll of the room exactly once."),
}


def said(request: web.Request, exc: OpusError) -> str:
    """A refusal as the host reads it, in the console's language: this module's own messages
    and the domain's usual ones (REFUSALS) are in the catalogs; a rare one stays in the API's
    English."""
    known = REFUSALS.get(exc.code or "")
    if known is None:
        return gettext(request, exc.message)
    low, high = {
        "option_count": (kinds.MIN_OPTIONS, kinds.MAX_OPTIONS),
        "invalid_time_limit": kinds.TIME_LIMIT_RANGE,
    }.get(exc.code or "", (0, 0))
    return gettext(request, known, low=low, high=high) if "%(" in known else gettext(request, known)


def console(request: web.Request, template: str, **context: Any) -> web.Response:
    """A console page in the host's language (their `?lang=` choice or their browser's), not
    the room's: the room's language is for its screen and its phones."""
    return render(request, template, lang=page_language(request), **context)


def labels(request: web.Request, names: dict[str, str]) -> dict[str, str]:
    """A dict of marked labels (KIND_NAMES, STATUS_NAMES), translated for this page."""
    return {key: gettext(request, name) for key, name in names.items()}


def page(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A console page: the host's session, or off to the login page."""

    @wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not is_host(request):
            return redirect(f"/host/login?next={quote(request.path_qs)}")
        try:
            return await handler(request)
        except (NotFound, BadRequest) as exc:
            return not_found(request, said(request, exc))

    return wrapped


def action(handler: Action) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A console form: the session and the CSRF token, then back to the page it came from,
    with the domain's error as the message when it refused."""

    @wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not is_host(request):
            return redirect("/host/login", gettext(request, _SESSION_ENDED), error=True)
        form = await read_form(request)
        if form is None:
            return refused(request)
        try:
            return await handler(request, form)
        except OpusError as exc:
            back = _safe_back(field(form, "back"), "/host")
            return redirect(back, said(request, exc), error=True)

    return wrapped


# -- session ------------------------------------------------------------------------------


@routes.get("/host/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    following = _safe_back(request.query.get("next", ""), "/host")
    if is_host(request):
        return redirect(following)
    return console(request, "host/login.html", title=gettext(request, "Host login"), next=following)


@routes.post("/host/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    if form is None:
        return refused(request)
    throttle = request.app[_login_throttle]
    address = request.remote or "?"
    throttle.check(address)
    following = _safe_back(field(form, "next"), "/host")
    if not same_token(field(form, "token"), request.app[ADMIN_TOKEN]):
        throttle.miss(address)
        return console(
            request,
            "host/login.html",
            status=401,
            title=gettext(request, "Host login"),
            next=following,
            here=str(URL("/host/login").with_query(next=following)),
            error=gettext(request, "This is not the admin token."),
        )
    response = redirect(following)
    response.set_cookie(
        HOST_COOKIE,
        new_session(request),
        max_age=SESSION_S,
        httponly=True,
        samesite="Lax",
        path="/",
    )
    return response


@routes.post("/host/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    if await read_form(request) is None:
        return refused(request)
    await end_session(request)
    response = redirect("/host/login", gettext(request, "Logged out."))
    response.del_cookie(HOST_COOKIE, path="/")
    return response


# -- rooms --------------------------------------------------------------------------------


@routes.get("/host")
@page
async def index(request: web.Request) -> web.StreamResponse:
    rooms = await request.app[ROOMS].list_rooms()
    return console(request, "host/index.html", title=gettext(request, "Rooms"), rooms=rooms)


@routes.post("/host/rooms")
@action
async def create_room(request: web.Request, form: Form) -> web.StreamResponse:
    # The console's rooms are presenter-paced; the API's stay self-paced unless asked.
    room = await request.app[ROOMS].create_room(
        bodies.of(bodies.CreateRoom, {"title": field(form, "title"), "pace": "presenter"})
    )
    created = gettext(request, "Room “%(title)s” created.", title=room["title"])
    return redirect(f"/host/rooms/{room['id']}", created)


async def _room_page(
    request: web.Request,
    room_id: str,
    *,
    status: int = 200,
    draft: dict[str, Any] | None = None,
    error: str | None = None,
) -> web.Response:
    rooms = request.app[ROOMS]
    room = await rooms.room(room_id, include_drafts=True)
    polls = []
    for poll in room["polls"]:
        questions, total, statuses = None, 0, {}
        if poll["kind"] == "qa":
            questions = await rooms.questions(poll["id"])
            total = await rooms.question_count(poll["id"])
            statuses = await rooms.question_statuses(poll["id"])
        polls.append(
            {
                "poll": poll,
                "results": await rooms.results(poll["id"], for_host=True),
                "questions": questions,
                "question_total": total,
                "question_statuses": statuses,
            }
        )
    base = join_base(request)
    identities = request.app[IDENTITIES]
    return console(
        request,
        "host/room.html",
        status=status,
        title=room["title"],
        here=f"/host/rooms/{room_id}",  # the language links, from a form shown again too
        room=room,
        polls=polls,
        kinds=labels(request, KIND_NAMES),
        statuses=labels(request, STATUS_NAMES),
        draft=draft or {"kind": "single"},
        error=error,
        joined_total=identities.total(room_id),
        question_page=MODERATION_PAGE,
        busiest=[(a, n) for a, n in identities.busiest(room_id) if n > 1],
        join_url=f"{base}/j/{room['code']}",
        boot={"room_id": room["id"], "live": f"/host/live?room={room['id']}"},
    )


@routes.get("/host/rooms/{room_id}")
@page
async def room_page(request: web.Request) -> web.StreamResponse:
    return await _room_page(request, request.match_info["room_id"])


@routes.post("/host/rooms/{room_id}/rename")
@action
async def rename_room(request: web.Request, form: Form) -> web.StreamResponse:
    room_id = request.match_info["room_id"]
    await request.app[ROOMS].update_room(
        room_id, bodies.of(bodies.RenameRoom, {"title": field(form, "title")})
    )
    return redirect(f"/host/rooms/{room_id}", gettext(request, "Renamed."))


@routes.post("/host/rooms/{room_id}/passcode")
@action
async def set_passcode(request: web.Request, form: Form) -> web.StreamResponse:
    room_id = request.match_info["room_id"]
    passcode = field(form, "passcode")
    await request.app[ROOMS].update_room(
        room_id,
        bodies.RenameRoom(
            passcode=passcode or None, show_passcode=field(form, "show_passcode") == "on"
        ),
    )
    if passcode:
        now = gettext(request, "Joining needs the passcode now.")
    else:
        now = gettext(request, "Joining needs only the code now.")
    return redirect(f"/host/rooms/{room_id}", now)


@routes.post("/host/rooms/{room_id}/pace")
@action
async def set_pace(request: web.Request, form: Form) -> web.StreamResponse:
    room_id = request.match_info["room_id"]
    pace = field(form, "pace")
    await request.app[ROOMS].update_room(room_id, bodies.of(bodies.RenameRoom, {"pace": pace}))
    if pace == "presenter":
        now = gettext(request, "Presenter pace: show one poll at a time.")
    else:
        now = gettext(request, "Self-paced: every open poll is on every phone.")
    return redirect(f"/host/rooms/{room_id}", now)


@routes.post("/host/rooms/{room_id}/{step:next|previous}")
@action
async def step(request: web.Request, form: Form) -> web.StreamResponse:
    room_id = request.match_info["room_id"]
    by = 1 if request.match_info["step"] == "next" else -1
    await request.app[ROOMS].step(room_id, by)
    return redirect(f"/host/rooms/{room_id}")


@routes.post("/host/rooms/{room_id}/look")
@action
async def set_look(request: web.Request, form: Form) -> web.StreamResponse:
    room_id = request.match_info["room_id"]
    look = {"theme": field(form, "theme", "auto"), "accent": field(form, "accent")}
    await request.app[ROOMS].update_room(room_id, bodies.of(bodies.RenameRoom, look))
    now = gettext(request, "The screen and the phones show the new colours.")
    return redirect(f"/host/rooms/{room_id}", now)


@routes.post("/host/rooms/{room_id}/language")
@action
async def set_language(request: web.Request, form: Form) -> web.StreamResponse:
    room_id = request.match_info["room_id"]
    language = field(form, "language")
    await request.app[ROOMS].update_room(
        room_id, bodies.of(bodies.RenameRoom, {"language": language or None})
    )
    if language in i18n.LANGUAGES:
        name = i18n.LANGUAGES[language]
        now = gettext(request, "The screen and the phones speak %(language)s now.", language=name)
    else:
        now = gettext(request, "Each phone speaks its own language now.")
    return redirect(f"/host/rooms/{room_id}", now)


@routes.post("/host/rooms/{room_id}/duplicate")
@action
async def duplicate_room(request: web.Request, form: Form) -> web.StreamResponse:
    rooms, room_id = request.app[ROOMS], request.match_info["room_id"]
    title = field(form, "title")
    if not title:  # the copy's title the form's placeholder shows, in the host's language
        source = await rooms.room(room_id, include_drafts=True)
        title = gettext(request, "%(title)s (copy)", title=source["title"])[: bodies.MAX_TITLE]
    room = await rooms.duplicate_room(room_id, bodies.of(bodies.DuplicateRoom, {"title": title}))
    copied = gettext(
        request, "Copied as “%(title)s”: every poll is a draft again.", title=room["title"]
    )
    return redirect(f"/host/rooms/{room['id']}", copied)


@routes.post("/host/rooms/{room_id}/delete")
@action
async def delete_room(request: web.Request, form: Form) -> web.StreamResponse:
    await request.app[ROOMS].delete_room(request.match_info["room_id"])
    return redirect("/host", gettext(request, "Room deleted."))


# -- polls --------------------------------------------------------------------------------


def poll_body(form: Form) -> dict[str, Any]:
    """The API's poll body from the console's form (one field set serves every kind)."""
    kind = field(form, "kind", "single")
    body: dict[str, Any] = {
        "question": field(form, "question"),
        "kind": kind,
        "allow_change": bool(form.get("allow_change")),
        "hide_results": bool(form.get("hide_results")),
    }
    if kind in ("single", "multiple", "quiz"):
        lines = [line.strip() for line in field(form, "options").splitlines() if line.strip()]
        # A quiz's right answers are the lines that start with a star.
        body["options"] = [line.lstrip("*").strip() for line in lines]
        if kind == "quiz":
            body["correct"] = [i for i, line in enumerate(lines) if line.startswith("*")]
            limit = field(form, "time_limit_s")
            if limit and not limit.isdigit():
                raise Unprocessable(_BAD_TIME_LIMIT)
            body["time_limit_s"] = int(limit) if limit else None
    elif kind == "rating":
        body["scale"] = 10 if field(form, "scale") == "10" else 5
    elif kind == "text":
        body["blocked_words"] = [w for w in re.split(r"[,\s]+", field(form, "blocked_words")) if w]
    elif kind == "qa":
        body["moderated"] = bool(form.get("moderated"))
    return body


def draft_values(form: Form) -> dict[str, Any]:
    """What the host typed, to show the form again after a refusal."""
    return {
        name: field(form, name)
        for name in ("kind", "question", "options", "scale", "time_limit_s", "blocked_words")
    } | {name: bool(form.get(name)) for name in ("allow_change", "hide_results", "moderated")}


def poll_values(poll: answers.Poll) -> dict[str, Any]:
    """A poll as the form's values (to edit a draft)."""
    options = "\n".join(("*" if o.get("correct") else "") + o["label"] for o in poll["options"])
    return {
        "kind": poll["kind"],
        "question": poll["question"],
        "options": options if poll["kind"] != "rating" else "",
        "scale": str(poll.get("scale") or 5),
        "time_limit_s": "" if poll.get("time_limit_s") is None else str(poll["time_limit_s"]),
        "blocked_words": ", ".join(poll.get("blocked_words") or []),
        "allow_change": poll["allow_change"],
        "hide_results": poll["hide_results"],
        "moderated": bool(poll.get("moderated")),
    }


@routes.post("/host/rooms/{room_id}/polls")
async def create_poll(request: web.Request) -> web.StreamResponse:
    if not is_host(request):
        return redirect("/host/login", gettext(request, _SESSION_ENDED), error=True)
    form = await read_form(request)
    if form is None:
        return refused(request)
    room_id = request.match_info["room_id"]
    try:
        poll = await request.app[ROOMS].create_poll(
            room_id, bodies.of(bodies.CreatePoll, poll_body(form))
        )
    except NotFound as exc:
        return not_found(request, said(request, exc))
    except OpusError as exc:
        # Shown again with what was typed: six options are not retyped for one typo.
        return await _room_page(
            request, room_id, status=422, draft=draft_values(form), error=said(request, exc)
        )
    added = gettext(request, "Poll added as a draft.")
    return redirect(f"/host/rooms/{room_id}#poll-{poll['id']}", added)


@routes.get("/host/polls/{poll_id}/edit")
@page
async def edit_page(request: web.Request) -> web.StreamResponse:
    poll = await request.app[ROOMS].poll(request.match_info["poll_id"])
    return console(
        request,
        "host/edit.html",
        title=gettext(request, "Edit poll"),
        poll=poll,
        kinds=labels(request, KIND_NAMES),
        draft=poll_values(poll),
    )


@routes.post("/host/polls/{poll_id}/edit")
async def edit(request: web.Request) -> web.StreamResponse:
    if not is_host(request):
        return redirect("/host/login", gettext(request, _SESSION_ENDED), error=True)
    form = await read_form(request)
    if form is None:
        return refused(request)
    rooms = request.app[ROOMS]
    try:
        poll = await rooms.poll(request.match_info["poll_id"])
    except NotFound as exc:
        return not_found(request, said(request, exc))
    try:
        body = poll_body(form)
        if poll["status"] != "draft":  # only what may change after opening
            body = {
                k: v
                for k, v in body.items()
                if k in ("hide_results", "allow_change", "blocked_words", "moderated")
            }
        await rooms.update_poll(poll["id"], bodies.of(bodies.UpdatePoll, body))
    except OpusError as exc:
        return console(
            request,
            "host/edit.html",
            status=422,
            title=gettext(request, "Edit poll"),
            poll=poll,
            kinds=labels(request, KIND_NAMES),
            draft=draft_values(form),
            error=said(request, exc),
        )
    saved = gettext(request, "Poll saved.")
    return redirect(f"/host/rooms/{poll['room_id']}#poll-{poll['id']}", saved)


@routes.post("/host/polls/{poll_id}/{verb:open|close|delete|up|down|set|show|duplicate|reopen}")
@action
async def poll_action(request: web.Request, form: Form) -> web.StreamResponse:
    rooms = request.app[ROOMS]
    poll = await rooms.poll(request.match_info["poll_id"])
    room_id, poll_id = poll["room_id"], poll["id"]
    back = f"/host/rooms/{room_id}#poll-{poll_id}"
    verb = request.match_info["verb"]
    message = None
    if verb in ("open", "close"):
        await rooms.set_status(poll_id, "open" if verb == "open" else "closed")
        if verb == "open":
            message = gettext(request, "Poll open: attendees can vote.")
        else:
            message = gettext(request, "Poll closed.")
    elif verb == "reopen":
        await rooms.reopen(poll_id)
        message = gettext(request, "Poll open again: attendees can vote.")
    elif verb == "show":
        await rooms.show(poll_id)
        back = f"/host/rooms/{room_id}"
    elif verb == "duplicate":
        copy = await rooms.duplicate_poll(poll_id)
        back = f"/host/rooms/{room_id}#poll-{copy['id']}"
        message = gettext(request, "Copied as a draft.")
    elif verb == "delete":
        await rooms.delete_poll(poll_id)
        back, message = f"/host/rooms/{room_id}", gettext(request, "Poll deleted.")
    elif verb in ("up", "down"):
        order = [p["id"] for p in (await rooms.room(room_id, include_drafts=True))["polls"]]
        at = order.index(poll_id)
        to = at - 1 if verb == "up" else at + 1
        if 0 <= to < len(order):
            order[at], order[to] = order[to], order[at]
            await rooms.reorder_polls(room_id, order)
    else:  # set: one switch at a time, from a button
        name = field(form, "name")
        if name not in ("hide_results", "allow_change", "moderated"):
            raise Unprocessable(_NOTHING_TO_CHANGE)
        await rooms.update_poll(
            poll_id, bodies.of(bodies.UpdatePoll, {name: field(form, "value") == "on"})
        )
    return redirect(back, message)


@routes.post("/host/questions/{question_id}")
@action
async def moderate(request: web.Request, form: Form) -> web.StreamResponse:
    change: dict[str, Any] = {}
    if field(form, "status") in ("visible", "hidden"):
        change["status"] = field(form, "status")
    for name in ("pinned", "answered"):
        if field(form, name) in ("on", "off"):
            change[name] = field(form, name) == "on"
    await request.app[ROOMS].moderate(
        request.match_info["question_id"], bodies.of(bodies.Moderate, change)
    )
    return redirect(_safe_back(field(form, "back"), "/host"))


@routes.get("/host/polls/{poll_id}/questions")
@page
async def questions_part(request: web.Request) -> web.StreamResponse:
    """A Q&A poll's moderation list alone, for the console's script to swap in; `?offset=`
    pages through a list longer than one page."""
    rooms = request.app[ROOMS]
    poll = await rooms.poll(request.match_info["poll_id"])
    raw = request.query.get("offset", "0")
    offset = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else 0
    return console(
        request,
        "host/_questions.html",
        poll=poll,
        questions=await rooms.questions(poll["id"], offset=offset),
        question_total=await rooms.question_count(poll["id"]),
        question_statuses=await rooms.question_statuses(poll["id"]),
        question_offset=offset,
        question_page=MODERATION_PAGE,
    )


# -- exports, print, live -------------------------------------------------------------------


async def _export(
    request: web.Request, name: str, body: Awaitable[answers.PollExport | answers.RoomExport]
) -> web.StreamResponse:
    fmt = export.check_format(request.query.get("format", "json"))
    return web.Response(
        text=export.render(await body, fmt),
        content_type="application/json" if fmt == "json" else "text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


@routes.get("/host/polls/{poll_id}/export")
@page
async def export_poll(request: web.Request) -> web.StreamResponse:
    """The API's export (the same code), for the logged-in browser."""
    poll_id = request.match_info["poll_id"]
    return await _export(
        request, f"poll-{poll_id}", export.poll_export(request.app[ROOMS], poll_id)
    )


@routes.get("/host/rooms/{room_id}/export")
@page
async def export_room(request: web.Request) -> web.StreamResponse:
    room_id = request.match_info["room_id"]
    return await _export(
        request, f"room-{room_id}", export.room_export(request.app[ROOMS], room_id)
    )


@routes.get("/host/rooms/{room_id}/print")
@page
async def print_page(request: web.Request) -> web.StreamResponse:
    rooms = request.app[ROOMS]
    room = await rooms.room(request.match_info["room_id"], include_drafts=False)
    polls = [{"poll": p, "results": await rooms.results(p["id"])} for p in room["polls"]]
    return console(
        request,
        "host/print.html",
        title=gettext(request, "Results: %(title)s", title=room["title"]),
        room=room,
        polls=polls,
        kinds=labels(request, KIND_NAMES),
        statuses=labels(request, STATUS_NAMES),
    )


@routes.get("/host/live")
async def live(request: web.Request) -> web.StreamResponse:
    """The host's WebSocket for a logged-in browser: the session cookie stands in for the
    admin token, which is added here, on the server, and never sent to the page."""
    if not is_host(request) or not same_origin(request):
        raise web.HTTPForbidden(text="Log in to the host console first.")
    return await ws.open_socket(request, session=True)


def setup(app: web.Application) -> None:
    app[_login_throttle] = api.JoinThrottle(allowed=30)
    app.router.add_routes(routes)
