"""Votes over the attendee's socket (docs/api.md, "Votes over the socket"): the same promise as
`POST /api/v1/polls/{poll_id}/votes`. Answered only once durable, one `event_id` counted once
over the socket, HTTP or both, and every refusal the API's status, code and message."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from conftest import Api, ServerProcess


async def _socket(client: Any, room: dict[str, Any], voter: dict[str, Any] | None) -> Any:
    """A voter's socket (token in the query, as API clients do), past its snapshot."""
    token = f"&token={voter['voter_token']}" if voter else ""
    ws = await client.ws_connect(f"/ws?room={room['code']}{token}")
    assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
    return ws


async def _answer(ws: Any, event_id: str | None = None) -> dict[str, Any]:
    """The socket's answer to a vote (results and other frames in between are skipped)."""
    while True:
        message: dict[str, Any] = await ws.receive_json(timeout=10)
        if message["type"] in ("vote_accepted", "vote_refused") and (
            event_id is None or message["event_id"] == event_id
        ):
            return message


async def _vote(ws: Any, poll_id: str, **body: Any) -> dict[str, Any]:
    await ws.send_json({"type": "vote", "poll_id": poll_id, **body})
    return await _answer(ws, body.get("event_id"))


async def test_a_vote_over_the_socket_is_answered_and_counted(api: Api, client: TestClient) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    voter = await api.join(room["code"])
    ws = await _socket(client, room, voter)
    event_id = str(uuid.uuid4())
    answer = await _vote(ws, poll["id"], event_id=event_id, option_ids=[poll["options"][1]["id"]])
    assert answer == {"type": "vote_accepted", "event_id": event_id, "poll_id": poll["id"]}
    assert (await api.settled(voter, event_id))["status"] == "counted"
    assert [o["votes"] for o in (await api.results(poll["id"]))["options"]] == [0, 1, 0]
    # Without an event_id the server makes one and says which.
    other = await api.join(room["code"])
    ws2 = await _socket(client, room, other)
    made = await _vote(ws2, poll["id"], option_ids=[poll["options"][2]["id"]])
    assert made["type"] == "vote_accepted" and uuid.UUID(made["event_id"])
    assert (await api.settled(other, made["event_id"]))["status"] == "counted"
    _, metrics = await api.call("GET", "/metrics", headers=api.admin)
    assert "opus_socket_votes_accepted_total 2.0" in metrics
    await ws.close()
    await ws2.close()


async def test_one_event_id_over_the_socket_and_http_counts_once(
    api: Api, client: TestClient
) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    red, green = (o["id"] for o in poll["options"][:2])
    first, second = await api.join(room["code"]), await api.join(room["code"])
    ws1, ws2 = await _socket(client, room, first), await _socket(client, room, second)

    # Socket, then HTTP, then the socket again, with the same event_id.
    one = str(uuid.uuid4())
    assert (await _vote(ws1, poll["id"], event_id=one, option_ids=[red]))["type"] == "vote_accepted"
    status, body = await api.vote(first, poll["id"], [red], event_id=one)
    assert (status, body["event_id"]) == (202, one)
    assert (await _vote(ws1, poll["id"], event_id=one, option_ids=[red]))["type"] == "vote_accepted"
    # HTTP first, then the socket; and two copies on the socket at once.
    two = str(uuid.uuid4())
    status, _ = await api.vote(second, poll["id"], [green], event_id=two)
    assert status == 202
    for _ in range(2):
        await ws2.send_json(
            {"type": "vote", "poll_id": poll["id"], "event_id": two, "option_ids": [green]}
        )
    assert [(await _answer(ws2, two))["type"] for _ in range(2)] == ["vote_accepted"] * 2

    results = await api.total_when(poll["id"], 2)
    await asyncio.sleep(0.3)  # a second count would have landed by now
    results = await api.results(poll["id"])
    assert results["total_votes"] == 2
    assert [o["votes"] for o in results["options"]] == [1, 1, 0]
    for voter, event_id in ((first, one), (second, two)):
        assert (await api.settled(voter, event_id))["status"] == "counted"
    await ws1.close()
    await ws2.close()


async def test_every_refusal_over_the_socket_is_the_apis(api: Api, client: TestClient) -> None:
    """Each vote the API refuses, sent over HTTP and over the socket: the same status, code and
    message, and nothing counted."""
    room, elsewhere = await api.room(), await api.room("Other room")
    poll = await api.poll(room["id"])
    red, green = (o["id"] for o in poll["options"][:2])
    draft = await api.poll(room["id"], open=False)
    closed = await api.poll(room["id"])
    await api.call("POST", f"/api/v1/polls/{closed['id']}/close", headers=api.admin)
    foreign = await api.poll(elsewhere["id"])
    status, qa = await api.call(
        "POST",
        f"/api/v1/rooms/{room['id']}/polls",
        json={"question": "Ask", "kind": "qa"},
        headers=api.admin,
    )
    assert status == 201, qa
    await api.call("POST", f"/api/v1/polls/{qa['id']}/open", headers=api.admin)
    voter = await api.join(room["code"])
    ws = await _socket(client, room, voter)
    used = str(uuid.uuid4())
    status, _ = await api.vote(voter, poll["id"], [red], event_id=used)
    assert status == 202

    cases: list[tuple[str, dict[str, Any], str]] = [
        (poll["id"], {"option_ids": [green]}, "already_voted"),
        (poll["id"], {"option_ids": [green], "event_id": used}, "event_id_conflict"),
        (poll["id"], {"option_ids": ["no-such-option"]}, "invalid_option"),
        (poll["id"], {"option_ids": []}, "no_option"),
        (poll["id"], {"option_ids": "red"}, "invalid_field"),
        (poll["id"], {"event_id": "not-a-uuid", "option_ids": [red]}, "invalid_field"),
        (draft["id"], {"option_ids": [draft["options"][0]["id"]]}, "poll_not_found"),
        ("no-such-poll", {"option_ids": [red]}, "poll_not_found"),
        (closed["id"], {"option_ids": [closed["options"][0]["id"]]}, "poll_not_open"),
        (foreign["id"], {"option_ids": [foreign["options"][0]["id"]]}, "wrong_room"),
        (qa["id"], {"text": "   "}, "empty_text"),
        (qa["id"], {"upvote": "no-such-question"}, "question_not_found"),
    ]
    for poll_id, body, code in cases:
        status, over_http = await api.call(
            "POST", f"/api/v1/polls/{poll_id}/votes", json=body, headers=voter["headers"]
        )
        answer = await _vote(ws, poll_id, **body)
        assert answer["type"] == "vote_refused", (code, answer)
        assert (answer["status"], answer["error"]) == (status, over_http["error"]), code
        assert answer["error"]["code"] == code
        assert answer["poll_id"] == poll_id
        sent = body.get("event_id")
        assert answer["event_id"] == (sent if isinstance(sent, str) else None)

    # A socket without a voter (a screen) carries no votes: the API's 401.
    screen = await _socket(client, room, None)
    answer = await _vote(screen, poll["id"], option_ids=[red])
    status, over_http = await api.call(
        "POST", f"/api/v1/polls/{poll['id']}/votes", json={"option_ids": [red]}
    )
    assert status == 401
    assert (answer["status"], answer["error"]) == (status, over_http["error"])
    # A message that is not a vote the server knows changes nothing and gets no answer; the
    # socket still works.
    await screen.send_str("[1, 2]")
    await screen.send_json({"type": "what"})
    await screen.send_json({"type": "ping"})
    heard = [(await screen.receive_json(timeout=10))["type"]]
    while heard[-1] != "pong":  # results of the vote counted above may come first
        heard.append((await screen.receive_json(timeout=10))["type"])
    assert set(heard) <= {"results", "pong"}, heard  # nothing answered the three messages
    assert (await api.settled(voter, used))["status"] == "counted"
    await asyncio.sleep(0.3)  # a refused vote counted by mistake would have landed by now
    results = await api.results(poll["id"])
    assert results["total_votes"] == 1
    assert (await api.results(qa["id"]))["total_votes"] == 0
    await ws.close()
    await screen.close()


async def test_a_kill_9_right_after_the_answer_loses_no_socket_vote(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Votes stream in over sockets; the server is killed (-9) the moment the last answer
    arrives. After a restart every vote answered `vote_accepted` counts, once."""
    server.start()
    api = Api(http, server.base)
    room = await api.room()
    poll = await api.poll(room["id"])
    options = [o["id"] for o in poll["options"]]
    voters = list(await asyncio.gather(*(api.join(room["code"]) for _ in range(60))))
    sockets = [
        await http.ws_connect(f"{server.base}/ws?room={room['code']}&token={v['voter_token']}")
        for v in voters
    ]
    for ws in sockets:
        assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
    sent = {}
    for i, (ws, voter) in enumerate(zip(sockets, voters, strict=True)):
        event_id = str(uuid.uuid4())
        sent[event_id] = voter
        await ws.send_json(
            {
                "type": "vote",
                "poll_id": poll["id"],
                "event_id": event_id,
                "option_ids": [options[i % 3]],
            }
        )
    answers = await asyncio.gather(*(_answer(ws) for ws in sockets))
    server.kill()  # at once: the workers may not have counted any of them yet
    assert {a["type"] for a in answers} == {"vote_accepted"}
    for ws in sockets:
        await ws.close()
    server.start()
    results = await api.total_when(poll["id"], len(sent))
    assert results["total_votes"] == len(sent)
    for answer in answers:
        receipt = await api.settled(sent[answer["event_id"]], answer["event_id"])
        assert receipt["status"] == "counted"
    await asyncio.sleep(0.3)
    assert (await api.results(poll["id"]))["total_votes"] == len(sent)


async def test_phones_get_a_polls_results_at_most_once_a_second(
    api: Api, client: TestClient
) -> None:
    """Votes land every 100 ms for 2 s: a phone's socket (a voter's) gets the newest results at
    most once a second, and the last of them shows every vote; a screen gets them as they move."""
    room = await api.room()
    poll = await api.poll(room["id"])
    red = poll["options"][0]["id"]
    phone_voter = await api.join(room["code"])
    phone, screen = await _socket(client, room, phone_voter), await _socket(client, room, None)
    voters = [await api.join(room["code"]) for _ in range(20)]
    started = asyncio.get_running_loop().time()
    for voter in voters:
        status, _ = await api.vote(voter, poll["id"], [red])
        assert status == 202
        await asyncio.sleep(0.1)
    await api.total_when(poll["id"], 20)

    async def totals(ws: Any, until_total: int) -> list[tuple[float, int]]:
        seen: list[tuple[float, int]] = []
        while not seen or seen[-1][1] < until_total:
            message = await ws.receive_json(timeout=10)
            if message["type"] == "results" and message["poll_id"] == poll["id"]:
                seen.append((asyncio.get_running_loop().time(), message["total_votes"]))
        return seen

    on_phone, on_screen = await totals(phone, 20), await totals(screen, 20)
    took = on_phone[-1][0] - started
    # At most one frame per started second, and one at once after a quiet second.
    assert len(on_phone) <= int(took) + 2, (len(on_phone), took)
    assert len(on_screen) > len(on_phone)
    await phone.close()
    await screen.close()
