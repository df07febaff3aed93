"""Every poll kind end to end (ratings, word clouds, Q&A, quizzes) and the host's room and poll
operations, through the HTTP API of a real server on real SQLite files."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from conftest import ADMIN, Api, ServerProcess


async def make_poll(api: Api, room_id: str, *, open: bool = True, **fields: Any) -> dict[str, Any]:
    status, poll = await api.call(
        "POST",
        f"/api/v1/rooms/{room_id}/polls",
        json={"question": "Q?", **fields},
        headers=api.admin,
    )
    assert status == 201, poll
    if open:
        status, poll = await api.call("POST", f"/api/v1/polls/{poll['id']}/open", headers=api.admin)
        assert status == 200, poll
    return poll


async def send(api: Api, voter: dict[str, Any], poll_id: str, **body: Any) -> tuple[int, Any]:
    return await api.call(
        "POST", f"/api/v1/polls/{poll_id}/votes", json=body, headers=voter["headers"]
    )


async def counted(api: Api, voter: dict[str, Any], poll_id: str, **body: Any) -> str:
    status, answer = await send(api, voter, poll_id, **body)
    assert status == 202, answer
    receipt = await api.settled(voter, answer["event_id"])
    assert receipt["status"] == "counted", receipt
    return str(answer["event_id"])


async def public_results(api: Api, voter: dict[str, Any], poll_id: str) -> tuple[int, Any]:
    return await api.call("GET", f"/api/v1/polls/{poll_id}/results", headers=voter["headers"])


async def test_rating_average_and_distribution(api: Api) -> None:
    room = await api.room()
    poll = await make_poll(api, room["id"], kind="rating", scale=5)
    assert [o["label"] for o in poll["options"]] == ["1", "2", "3", "4", "5"]
    voters = [await api.join(room["code"]) for _ in range(4)]
    for voter, value in zip(voters[:3], [5, 4, 4], strict=True):
        await counted(api, voter, poll["id"], value=value)
    status, body = await send(api, voters[3], poll["id"], value=6)
    assert status == 422 and body["error"]["code"] == "invalid_value"
    status, body = await send(api, voters[3], poll["id"], value="five")
    assert status == 400 and body["error"]["code"] == "invalid_field"

    results = await api.results(poll["id"])
    assert results["kind"] == "rating" and results["total_votes"] == 3
    assert [o["votes"] for o in results["options"]] == [0, 0, 0, 2, 1]
    assert results["average"] == 4.33

    status, bad = await api.call(
        "POST",
        f"/api/v1/rooms/{room['id']}/polls",
        json={"question": "?", "kind": "rating", "scale": 7},
        headers=api.admin,
    )
    assert status == 422 and bad["error"]["code"] == "invalid_scale"


async def test_word_cloud_counts_words_and_hides_blocked_ones(api: Api) -> None:
    room = await api.room()
    poll = await make_poll(
        api, room["id"], kind="text", blocked_words="boring, meh", allow_change=True
    )
    assert poll["blocked_words"] == ["boring", "meh"]
    a, b, c = [await api.join(room["code"]) for _ in range(3)]
    await counted(api, a, poll["id"], text="Great talk, great demo")
    await counted(api, b, poll["id"], text="  great   DEMO and more ")
    await counted(api, c, poll["id"], text="boring")
    words = {w["word"]: w["count"] for w in (await api.results(poll["id"]))["words"]}
    assert words == {"great": 2, "talk": 1, "demo": 2, "and": 1, "more": 1}

    # A changed answer replaces its words; a blocked word added later disappears at once.
    await counted(api, b, poll["id"], text="Great questions from the hall")
    status, _ = await api.call(
        "PATCH",
        f"/api/v1/polls/{poll['id']}",
        json={"blocked_words": ["boring", "meh", "talk"]},
        headers=api.admin,
    )
    assert status == 200
    results = await api.results(poll["id"])
    assert {w["word"]: w["count"] for w in results["words"]} == {
        "great": 2,
        "demo": 1,
        "questions": 1,
        "from": 1,
        "the": 1,
        "hall": 1,
    }
    assert results["total_votes"] == 3

    status, body = await send(api, a, poll["id"], text="x" * 81)
    assert status == 422 and body["error"]["code"] == "too_long"
    status, body = await send(api, a, poll["id"], option_ids=["nope"])
    assert status == 400


async def test_a_short_answer_is_one_phrase_and_emoji_count(api: Api) -> None:
    """A short answer (up to three words) stays one entry of the cloud, "New York" whatever
    its case and punctuation; an answer of emoji alone counts too; a phrase holding a blocked
    word is hidden."""
    room = await api.room()
    poll = await make_poll(api, room["id"], kind="text", blocked_words="rude")
    answers = ["New York", "new york!", "  New   YORK ", "🎉", "🎉", "👍🏽", "ニューヨーク"]
    for answer in [*answers, "so rude"]:
        await counted(api, await api.join(room["code"]), poll["id"], text=answer)
    words = {w["word"]: w["count"] for w in (await api.results(poll["id"]))["words"]}
    assert words == {"new york": 3, "🎉": 2, "👍🏽": 1, "ニューヨーク": 1}


async def test_questions_upvotes_and_moderation(api: Api) -> None:
    room = await api.room()
    poll = await make_poll(api, room["id"], kind="qa")
    alice, bob, carol = [await api.join(room["code"]) for _ in range(3)]
    first = await counted(api, alice, poll["id"], text="Will the slides be online?")
    second = await counted(api, bob, poll["id"], text="What about mobile?")
    await counted(api, alice, poll["id"], text="A second question is fine")
    for voter in (alice, carol):
        await counted(api, voter, poll["id"], upvote=second)
    status, body = await send(api, carol, poll["id"], upvote=second)
    assert status == 409 and body["error"]["code"] == "already_voted"
    status, body = await send(api, carol, poll["id"], upvote="no-such-question")
    assert status == 404 and body["error"]["code"] == "question_not_found"

    status, results = await public_results(api, carol, poll["id"])
    assert status == 200 and results["total_votes"] == 3
    assert [(q["id"], q["upvotes"]) for q in results["questions"]][:2] == [(second, 2), (first, 0)]

    # The host pins one, marks it answered, hides another: attendees stop seeing it.
    status, pinned = await api.call(
        "PATCH",
        f"/api/v1/questions/{first}",
        json={"pinned": True, "answered": True},
        headers=api.admin,
    )
    assert status == 200 and pinned["pinned"] and pinned["answered"]
    status, _ = await api.call(
        "PATCH", f"/api/v1/questions/{second}", json={"status": "hidden"}, headers=api.admin
    )
    assert status == 200
    _, results = await public_results(api, carol, poll["id"])
    assert results["questions"][0]["id"] == first
    assert second not in [q["id"] for q in results["questions"]]
    status, everything = await api.call(
        "GET", f"/api/v1/polls/{poll['id']}/questions", headers=api.admin
    )
    assert status == 200 and {q["status"] for q in everything["questions"]} == {"visible", "hidden"}
    # A hidden question takes no more upvotes: the worker's receipt says why.
    status, answer = await send(api, bob, poll["id"], upvote=second)
    assert status == 202
    receipt = await api.settled(bob, answer["event_id"])
    assert receipt == {
        "event_id": answer["event_id"],
        "status": "rejected",
        "reason": "question_hidden",
    }


async def test_moderated_questions_wait_for_the_host(api: Api) -> None:
    room = await api.room()
    poll = await make_poll(api, room["id"], kind="qa", moderated=True)
    asker = await api.join(room["code"])
    question = await counted(api, asker, poll["id"], text="Is this on?")
    _, results = await public_results(api, asker, poll["id"])
    assert results["questions"] == []
    host_view = await api.results(poll["id"])
    assert [(q["id"], q["status"]) for q in host_view["questions"]] == [(question, "pending")]
    status, _ = await api.call(
        "PATCH", f"/api/v1/questions/{question}", json={"status": "visible"}, headers=api.admin
    )
    assert status == 200
    _, results = await public_results(api, asker, poll["id"])
    assert [q["text"] for q in results["questions"]] == ["Is this on?"]


async def test_a_qa_counts_the_questions_its_audience_sees(api: Api) -> None:
    """`total_votes` of a Q&A is the visible questions, for every reader; the host finds the
    pending and hidden ones in `question_count` and in the questions' list."""
    room = await api.room()
    poll = await make_poll(api, room["id"], kind="qa")
    askers = [await api.join(room["code"]) for _ in range(4)]  # 3 questions a minute each
    asked = [await counted(api, a, poll["id"], text=f"Question {n}?") for n, a in enumerate(askers)]
    asker = askers[-1]
    status, _ = await api.call(
        "PATCH", f"/api/v1/questions/{asked[0]}", json={"status": "hidden"}, headers=api.admin
    )
    assert status == 200
    await api.call(
        "PATCH", f"/api/v1/polls/{poll['id']}", json={"moderated": True}, headers=api.admin
    )
    await counted(api, asker, poll["id"], text="Still pending?")

    _, seen = await public_results(api, asker, poll["id"])
    assert (seen["total_votes"], seen["question_count"], len(seen["questions"])) == (3, 3, 3)
    host = await api.results(poll["id"])
    assert (host["total_votes"], host["question_count"], len(host["questions"])) == (3, 5, 5)
    _, attendee_room = await api.call(
        "GET", f"/api/v1/rooms/{room['id']}", headers=asker["headers"]
    )
    assert attendee_room["polls"][0]["total_votes"] == 3
    _, host_poll = await api.call("GET", f"/api/v1/polls/{poll['id']}", headers=api.admin)
    assert host_poll["total_votes"] == 3


async def test_quiz_points_leaderboard_and_hidden_answers(api: Api) -> None:
    room = await api.room()
    quiz = await make_poll(
        api,
        room["id"],
        kind="quiz",
        options=["Paris", "Lyon", "Nice"],
        correct=[0],
        time_limit_s=60,
    )
    assert quiz["deadline"].endswith("Z")  # UTC, like every other time
    paris, lyon, _ = (o["id"] for o in quiz["options"])
    fast, slow, wrong = [await api.join(room["code"]) for _ in range(3)]
    await counted(api, fast, quiz["id"], option_ids=[paris])
    await asyncio.sleep(1.2)
    await counted(api, slow, quiz["id"], option_ids=[paris])
    await counted(api, wrong, quiz["id"], option_ids=[lyon])

    # While it is open, attendees see neither the right answer nor the leaderboard.
    status, room_view = await api.call(
        "GET", f"/api/v1/rooms/{room['id']}", headers=fast["headers"]
    )
    assert status == 200 and "correct" not in room_view["polls"][0]["options"][0]
    _, results = await public_results(api, fast, quiz["id"])
    assert "correct" not in results["options"][0] and results["leaderboard"] == []

    status, _ = await api.call("POST", f"/api/v1/polls/{quiz['id']}/close", headers=api.admin)
    assert status == 200
    _, results = await public_results(api, fast, quiz["id"])
    assert [o["correct"] for o in results["options"]] == [True, False, False]
    board = results["leaderboard"]
    assert [row["name"] for row in board] == [fast["name"], slow["name"], wrong["name"]]
    assert board[0]["points"] > board[1]["points"] >= 500 and board[2]["points"] == 0
    assert [row["correct"] for row in board] == [1, 1, 0]
    status, same = await api.call(
        "GET", f"/api/v1/rooms/{room['id']}/leaderboard", headers=wrong["headers"]
    )
    assert status == 200 and same["leaderboard"] == board


async def test_quiz_with_two_right_options_scores_either(api: Api) -> None:
    room = await api.room()
    quiz = await make_poll(
        api, room["id"], kind="quiz", options=["2", "3", "4"], correct=[0, 1], time_limit_s=None
    )
    two, three, four = (o["id"] for o in quiz["options"])
    voters = [await api.join(room["code"]) for _ in range(3)]
    for voter, choice in zip(voters, [two, three, four], strict=True):
        await counted(api, voter, quiz["id"], option_ids=[choice])
    await api.call("POST", f"/api/v1/polls/{quiz['id']}/close", headers=api.admin)
    board = (await api.results(quiz["id"]))["leaderboard"]
    assert sorted(row["points"] for row in board) == [0, 1000, 1000]


async def test_closing_a_qa_tells_the_askers(api: Api) -> None:
    room = await api.room()
    qa = await make_poll(api, room["id"], kind="qa")
    asker, silent = await api.join(room["code"]), await api.join(room["code"])
    await counted(api, asker, qa["id"], text="One?")
    await counted(api, asker, qa["id"], text="Two?")
    await api.call("POST", f"/api/v1/polls/{qa['id']}/close", headers=api.admin)
    for _ in range(100):
        _, inbox = await api.call("GET", "/api/v1/notifications", headers=asker["headers"])
        closed = [n for n in inbox["notifications"] if n["type"] == "poll_closed"]
        if closed:
            break
        await asyncio.sleep(0.05)
    assert [n["message"] for n in closed] == ["2 questions asked."]
    _, inbox = await api.call("GET", "/api/v1/notifications", headers=silent["headers"])
    assert not [n for n in inbox["notifications"] if n["type"] == "poll_closed"]


async def test_quiz_refuses_answers_after_its_time_limit(api: Api) -> None:
    room = await api.room()
    quiz = await make_poll(
        api, room["id"], kind="quiz", options=["A", "B"], correct=[1], time_limit_s=5
    )
    late = await api.join(room["code"])
    await asyncio.sleep(5 + 1.2)  # the limit and its grace
    status, body = await send(api, late, quiz["id"], option_ids=[quiz["options"][1]["id"]])
    assert status == 409 and body["error"]["code"] == "time_up"


async def test_host_manages_rooms_and_polls(api: Api) -> None:
    room = await api.room("Monday")
    single = await make_poll(api, room["id"], open=False, kind="single", options=["A", "B"])
    quiz = await make_poll(
        api, room["id"], open=False, kind="quiz", options=["X", "Y"], correct=[1], time_limit_s=30
    )
    cloud = await make_poll(api, room["id"], open=False, kind="text", blocked_words=["rude"])

    # Edit a draft, reorder, rename.
    status, edited = await api.call(
        "PATCH",
        f"/api/v1/polls/{single['id']}",
        json={"question": "Which?", "options": ["A", "B", "C"]},
        headers=api.admin,
    )
    assert status == 200 and [o["label"] for o in edited["options"]] == ["A", "B", "C"]
    order = [cloud["id"], single["id"], quiz["id"]]
    status, reordered = await api.call(
        "PUT", f"/api/v1/rooms/{room['id']}/order", json={"poll_ids": order}, headers=api.admin
    )
    assert status == 200 and [p["id"] for p in reordered["polls"]] == order
    status, body = await api.call(
        "PUT", f"/api/v1/rooms/{room['id']}/order", json={"poll_ids": order[:2]}, headers=api.admin
    )
    assert status == 422 and body["error"]["code"] == "invalid_order"
    status, renamed = await api.call(
        "PATCH", f"/api/v1/rooms/{room['id']}", json={"title": "Tuesday"}, headers=api.admin
    )
    assert status == 200 and renamed["title"] == "Tuesday"

    # An open poll keeps its shape but its results can be hidden and shown again.
    status, _ = await api.call("POST", f"/api/v1/polls/{single['id']}/open", headers=api.admin)
    status, body = await api.call(
        "PATCH", f"/api/v1/polls/{single['id']}", json={"question": "Changed?"}, headers=api.admin
    )
    assert status == 409 and body["error"]["code"] == "poll_not_draft"
    voter = await api.join(room["code"])
    await counted(api, voter, single["id"], option_ids=[edited["options"][2]["id"]])
    status, _ = await api.call(
        "PATCH", f"/api/v1/polls/{single['id']}", json={"hide_results": True}, headers=api.admin
    )
    status, body = await public_results(api, voter, single["id"])
    assert status == 403 and body["error"]["code"] == "results_hidden"

    # Duplicate as a template: same polls, all drafts, no votes, a new code.
    status, copy = await api.call(
        "POST", f"/api/v1/rooms/{room['id']}/duplicate", json={}, headers=api.admin
    )
    assert status == 201 and copy["code"] != room["code"] and copy["title"] == "Tuesday (copy)"
    assert [(p["kind"], p["status"], p["total_votes"]) for p in copy["polls"]] == [
        ("text", "draft", 0),
        ("single", "draft", 0),
        ("quiz", "draft", 0),
    ]
    assert copy["polls"][0]["blocked_words"] == ["rude"]
    assert [o.get("correct") for o in copy["polls"][2]["options"]] == [False, True]
    status, listing = await api.call("GET", "/api/v1/rooms", headers=api.admin)
    assert status == 200 and [r["title"] for r in listing["rooms"]] == ["Tuesday (copy)", "Tuesday"]

    # Deleting a poll, then the room: their votes are refused, the room is gone.
    status, _ = await api.call("DELETE", f"/api/v1/polls/{single['id']}", headers=api.admin)
    assert status == 200
    status, body = await send(api, voter, single["id"], option_ids=[edited["options"][0]["id"]])
    assert status == 404
    status, _ = await api.call("DELETE", f"/api/v1/rooms/{room['id']}", headers=api.admin)
    assert status == 200
    status, body = await api.call("GET", f"/api/v1/rooms/{room['id']}", headers=api.admin)
    assert status == 404 and body["error"]["code"] == "room_not_found"
    status, body = await api.call("POST", "/api/v1/join", json={"code": room["code"]})
    assert status == 404


async def test_kinds_survive_a_restart(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    """The in-memory checks come back from SQLite: a second upvote stays refused, a quiz's
    clock keeps running, a word cloud keeps its words."""
    server.start()
    api = Api(http, server.base)
    room = await api.room()
    qa = await make_poll(api, room["id"], kind="qa")
    cloud = await make_poll(api, room["id"], kind="text")
    quiz = await make_poll(
        api, room["id"], kind="quiz", options=["A", "B"], correct=[0], time_limit_s=600
    )
    voter = await api.join(room["code"])
    question = await counted(api, voter, qa["id"], text="Why?")
    await counted(api, voter, qa["id"], upvote=question)
    await counted(api, voter, cloud["id"], text="hello world, hello you")
    assert server.terminate() == 0
    server.start()
    async with aiohttp.ClientSession() as fresh:  # the old connections died with the server
        api = Api(fresh, server.base)
        status, body = await send(api, voter, qa["id"], upvote=question)
        assert status == 409 and body["error"]["code"] == "already_voted"
        status, body = await send(api, voter, cloud["id"], text="again")
        assert status == 409 and body["error"]["code"] == "already_voted"
        results = await api.results(cloud["id"])
        assert {w["word"] for w in results["words"]} == {"hello", "world", "you"}
        await counted(api, voter, quiz["id"], option_ids=[quiz["options"][0]["id"]])


async def test_live_frames_keep_host_only_details_from_attendees(
    api: Api, client: TestClient
) -> None:
    """A projector (attendee view) never receives a pending question or a quiz's right answer
    before it closes; the host's socket gets both."""
    room = await api.room()
    qa = await make_poll(api, room["id"], kind="qa", moderated=True)
    asker = await api.join(room["code"])
    async with (
        client.ws_connect(f"/ws?room={room['code']}") as screen,
        client.ws_connect(
            f"/ws?room={room['id']}", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as host,
    ):
        await next_of(screen, "snapshot")
        await next_of(host, "snapshot")
        question = await counted(api, asker, qa["id"], text="Pending?")
        host_results = await next_of(host, "results")
        while not host_results["questions"]:  # a frame from the poll's opening came first
            host_results = await next_of(host, "results")
        assert [q["id"] for q in host_results["questions"]] == [question]
        # Every frame the screen got meanwhile (the same ones, coalesced) lacks it.
        while True:
            try:
                early = await screen.receive_json(timeout=0.5)
            except TimeoutError:
                break
            assert early["type"] != "results" or early["questions"] == []
        await api.call(
            "PATCH", f"/api/v1/questions/{question}", json={"status": "visible"}, headers=api.admin
        )
        while True:  # the screen's first frame may still be the one without the question
            screen_results = await next_of(screen, "results")
            if screen_results["questions"]:
                break
        assert [q["status"] for q in screen_results["questions"]] == ["visible"]

        quiz = await make_poll(api, room["id"], kind="quiz", options=["A", "B"], correct=[1])
        opened = await next_of(screen, "poll")
        while opened["poll_id"] != quiz["id"] or opened["status"] != "open":
            opened = await next_of(screen, "poll")
        assert all("correct" not in o for o in opened["poll"]["options"])
        host_opened = await next_of(host, "poll")
        while host_opened["poll_id"] != quiz["id"] or host_opened["status"] != "open":
            host_opened = await next_of(host, "poll")
        assert [o["correct"] for o in host_opened["poll"]["options"]] == [False, True]


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        message = await ws.receive_json(timeout=10)
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def test_kiosk_screen_follows_the_newest_room(api: Api, client: TestClient) -> None:
    """`/screen` (the kiosk unit's page) waits for a room, then shows the newest one."""
    async with client.get("/screen", allow_redirects=False) as waiting:
        assert waiting.status == 200 and waiting.headers["Refresh"] == "5"
        assert "Waiting for a room" in await waiting.text()
    await api.room("Older")
    newest = await api.room("Newest")
    async with client.get("/screen", allow_redirects=False) as found:
        assert found.status == 302 and found.headers["Location"] == f"/screen/{newest['code']}"
