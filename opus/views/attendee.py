"""The attendee's pages: `/` (type the code), `/j/{code}` (the room's polls, a vote, its
receipt, live results), the passcode form and the inbox. With JavaScript (attendee.js) votes go
to the API and are kept on the phone until answered; without it, the same forms POST here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from gettext import NullTranslations
from typing import Any

from aiohttp import web

from opus import answers, auth, bodies, i18n, kinds
from opus.auth import Voter
from opus.callers import VOTER_COOKIE, VOTER_COOKIE_S, identify
from opus.codes import display_code, normalize_code
from opus.errors import NotFound, OpusError, Unprocessable
from opus.i18n import N_
from opus.keys import (
    ADDRESSES,
    CATALOG,
    INGEST,
    LEDGER,
    NOTIFIER,
    ROOMS,
    SETTINGS,
    SIGNER,
)
from opus.ledger import Entry
from opus.views import notes
from opus.views.api import JoinThrottle
from opus.views.kit import (
    Form,
    field,
    now_ms,
    page_language,
    read_form,
    redirect,
    refused,
    render,
)

# What a refused vote or join says on the page (the API's own messages stay English).
FRIENDLY = {
    "already_voted": N_("You have already voted in this poll."),
    "poll_not_open": N_("This poll is closed: your vote was not counted."),
    "time_up": N_("Time is up for this question: your answer was not counted."),
    "poll_not_found": N_("This poll is not open."),
    "wrong_room": N_("This poll belongs to another room."),
    "passcode_required": N_("This room needs its passcode: type the one the host shows or tells."),
    "wrong_passcode": N_("That is not this room's passcode: check it and try again."),
    "empty_text": N_("Write something first."),
    "no_option": N_("Choose an answer first."),
    "invalid_option": N_("That answer is not one of this poll's: reload the page and try again."),
    "question_not_found": N_("That question is no longer in this poll."),
    "unavailable": N_("The server is shutting down: try again in a moment."),
}
# Why the workers did not count a vote (its receipt's reason), in words.
NOT_COUNTED = {
    "already_voted": N_("Not counted: you had already voted in this poll."),
    "replaced": N_("Not counted: a later answer of yours was counted instead."),
    "time_up": N_("Not counted: time was up."),
    "invalid_option": N_("Not counted: that answer is not one of this poll's."),
    "question_not_found": N_("Not counted: that question is no longer shown."),
    "question_hidden": N_("Not counted: that question is no longer shown."),
}
_page_throttle = web.AppKey("page_join_throttle", JoinThrottle)
# How long a form vote waits for its count before the redirect (see `vote`); a busy server
# answers sooner, with the vote still queued (the page says so).
_COUNTED_WAIT_S = 2.0


def _voter_choice(entry: Entry | None) -> dict[str, Any]:
    """What the card shows of the voter's vote: the options chosen, or the answer given."""
    match entry.choice if entry is not None else None:
        case kinds.Options(ids):
            return {"chosen": list(ids), "answer": ""}
        case kinds.Answer(text) | kinds.Question(text):
            return {"chosen": [], "answer": text}
    return {"chosen": [], "answer": ""}


async def poll_cards(
    request: web.Request, room_id: str, voter: Voter | None
) -> list[dict[str, Any]]:
    """What the attendee sees of each poll: open ones first, then the closed ones, newest
    first; whether this voter voted, with the receipt; the results when they are public."""
    rooms, catalog, ledger = request.app[ROOMS], request.app[CATALOG], request.app[LEDGER]
    room = await rooms.room(room_id, include_drafts=False)
    polls: list[tuple[answers.Poll, bool, answers.Results | None]] = []
    for poll in room["polls"]:
        view = catalog.polls.get(poll["id"])
        hidden = view.results_hidden if view is not None else False
        polls.append((poll, hidden, None if hidden else await rooms.results(poll["id"])))
    # The voter's votes and upvotes: the ledger has those of open polls, SQLite every one.
    keys: list[tuple[str, str]] = []
    if voter is not None:
        for poll, _, results in polls:
            keys.append((poll["id"], voter.voter_id))
            if results is not None and poll["kind"] == "qa":
                questions = results.get("questions", ())
                keys += [(poll["id"], f"{voter.voter_id}/{q['id']}") for q in questions]
    held = ledger.held(keys)
    mine = {poll_id: event_id for (poll_id, who), event_id in held.items() if "/" not in who}
    entries = {e: ledger.by_event[e] for e in mine.values() if e in ledger.by_event}
    entries.update(ledger.recorded([e for e in mine.values() if e not in entries]))
    cards: list[dict[str, Any]] = []
    for poll, hidden, results in polls:
        event_id = mine.get(poll["id"])
        upvoted = {
            q["id"]
            for q in (results.get("questions", ()) if results is not None else ())
            if voter is not None and (poll["id"], f"{voter.voter_id}/{q['id']}") in held
        }
        cards.append(
            {
                "poll": poll,
                "results": results,
                "hidden": hidden,
                "event_id": event_id,
                **_voter_choice(entries.get(event_id) if event_id else None),
                "receipt": None,
                "upvoted": upvoted,
                "form_event_id": str(uuid.uuid4()),
            }
        )
    if mine:
        settled = {r["event_id"]: r for r in await rooms.receipts(list(mine.values()))}
        for card in cards:
            event_id = card["event_id"]
            if not event_id:
                continue
            row = settled.get(event_id)
            if event_id in ledger.pending or row is None:
                card["receipt"] = {"status": "queued"}
            else:
                said = NOT_COUNTED.get(row["reason"] or "", N_("Not counted."))
                card["receipt"] = {"status": row["status"], "reason": row["reason"], "said": said}
    cards.sort(
        key=lambda c: (
            c["poll"]["status"] != "open",
            -(_epoch(c["poll"].get("closed_at") or c["poll"]["opened_at"])),
        )
    )
    if room["pace"] == "presenter":
        # The poll the host shows first; the template folds the others below it.
        shown = [c for c in cards if c["poll"]["id"] == room["shown_poll_id"]]
        for card in shown:
            card["shown"] = True
        cards = shown + [c for c in cards if c not in shown]
    return cards


def _epoch(iso: str | None) -> float:
    if not iso:
        return 0.0
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def vote_body(kind: str, form: Form) -> dict[str, Any]:
    """The API's vote body from a page's form, for each poll kind."""
    if kind == "multiple":
        return {"option_ids": [v for v in form.getall("option", []) if isinstance(v, str)]}
    if kind in ("single", "quiz"):
        option = field(form, "option")
        return {"option_ids": [option] if option else []}
    if kind == "rating":
        value = field(form, "value")
        if not value.isdigit():
            raise Unprocessable("Choose a value first.", code="no_option")
        return {"value": int(value)}
    if kind == "qa" and field(form, "upvote"):
        return {"upvote": field(form, "upvote")}
    return {"text": field(form, "text")}


# -- attendee -------------------------------------------------------------------------------

routes = web.RouteTableDef()


def words(request: web.Request, room: dict[str, Any] | None = None) -> NullTranslations:
    """The catalog of the language this request's page speaks (in a room: the room's, unless
    the phone chose another): for flash messages and titles."""
    return i18n.translations(page_language(request, room.get("language") if room else None))


def friendly(request: web.Request, room: dict[str, Any] | None, exc: OpusError) -> str:
    """Why a vote or a join was refused, in the page's language."""
    said = words(request, room)
    if exc.code == "too_many_identities":
        cap = request.app[SETTINGS].identities_per_address
        return said.ngettext(
            "This network address has already joined this room %(num)d time, the most allowed"
            " for one device. Use the phone that joined before, or ask the host.",
            "This network address has already joined this room %(num)d times, the most allowed"
            " for one device. Use the phone that joined before, or ask the host.",
            cap,
        ) % {"num": cap}
    if exc.code == "too_many_joins":
        wait = exc.retry_after or 60
        return said.ngettext(
            "Too many people joined from this network address just now; try again in"
            " %(num)d second.",
            "Too many people joined from this network address just now; try again in"
            " %(num)d seconds.",
            wait,
        ) % {"num": wait}
    if exc.code in FRIENDLY:
        return said.gettext(FRIENDLY[exc.code])
    return exc.message  # a case the page cannot foresee: the API's (English) words


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    return render(request, "home.html", title=words(request).gettext("Join a poll"))


@routes.get("/join")
async def join_by_code(request: web.Request) -> web.Response:
    code = normalize_code(request.query.get("code", ""))[:32]
    if not code:
        said = words(request).gettext("Type the code shown on the screen.")
        return redirect("/", said, error=True)
    return redirect(f"/j/{code}")


async def room_of(request: web.Request) -> dict[str, Any] | None:
    """The room named by the URL's code, or None (a wrong code counts against the address)."""
    throttle = request.app[_page_throttle]
    address = request.app[ADDRESSES].of(request)
    throttle.check(address)
    try:
        row = await request.app[ROOMS].room_by_code(request.match_info["code"][:64])
    except NotFound:
        throttle.miss(address)
        return None
    return {
        "id": row["id"],
        "code": row["code"],
        "code_display": display_code(row["code"]),
        "title": row["title"],
        "passcode_required": bool(row["passcode"]),
        "shown_passcode": row["passcode"] if row["show_passcode"] else None,
        "pace": row["pace"],
        "theme": row["theme"],
        "accent": row["accent"],
        "language": row["language"],  # None: each phone's own
    }


def bad_code(request: web.Request) -> web.Response:
    code = request.match_info.get("code", "")[:32]
    title = words(request).gettext("Join a poll")
    return render(request, "home.html", status=404, title=title, code=code, bad_code=True)


def _voter(request: web.Request, room: dict[str, Any]) -> Voter | None:
    """This phone's voter in this room (its cookie), or None."""
    voter = identify(request).voter
    return voter if voter is not None and voter.room_id == room["id"] else None


@routes.get("/j/{code}")
async def attendee(request: web.Request) -> web.Response:
    """The room's page (what the QR code opens). Opening it makes no voter: the first vote,
    or the passcode form of a room that has one, does (see _join), so a script that opens the
    page a thousand times has made nothing. A phone that joined before stays the same voter."""
    room = await room_of(request)
    if room is None:
        return bad_code(request)
    if room["code"] != request.match_info["code"]:
        return redirect(f"/j/{room['code']}")  # one address per room: the clean code
    voter = _voter(request, room)
    if voter is None and room["passcode_required"]:
        return render(request, "passcode.html", title=room["title"], room=room)
    unread = (await request.app[NOTIFIER].inbox(voter.voter_id))["unread"] if voter else 0
    return render(
        request,
        "attendee.html",
        title=room["title"],
        room=room,
        joined=voter is not None,
        cards=await poll_cards(request, room["id"], voter),
        unread=unread,
        name=_pseudonym(voter) if voter else "",
        boot={
            "room": room["code"],
            "room_id": room["id"],
            "server_now": now_ms(),
            "joined": voter is not None,
            "name": _pseudonym(voter) if voter else "",
            # What a phone refused for too many identities says (attendee.js).
            "identities_per_address": request.app[SETTINGS].identities_per_address,
        },
    )


async def _join(
    request: web.Request,
    room: dict[str, Any],
    passcode: str | None = None,
) -> tuple[Voter | None, str | None]:
    """Make this phone a voter of the room: (the voter, None), or (None, why not) in words a
    person understands (a wrong passcode, too many identities from this address)."""
    address = request.app[ADDRESSES].of(request)
    try:
        voter = await request.app[ROOMS].join(room["code"], address=address, passcode=passcode)
    except OpusError as exc:
        if exc.code == "wrong_passcode":
            request.app[_page_throttle].miss(address)
        return None, friendly(request, room, exc)
    return voter, None


def _with_voter_cookie(
    request: web.Request,
    response: web.Response,
    voter: Voter,
) -> web.Response:
    response.set_cookie(
        VOTER_COOKIE,
        request.app[SIGNER].voter_token(voter),
        max_age=VOTER_COOKIE_S,
        httponly=True,
        samesite="Lax",
        path="/",
    )
    return response


async def _attendee_post(request: web.Request) -> tuple[Form, dict[str, Any]] | web.Response:
    """A form an attendee posted on a room's page: the form and the room, or the answer that
    refuses it (a form without its CSRF token, a wrong code)."""
    form = await read_form(request)
    if form is None:
        return refused(request)
    room = await room_of(request)
    if room is None:
        return bad_code(request)
    return form, room


@routes.post("/j/{code}/join")
async def join_room(request: web.Request) -> web.Response:
    """The passcode form of a room that has one (and a plain join for one that has none)."""
    posted = await _attendee_post(request)
    if isinstance(posted, web.Response):
        return posted
    form, room = posted
    page = f"/j/{room['code']}"
    if _voter(request, room) is not None:
        return redirect(page)
    voter, why = await _join(request, room, field(form, "passcode"))
    if voter is None:
        return redirect(page, why or "", error=True)
    joined = words(request, room).gettext("You have joined: vote below.")
    return _with_voter_cookie(request, redirect(page, joined), voter)


def _pseudonym(voter: Voter) -> str:
    name = getattr(auth, "pseudonym", None)
    return str(name(voter.voter_id)) if name is not None else ""


@routes.get("/j/{code}/polls")
async def attendee_polls(request: web.Request) -> web.Response:
    """The poll list alone: what a page with JavaScript swaps in when a poll opens or closes."""
    room = await room_of(request)
    if room is None:
        return bad_code(request)
    voter = _voter(request, room)
    if voter is None and room["passcode_required"]:
        return render(
            request,
            "error.html",
            status=401,
            title=words(request, room).gettext("Join first"),
            message=words(request, room).gettext(
                "Open the room's page and type its passcode to join it."
            ),
            room=room,
        )
    return render(
        request,
        "_polls.html",
        room=room,
        cards=await poll_cards(request, room["id"], voter),
        name=_pseudonym(voter) if voter else "",
    )


@routes.post("/j/{code}/polls/{poll_id}/vote")
async def vote(request: web.Request) -> web.Response:
    posted = await _attendee_post(request)
    if isinstance(posted, web.Response):
        return posted
    form, room = posted
    page = f"/j/{room['code']}"
    poll_id = request.match_info["poll_id"]
    anchor = f"{page}#poll-{poll_id}"
    voter, minted = _voter(request, room), False
    if voter is None:  # the first vote makes the voter
        voter, why = await _join(request, room)
        if voter is None:
            return redirect(anchor, why or "", error=True)
        minted = True
    view = request.app[CATALOG].polls.get(poll_id)
    try:
        body = vote_body(view.kind if view is not None else "single", form)
        event_id = field(form, "event_id")
        if event_id:
            body["event_id"] = event_id  # the page's own: sending the form twice counts once
        event_id = await request.app[INGEST].cast(voter, poll_id, bodies.of(bodies.CastVote, body))
    except OpusError as exc:
        response = redirect(anchor, friendly(request, room, exc), error=True)
        return _with_voter_cookie(request, response, voter) if minted else response
    # Without JavaScript the page it redirects to is all the voter sees, with no live
    # updates: let the workers count the vote first (they gather votes for a few ms).
    await request.app[LEDGER].wait_settled(event_id, _COUNTED_WAIT_S)
    thanks = (
        N_("Your question is in.")
        if "text" in body and view and view.kind == "qa"
        else (N_("Upvoted.") if "upvote" in body else N_("Thank you: your vote is in."))
    )
    response = redirect(anchor, words(request, room).gettext(thanks))
    return _with_voter_cookie(request, response, voter) if minted else response


@routes.get("/j/{code}/inbox")
async def inbox(request: web.Request) -> web.Response:
    room = await room_of(request)
    if room is None:
        return bad_code(request)
    voter = _voter(request, room)
    if voter is None:
        return redirect(f"/j/{room['code']}")
    box = await request.app[NOTIFIER].inbox(voter.voter_id)
    lang = page_language(request, room["language"])
    polls = (await request.app[ROOMS].room(room["id"], include_drafts=False))["polls"]
    questions = {poll["id"]: poll["question"] for poll in polls}
    return render(
        request,
        "inbox.html",
        title=i18n.translations(lang).gettext("Messages"),
        room=room,
        notifications=[notes.in_words(note, questions, lang) for note in box["notifications"]],
        unread=box["unread"],
    )


@routes.post("/j/{code}/inbox/read")
async def inbox_read(request: web.Request) -> web.Response:
    posted = await _attendee_post(request)
    if isinstance(posted, web.Response):
        return posted
    _, room = posted
    voter = _voter(request, room)
    if voter is not None:
        await request.app[NOTIFIER].mark_read(voter.voter_id, None)
    return redirect(f"/j/{room['code']}/inbox", words(request, room).gettext("Marked as read."))


def setup(app: web.Application) -> None:
    app[_page_throttle] = JoinThrottle()
    app.router.add_routes(routes)
