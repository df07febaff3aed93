"""Presenter mode: the host shows one poll at a time; the screen and phones follow it over the
socket. A room made through the API with only a title keeps v1's self-paced behaviour."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from conftest import Api


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        message = await ws.receive_json(timeout=max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def _presenter_room(api: Api) -> dict[str, Any]:
    status, room = await api.call(
        "POST", "/api/v1/rooms", json={"title": "Talk", "pace": "presenter"}, headers=api.admin
    )
    assert status == 201, room
    return room  # type: ignore[no-any-return]


async def test_a_room_made_with_a_title_alone_is_self_paced(api: Api) -> None:
    room = await api.room()
    assert room["pace"] == "self" and room["shown_poll_id"] is None
    status, body = await api.call(
        "PATCH", f"/api/v1/rooms/{room['id']}", json={"pace": "fast"}, headers=api.admin
    )
    assert (status, body["error"]["code"]) == (422, "invalid_field")
    status, body = await api.call(
        "PATCH", f"/api/v1/rooms/{room['id']}", json={"pace": "presenter"}, headers=api.admin
    )
    assert status == 200 and body["pace"] == "presenter"


async def test_show_next_and_previous_move_the_shown_poll_and_open_drafts(
    api: Api, client: TestClient
) -> None:
    room = await _presenter_room(api)
    polls = [await api.poll(room["id"], open=False) for _ in range(3)]
    async with client.ws_connect(f"/ws?room={room['code']}") as ws:
        await _next(ws, "snapshot")
        status, body = await api.call("POST", f"/api/v1/rooms/{room['id']}/next", headers=api.admin)
        assert status == 200 and body["shown_poll_id"] == polls[0]["id"]
        assert body["polls"][0]["status"] == "open"  # shown: open for votes
        assert body["polls"][1]["status"] == "draft"
        while True:  # the phones' and screen's socket says which poll is shown
            message = await _next(ws, "room")
            if message["room"]["shown_poll_id"] == polls[0]["id"]:
                break
        status, body = await api.call("POST", f"/api/v1/rooms/{room['id']}/next", headers=api.admin)
        assert body["shown_poll_id"] == polls[1]["id"]
        status, body = await api.call(
            "POST", f"/api/v1/rooms/{room['id']}/previous", headers=api.admin
        )
        assert body["shown_poll_id"] == polls[0]["id"]
        status, body = await api.call(
            "POST", f"/api/v1/rooms/{room['id']}/previous", headers=api.admin
        )
        assert (status, body["error"]["code"]) == (409, "no_previous_poll")
        status, body = await api.call(
            "POST", f"/api/v1/polls/{polls[2]['id']}/show", headers=api.admin
        )
        assert status == 200 and body["shown_poll_id"] == polls[2]["id"]
        status, body = await api.call("POST", f"/api/v1/rooms/{room['id']}/next", headers=api.admin)
        assert (status, body["error"]["code"]) == (409, "no_next_poll")


async def test_closing_a_poll_shows_it(api: Api) -> None:
    room = await _presenter_room(api)
    first, second = await api.poll(room["id"]), await api.poll(room["id"])
    await api.call("POST", f"/api/v1/polls/{second['id']}/show", headers=api.admin)
    await api.call("POST", f"/api/v1/polls/{first['id']}/close", headers=api.admin)
    _, body = await api.call("GET", f"/api/v1/rooms/{room['id']}", headers=api.admin)
    assert body["shown_poll_id"] == first["id"]


async def test_a_shown_quiz_counts_in_then_closes_itself_when_time_is_up(api: Api) -> None:
    room = await _presenter_room(api)
    quiz = await api.poll(
        room["id"], ["4", "5"], open=False, kind="quiz", correct=[0], time_limit_s=5
    )
    status, body = await api.call("POST", f"/api/v1/polls/{quiz['id']}/show", headers=api.admin)
    assert status == 200
    shown = body["polls"][0]
    opened = time.time()
    voter = await api.join(room["code"])
    # The count-in: the question is on the screen, the clock not started yet.
    status, refused = await api.vote(voter, quiz["id"], [shown["options"][0]["id"]])
    assert (status, refused["error"]["code"]) == (409, "poll_not_open"), refused
    deadline = shown["deadline"]
    assert deadline is not None
    while True:
        await asyncio.sleep(0.2)
        status, body = await api.vote(voter, quiz["id"], [shown["options"][0]["id"]])
        if status == 202:
            break
        assert time.time() - opened < 10, body
    receipt = await api.settled(voter, body["event_id"])
    assert receipt["status"] == "counted"
    while (await api.results(quiz["id"]))["status"] != "closed":  # nobody closes it
        assert time.time() - opened < 30, "the quiz did not close itself"
        await asyncio.sleep(0.2)
    results = await api.results(quiz["id"])
    assert results["total_votes"] == 1


async def test_duplicating_a_poll_makes_a_draft_right_after_it(api: Api) -> None:
    room = await api.room()
    first = await api.poll(room["id"], ["Tea", "Coffee"], allow_change=True)
    last = await api.poll(room["id"])
    voter = await api.join(room["code"])
    status, _ = await api.vote(voter, first["id"], [first["options"][0]["id"]])
    assert status == 202
    status, copy = await api.call(
        "POST", f"/api/v1/polls/{first['id']}/duplicate", headers=api.admin
    )
    assert status == 201, copy
    assert copy["status"] == "draft" and copy["allow_change"] is True
    assert [o["label"] for o in copy["options"]] == ["Tea", "Coffee"]
    assert copy["total_votes"] == 0
    _, body = await api.call("GET", f"/api/v1/rooms/{room['id']}", headers=api.admin)
    assert [p["id"] for p in body["polls"]] == [first["id"], copy["id"], last["id"]]


async def test_a_closed_poll_reopens_with_its_votes_and_takes_more(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], ["Tea", "Coffee"])
    first, second = await api.join(room["code"]), await api.join(room["code"])
    status, body = await api.vote(first, poll["id"], [poll["options"][0]["id"]])
    assert status == 202
    await api.settled(first, body["event_id"])
    status, body = await api.call("POST", f"/api/v1/polls/{poll['id']}/reopen", headers=api.admin)
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
    status, body = await api.vote(second, poll["id"], [poll["options"][1]["id"]])
    assert (status, body["error"]["code"]) == (409, "poll_not_open")
    status, body = await api.call("POST", f"/api/v1/polls/{poll['id']}/reopen", headers=api.admin)
    assert status == 200 and body["status"] == "open" and body["closed_at"] is None
    status, body = await api.vote(second, poll["id"], [poll["options"][1]["id"]])
    assert status == 202, body
    assert (await api.settled(second, body["event_id"]))["status"] == "counted"
    status, body = await api.vote(first, poll["id"], [poll["options"][1]["id"]])
    assert (status, body["error"]["code"]) == (409, "already_voted")  # its rules unchanged
    results = await api.results(poll["id"])
    assert [o["votes"] for o in results["options"]] == [1, 1]
