"""The HTTP API as a host and attendees use it, against a real server and real SQLite files."""

from __future__ import annotations

import csv
import io
import re
import uuid

from conftest import ADMIN, Api


async def test_room_poll_vote_round_trip(api: Api) -> None:
    room = await api.room("Lecture 1")
    assert len(room["code"]) == 8 and room["polls"] == []
    poll = await api.poll(room["id"], ["Tea", "Coffee"])
    assert poll["status"] == "open"
    tea, coffee = (o["id"] for o in poll["options"])

    voters = [await api.join(room["code"]) for _ in range(3)]
    for voter, choice in zip(voters, [tea, coffee, coffee], strict=True):
        status, body = await api.vote(voter, poll["id"], [choice])
        assert status == 202, body
        assert body["status"] == "accepted"
        assert (await api.settled(voter, body["event_id"]))["status"] == "counted"

    results = await api.results(poll["id"])
    assert results["total_votes"] == 3
    assert [(o["label"], o["votes"]) for o in results["options"]] == [("Tea", 1), ("Coffee", 2)]

    status, closed = await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
    assert status == 200 and closed["status"] == "closed"
    status, body = await api.vote(await api.join(room["code"]), poll["id"], [tea])
    assert status == 409 and body["error"]["code"] == "poll_not_open"

    status, room_view = await api.call("GET", f"/api/v1/rooms/{room['id']}", headers=api.admin)
    assert status == 200 and room_view["polls"][0]["total_votes"] == 3

    status, export = await api.call(
        "GET", f"/api/v1/polls/{poll['id']}/export?format=json", headers=api.admin
    )
    assert status == 200
    assert export["results"]["total_votes"] == 3
    assert sorted(v["voter_id"] for v in export["votes"]) == sorted(v["voter_id"] for v in voters)

    status, text = await api.call(
        "GET", f"/api/v1/polls/{poll['id']}/export?format=csv", headers=api.admin
    )
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["option_label"] for r in rows if r["record"] == "vote"].count("Coffee") == 2
    assert {r["option_label"]: r["votes"] for r in rows if r["record"] == "result"} == {
        "Tea": "1",
        "Coffee": "2",
    }


async def test_multiple_choice_counts_each_option(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], ["A", "B", "C"], kind="multiple")
    a, b, c = (o["id"] for o in poll["options"])
    for choice in ([a, b], [b, c], [a, b, c]):
        status, _ = await api.vote(await api.join(room["code"]), poll["id"], choice)
        assert status == 202
    results = await api.total_when(poll["id"], 3)
    assert results["total_votes"] == 3
    assert [o["votes"] for o in results["options"]] == [2, 3, 2]


async def test_event_id_is_the_idempotency_key(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    first, second = (o["id"] for o in poll["options"][:2])
    voter = await api.join(room["code"])
    event_id = str(uuid.uuid4())
    for _ in range(3):
        status, body = await api.vote(voter, poll["id"], [first], event_id=event_id)
        assert (status, body["event_id"]) == (202, event_id)
    status, body = await api.vote(voter, poll["id"], [second], event_id=event_id)
    assert status == 409 and body["error"]["code"] == "event_id_conflict"
    status, body = await api.vote(voter, poll["id"], [second])
    assert status == 409 and body["error"]["code"] == "already_voted"
    assert (await api.settled(voter, event_id))["status"] == "counted"
    assert (await api.results(poll["id"]))["total_votes"] == 1
    # A retry whose first answer was lost still gets 202 after the poll closed...
    await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
    status, body = await api.vote(voter, poll["id"], [first], event_id=event_id)
    assert (status, body["event_id"]) == (202, event_id)
    # ...and the receipt takes the id however it is spelled.
    assert (await api.receipt(voter, event_id.replace("-", "").upper()))["status"] == "counted"
    assert (await api.results(poll["id"]))["total_votes"] == 1


async def test_changing_ones_vote_when_the_poll_allows_it(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], ["Yes", "No"], allow_change=True)
    yes, no = (o["id"] for o in poll["options"])
    voter = await api.join(room["code"])
    _, first = await api.vote(voter, poll["id"], [yes])
    await api.settled(voter, first["event_id"])
    status, second = await api.vote(voter, poll["id"], [no])
    assert status == 202
    assert (await api.settled(voter, second["event_id"]))["status"] == "counted"
    results = await api.results(poll["id"])
    assert results["total_votes"] == 1
    assert [o["votes"] for o in results["options"]] == [0, 1]
    old = await api.receipt(voter, first["event_id"])
    assert old == {"event_id": first["event_id"], "status": "rejected", "reason": "replaced"}


async def test_hidden_results_until_the_poll_closes(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], hide_results=True)
    status, body = await api.call("GET", f"/api/v1/polls/{poll['id']}/results")
    assert status == 403 and body["error"]["code"] == "results_hidden"
    assert (await api.results(poll["id"]))["status"] == "open"  # the host still sees them
    await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
    status, body = await api.call("GET", f"/api/v1/polls/{poll['id']}/results")
    assert status == 200 and body["status"] == "closed"


async def test_join_by_code_as_people_type_it(api: Api) -> None:
    room = await api.room()
    typed = f"{room['code'][:4].lower()}-{room['code'][4:]}"
    voter = await api.join(typed)
    assert voter["room_id"] == room["id"]
    status, body = await api.call("POST", "/api/v1/join", json={"code": "NOPE-NOPE"})
    assert status == 404 and body["error"]["code"] == "room_not_found"


async def test_voter_cookie_works_like_the_token(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    status, _ = await api.call("POST", "/api/v1/join", json={"code": room["code"]})
    assert status == 201  # the test client keeps the cookie, as a browser would
    status, body = await api.call(
        "POST", f"/api/v1/polls/{poll['id']}/votes", json={"option_ids": [poll["options"][0]["id"]]}
    )
    assert status == 202, body
    status, view = await api.call("GET", f"/api/v1/rooms/{room['id']}")
    assert status == 200 and [p["id"] for p in view["polls"]] == [poll["id"]]
    # Scanning the QR code again keeps the same voter: no second vote that way.
    status, again = await api.call("POST", "/api/v1/join", json={"code": room["code"]})
    assert status == 201
    status, body = await api.call(
        "POST",
        f"/api/v1/polls/{poll['id']}/votes",
        json={"option_ids": [poll["options"][1]["id"]]},
        headers={"Authorization": f"Bearer {again['voter_token']}"},
    )
    assert status == 409 and body["error"]["code"] == "already_voted"


async def test_attendees_do_not_see_draft_polls(api: Api) -> None:
    room = await api.room()
    draft = await api.poll(room["id"], open=False)
    status, _ = await api.call("GET", f"/api/v1/polls/{draft['id']}/results")
    assert status == 404
    voter = await api.join(room["code"])
    status, view = await api.call("GET", f"/api/v1/rooms/{room['id']}", headers=voter["headers"])
    assert status == 200 and view["polls"] == []
    status, body = await api.vote(voter, draft["id"], [draft["options"][0]["id"]])
    assert status == 404 and body["error"]["code"] == "poll_not_found"


async def test_every_api_error_is_the_contract_json(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    other_room = await api.room("Other")
    other_poll = await api.poll(other_room["id"])
    voter = await api.join(room["code"])
    option = poll["options"][0]["id"]
    api.forget_cookies()  # only the headers below speak for the caller
    bad_admin = {"Authorization": "Bearer wrong"}
    cases = [
        (("POST", "/api/v1/rooms"), {"json": {"title": "x"}}, 401, "unauthorized"),
        (
            ("POST", "/api/v1/rooms"),
            {"json": {"title": "x"}, "headers": bad_admin},
            401,
            "bad_token",
        ),
        (
            ("POST", "/api/v1/rooms"),
            {"json": {"title": "x"}, "headers": voter["headers"]},
            403,
            "forbidden",
        ),
        (
            ("POST", f"/api/v1/polls/{poll['id']}/votes"),
            {"json": {"option_ids": [option]}, "headers": api.admin},
            403,
            "forbidden",
        ),
        (
            ("POST", f"/api/v1/polls/{poll['id']}/votes"),
            {"json": {"option_ids": [option]}},
            401,
            "unauthorized",
        ),
        (("GET", "/api/v1/rooms/nope"), {"headers": api.admin}, 404, "room_not_found"),
        (("POST", "/api/v1/polls/nope/open"), {"headers": api.admin}, 404, "poll_not_found"),
        (("GET", "/api/v1/nothing-here"), {}, 404, "not_found"),
        (("DELETE", "/api/v1/rooms"), {}, 405, "method_not_allowed"),
        (
            ("POST", "/api/v1/rooms"),
            {"data": b"{not json", "headers": api.admin},
            400,
            "invalid_json",
        ),
        (
            ("POST", "/api/v1/rooms"),
            {"json": ["a list"], "headers": api.admin},
            400,
            "invalid_json",
        ),
        (
            ("POST", "/api/v1/rooms"),
            {"json": {"title": "x" * 201}, "headers": api.admin},
            422,
            "too_long",
        ),
        (
            ("POST", "/api/v1/rooms"),
            {"json": {"title": 5}, "headers": api.admin},
            400,
            "invalid_field",
        ),
        (
            ("POST", f"/api/v1/rooms/{room['id']}/polls"),
            {"json": {"question": "q", "options": "a, b"}, "headers": api.admin},
            400,
            "invalid_field",
        ),
        (
            ("POST", f"/api/v1/rooms/{room['id']}/polls"),
            {
                "json": {"question": "q", "options": ["a", "b"], "allow_change": "yes"},
                "headers": api.admin,
            },
            400,
            "invalid_field",
        ),
        (
            ("POST", f"/api/v1/rooms/{room['id']}/polls"),
            {"json": {"question": "q", "options": ["only one"]}, "headers": api.admin},
            422,
            "option_count",
        ),
        (
            ("POST", f"/api/v1/rooms/{room['id']}/polls"),
            {
                "json": {"question": "q", "options": ["a", "b"], "kind": "poem"},
                "headers": api.admin,
            },
            422,
            "invalid_kind",
        ),
        (
            ("POST", f"/api/v1/rooms/{room['id']}/polls"),
            {
                "json": {"question": "q", "options": [f"o{i}" for i in range(31)]},
                "headers": api.admin,
            },
            422,
            "option_count",
        ),
        (
            ("POST", "/api/v1/rooms"),
            {"data": b"x" * 70_000, "headers": api.admin},
            413,
            "body_too_large",
        ),
        (
            ("POST", f"/api/v1/polls/{poll['id']}/votes"),
            {"json": {"option_ids": "not a list"}, "headers": voter["headers"]},
            400,
            "invalid_field",
        ),
        (
            ("POST", f"/api/v1/polls/{poll['id']}/votes"),
            {
                "json": {"option_ids": [option], "event_id": "not-a-uuid"},
                "headers": voter["headers"],
            },
            400,
            "invalid_field",
        ),
        (
            ("POST", f"/api/v1/polls/{poll['id']}/votes"),
            {"json": {"option_ids": [other_poll["options"][0]["id"]]}, "headers": voter["headers"]},
            422,
            "invalid_option",
        ),
        (
            ("POST", f"/api/v1/polls/{poll['id']}/votes"),
            {
                "json": {"option_ids": [o["id"] for o in poll["options"]]},
                "headers": voter["headers"],
            },
            422,
            "too_many_options",
        ),
        (
            ("POST", f"/api/v1/polls/{other_poll['id']}/votes"),
            {"json": {"option_ids": [other_poll["options"][0]["id"]]}, "headers": voter["headers"]},
            403,
            "wrong_room",
        ),
        (
            ("POST", "/api/v1/polls/nope/votes"),
            {"json": {"option_ids": [option]}, "headers": voter["headers"]},
            404,
            "poll_not_found",
        ),
        (
            ("GET", f"/api/v1/votes/{uuid.uuid4()}"),
            {"headers": voter["headers"]},
            404,
            "vote_not_found",
        ),
        (
            ("GET", f"/api/v1/polls/{poll['id']}/export?format=xml"),
            {"headers": api.admin},
            400,
            "invalid_format",
        ),
        (("POST", "/api/v1/join"), {"json": {"code": 12}}, 400, "invalid_field"),
        (
            ("POST", "/api/v1/notifications/99999999999999999999999/read"),
            {"headers": voter["headers"]},
            404,
            "notification_not_found",
        ),
        (
            ("POST", "/api/v1/notifications/%C2%B2/read"),
            {"headers": voter["headers"]},
            404,
            "notification_not_found",
        ),
    ]
    for (method, path), kwargs, status, code in cases:
        got, body = await api.call(method, path, **kwargs)
        assert isinstance(body, dict) and "error" in body, (method, path, got, body)
        assert (got, body["error"]["code"]) == (status, code), (method, path, body)
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_someone_elses_receipt_is_not_shown(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    alice, bob = await api.join(room["code"]), await api.join(room["code"])
    _, body = await api.vote(alice, poll["id"], [poll["options"][0]["id"]])
    status, _ = await api.call("GET", f"/api/v1/votes/{body['event_id']}", headers=bob["headers"])
    assert status == 404


async def test_guessing_room_codes_is_slowed_down(api: Api) -> None:
    for _ in range(300):
        status, _ = await api.call("POST", "/api/v1/join", json={"code": "AAAA-AAAA"})
        assert status == 404
    async with api.client.request("POST", "/api/v1/join", json={"code": "AAAA-AAAA"}) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) > 0
        assert (await r.json())["error"]["code"] == "too_many_requests"


async def test_health_and_metrics(api: Api) -> None:
    status, body = await api.call("GET", "/healthz")
    assert status == 200 and body["status"] == "ok"
    room = await api.room()
    poll = await api.poll(room["id"])
    voter = await api.join(room["code"])
    await api.vote(voter, poll["id"], [poll["options"][0]["id"]])
    await api.vote(voter, poll["id"], [poll["options"][1]["id"]])
    await api.total_when(poll["id"], 1)
    status, text = await api.call("GET", "/metrics")
    assert status == 200
    assert "opus_votes_accepted_total 1.0" in text
    assert 'opus_votes_rejected_total{reason="already_voted"} 1.0' in text
    for name in (
        "opus_queue_depth",
        "opus_group_commit_size_bucket",
        "opus_worker_batch_size_bucket",
        "opus_worker_apply_seconds_bucket",
        "opus_accept_to_counted_seconds_bucket",
        "opus_http_request_seconds_bucket",
    ):
        assert name in text
    assert 'route="/api/v1/polls/{poll_id}/votes"' in text


async def test_admin_token_is_kept_in_the_data_dir(tmp_path: object) -> None:
    from pathlib import Path

    from opus.auth import load_admin_token

    data = Path(str(tmp_path)) / "d"
    token, path = load_admin_token(data, None)
    assert path == data / "admin_token" and path.stat().st_mode & 0o777 == 0o600
    assert load_admin_token(data, None) == (token, path)
    assert load_admin_token(data, ADMIN) == (ADMIN, None)


async def test_venue_calls_on_a_box_that_serves_alone_say_so(api: Api) -> None:
    for path in ("/api/v1/venue", "/api/v1/venue/log"):
        status, body = await api.call("GET", path, headers=api.admin)
        assert status == 404 and body["error"]["code"] == "not_a_venue", (path, body)


async def test_a_rooms_theme_and_accent(api: Api) -> None:
    """The host picks the projector's and the phones' colours; a room made with a title alone
    keeps the look every page had before (a dark projector, light phones, indigo buttons)."""
    room = await api.room("Plain")
    assert (room["theme"], room["accent"]) == ("auto", "#4338ca")
    pages = {
        "screen": f"/screen/{room['code']}",
        "phone": f"/j/{room['code']}",
        "polls": f"/j/{room['code']}/polls",
    }
    for path in pages.values():
        _, html = await api.call("GET", path)
        assert "--accent" not in html and "data-look " not in html, path
    _, html = await api.call("GET", pages["screen"])
    assert '<html lang="en" dir="ltr" data-theme="dark">' in html

    path = f"/api/v1/rooms/{room['id']}"
    status, changed = await api.call(
        "PATCH", path, json={"theme": "light", "accent": "#0F766E"}, headers=api.admin
    )
    assert status == 200, changed
    assert (changed["title"], changed["theme"], changed["accent"]) == ("Plain", "light", "#0f766e")
    _, html = await api.call("GET", pages["screen"])
    assert re.search(
        r'data-theme="light" data-look(="")? style="--accent: #0f766e; --accent-ink: #ffffff', html
    )
    status, changed = await api.call("PATCH", path, json={"theme": "dark"}, headers=api.admin)
    assert (changed["theme"], changed["accent"]) == ("dark", "#0f766e")  # only what was sent

    for body in (
        {"accent": "red"},
        {"accent": "#fff"},
        {"accent": "#12345g"},
        {"accent": "0f766e"},
        {"accent": "#0f766e "},
        {"theme": "neon"},
        {"theme": "Light"},
    ):
        status, refused = await api.call("PATCH", path, json=body, headers=api.admin)
        assert status == 422 and refused["error"]["code"] == "invalid_field", (body, refused)
    status, refused = await api.call("PATCH", path, json={"accent": 4338}, headers=api.admin)
    assert status == 400 and refused["error"]["code"] == "invalid_field"  # not even a string
    _, kept = await api.call("GET", path, headers=api.admin)
    assert (kept["theme"], kept["accent"]) == ("dark", "#0f766e")

    status, made = await api.call(
        "POST",
        "/api/v1/rooms",
        json={"title": "Bright hall", "theme": "light", "accent": "#ffd400"},
        headers=api.admin,
    )
    assert status == 201 and (made["theme"], made["accent"]) == ("light", "#ffd400")
    status, refused = await api.call(
        "POST", "/api/v1/rooms", json={"title": "Bad", "accent": "yellow"}, headers=api.admin
    )
    assert status == 422 and refused["error"]["code"] == "invalid_field"
    status, copy = await api.call(
        "POST", f"/api/v1/rooms/{made['id']}/duplicate", headers=api.admin
    )
    assert status == 201 and (copy["theme"], copy["accent"]) == ("light", "#ffd400")
