"""Small holes an attendee with a laptop could use, each closed: what the attack did, and that it
no longer works. Client addresses other than loopback come through a trusted proxy's
X-Forwarded-For, as behind a reverse proxy."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from conftest import ADMIN, Api, ServerProcess
from opus import events
from opus.answers import QUESTIONS_SHOWN
from opus.app import create_app
from opus.config import Settings
from opus.ingest import ASKS_PER_MINUTE, QUESTIONS_PER_VOTER


def _origin(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def _csrf(client: TestClient, path: str) -> str:
    async with client.get(path) as r:
        found = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert found is not None
    return found.group(1)


async def _log_in(client: TestClient) -> None:
    csrf = await _csrf(client, "/host/login")
    async with client.post(
        "/host/login",
        data={"csrf": csrf, "token": ADMIN},
        headers={"Origin": _origin(client)},
        allow_redirects=False,
    ) as r:
        assert r.status == 303


async def test_control_characters_in_the_next_target_go_to_the_console(client: TestClient) -> None:
    csrf = await _csrf(client, "/host/login")
    for target in (
        "/host\r\nSet-Cookie: x=1",
        "/host/\x00rooms",
        "/host/\x7frooms",
        "/host/r\u00e9sum\u00e9\nx",
    ):
        async with client.post(
            "/host/login",
            data={"csrf": csrf, "token": ADMIN, "next": target},
            headers={"Origin": _origin(client)},
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/host", r.headers
            assert "x=1" not in r.headers.get("Set-Cookie", "")


async def test_deeply_nested_json_is_a_clear_400(api: Api) -> None:
    room = await api.room()
    deep = "[" * 20_000 + "]" * 20_000
    for body, code in (
        ("[" * 30_000, "invalid_json"),
        ('{"code": "X", "extra": ' + deep + "}", "invalid_json"),
        ('{"code": ' + deep + "}", "invalid_field"),  # refused at the first bracket
    ):
        status, answer = await api.call(
            "POST", "/api/v1/join", data=body, headers={"Content-Type": "application/json"}
        )
        assert status == 400 and answer["error"]["code"] == code, answer
    assert (await api.join(room["code"]))["voter_id"]  # the server is fine


async def test_a_form_from_another_port_of_the_same_host_is_refused(client: TestClient) -> None:
    csrf = await _csrf(client, "/host/login")
    other = _origin(client).rsplit(":", 1)[0] + ":1"  # another server on the same machine
    async with client.post(
        "/host/login",
        data={"csrf": csrf, "token": ADMIN},
        headers={"Origin": other},
        allow_redirects=False,
    ) as r:
        assert r.status == 403
    async with client.post(
        "/host/login",
        data={"csrf": csrf, "token": ADMIN},
        headers={"Origin": _origin(client)},
        allow_redirects=False,
    ) as r:
        assert r.status == 303


async def test_a_vote_on_the_strength_of_the_cookie_must_be_json_or_same_origin(
    api: Api, client: TestClient
) -> None:
    room = await api.room()
    poll = await api.poll(room["id"], ["A", "B"])
    async with client.post("/api/v1/join", json={"code": room["code"]}) as r:
        assert r.status == 201  # the cookie is in the client's jar now
    body = json.dumps({"option_ids": [poll["options"][0]["id"]]})
    # What another site's <form enctype="text/plain"> would send.
    async with client.post(
        f"/api/v1/polls/{poll['id']}/votes", data=body, headers={"Content-Type": "text/plain"}
    ) as r:
        answer = await r.json()
        assert r.status == 403 and answer["error"]["code"] == "cross_site_request", answer
    async with client.post(
        f"/api/v1/polls/{poll['id']}/votes", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 202


async def test_every_response_says_nosniff(client: TestClient) -> None:
    for path in (
        "/api/v1/rooms",
        "/api/v1/nothing-here",
        "/healthz",
        "/static/live.js",
        "/",
        "/api/openapi.json",
    ):
        async with client.get(path) as r:
            assert r.headers.get("X-Content-Type-Options") == "nosniff", (path, r.status)


async def test_logging_out_ends_the_session_even_for_a_copied_cookie(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        # unsafe=True: keep cookies from a server addressed by IP (127.0.0.1), as browsers do.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(f"{server.base}/host/login") as r:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert csrf is not None
            form = {"csrf": csrf.group(1), "token": ADMIN}
            async with http.post(
                f"{server.base}/host/login",
                data=form,
                headers={"Origin": server.base},
                allow_redirects=False,
            ) as r:
                assert r.status == 303
            stolen = next(c.value for c in http.cookie_jar if c.key == "opus_host")
            async with http.post(
                f"{server.base}/host/logout",
                data={"csrf": csrf.group(1)},
                headers={"Origin": server.base},
                allow_redirects=False,
            ) as r:
                assert r.status == 303

        async def console_with(cookie: str) -> int:
            async with (
                aiohttp.ClientSession(cookies={"opus_host": cookie}) as other,
                other.get(f"{server.base}/host", allow_redirects=False) as r,
            ):
                return r.status

        assert await console_with(stolen) == 303  # off to the login page
        assert server.terminate() == 0
        server.start()
        assert await console_with(stolen) == 303  # and still after a restart
    finally:
        server.stop()


async def test_the_data_dir_and_databases_are_private(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        data = server.data_dir
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("opus.db", "opus.db-wal", "queue.db", "secret", "node_id"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    finally:
        server.stop()


async def test_the_admin_token_is_never_taken_from_a_url(api: Api, client: TestClient) -> None:
    room = await api.room()
    async with client.get(f"/ws?room={room['code']}&token={ADMIN}") as r:
        body = await r.json()
        assert r.status == 400 and body["error"]["code"] == "token_in_url"
    async with client.ws_connect(
        f"/ws?room={room['code']}", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
    voter = await api.join(room["code"])
    async with client.ws_connect(f"/ws?room={room['code']}&token={voter['voter_token']}") as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "snapshot"


def test_ids_take_their_random_bits_from_the_operating_system(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[int] = []

    def urandom(n: int) -> bytes:
        drawn.append(n)
        return bytes([0xAB]) * n

    monkeypatch.setattr(events.os, "urandom", urandom)
    monkeypatch.setattr(events, "_taken", events._POOL_BYTES)  # the pool is used up
    first = events.uuid7()
    assert drawn == [events._POOL_BYTES]
    assert first.replace("-", "")[-15:] == f"{(int.from_bytes(bytes([0xAB]) * 8) >> 2):x}"[-15:]


async def test_an_open_quizs_public_results_carry_no_counts(api: Api) -> None:
    room = await api.room()
    quiz = await api.poll(room["id"], ["Paris", "Lyon"], kind="quiz", correct=[0])
    voter = await api.join(room["code"])
    await api.vote(voter, quiz["id"], [quiz["options"][1]["id"]])
    await api.total_when(quiz["id"], 1)
    status, public = await api.call(
        "GET", f"/api/v1/polls/{quiz['id']}/results", headers=voter["headers"]
    )
    assert status == 200 and public["total_votes"] == 1
    assert [(o["votes"], o["percent"]) for o in public["options"]] == [(None, None)] * 2
    host = await api.results(quiz["id"])
    assert [o["votes"] for o in host["options"]] == [0, 1]
    await api.call("POST", f"/api/v1/polls/{quiz['id']}/close", headers=api.admin)
    status, public = await api.call(
        "GET", f"/api/v1/polls/{quiz['id']}/results", headers=voter["headers"]
    )
    assert [o["votes"] for o in public["options"]] == [0, 1]


async def test_the_newest_rooms_screen_and_the_metrics_are_for_the_box_and_the_host(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.replace(trusted_proxies="127.0.0.1")))
    room = await Api(client).room()
    phone = {"X-Forwarded-For": "10.0.0.23"}
    async with client.get("/screen", headers=phone, allow_redirects=False) as r:
        assert r.status == 403 and room["code"] not in await r.text()
    async with client.get("/screen", allow_redirects=False) as r:  # the kiosk, on the box
        assert r.status == 302 and r.headers["Location"] == f"/screen/{room['code']}"
    async with client.get("/metrics", headers=phone) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    async with client.get("/metrics", headers={**phone, "Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200 and "opus_votes_accepted_total" in await r.text()
    async with client.get("/metrics") as r:
        assert r.status == 200
    await _log_in(client)
    async with client.get("/screen", headers=phone, allow_redirects=False) as r:
        assert r.status == 302  # the host's browser, wherever it is


async def test_metrics_can_be_made_public(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(
        create_app(settings.replace(trusted_proxies="127.0.0.1", metrics_public=True))
    )
    async with client.get("/metrics", headers={"X-Forwarded-For": "10.0.0.23"}) as r:
        assert r.status == 200


async def test_csv_cells_that_look_like_formulas_are_inert(api: Api) -> None:
    room = await api.room()
    labels = ["=HYPERLINK(evil)", "+1+1", "@SUM(A1)", "-cmd|calc"]
    poll = await api.poll(room["id"], labels)
    voter = await api.join(room["code"])
    await api.vote(voter, poll["id"], [poll["options"][0]["id"]])
    await api.total_when(poll["id"], 1)
    for path in (
        f"/api/v1/polls/{poll['id']}/export?format=csv",
        f"/api/v1/rooms/{room['id']}/export?format=csv",
    ):
        status, text = await api.call("GET", path, headers=api.admin)
        assert status == 200
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        for label in labels:
            assert "'" + label in cells and label not in cells, (label, path)


async def test_one_voter_cannot_flood_a_qa(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    qa = await api.poll(room["id"], kind="qa", options=None)
    voter = await api.join(room["code"])
    statuses = []
    for i in range(ASKS_PER_MINUTE + 1):
        status, body = await api.call(
            "POST",
            f"/api/v1/polls/{qa['id']}/votes",
            json={"text": f"Question {i}?"},
            headers=voter["headers"],
        )
        statuses.append((status, body.get("error", {}).get("code")))
    assert statuses[:-1] == [(202, None)] * ASKS_PER_MINUTE
    assert statuses[-1] == (429, "too_many_questions")
    # Many voters, a few questions each: every message carries the top ones and a count.
    voters = [await api.join(room["code"]) for _ in range(22)]
    for n, v in enumerate(voters):
        for i in range(ASKS_PER_MINUTE):
            status, _ = await api.call(
                "POST",
                f"/api/v1/polls/{qa['id']}/votes",
                json={"text": f"Q {n}.{i}?"},
                headers=v["headers"],
            )
            assert status == 202
    total = ASKS_PER_MINUTE * (len(voters) + 1)
    results = await api.total_when(qa["id"], total)
    assert results["question_count"] == total > QUESTIONS_SHOWN
    assert len(results["questions"]) == QUESTIONS_SHOWN
    status, page = await api.call(
        "GET", f"/api/v1/polls/{qa['id']}/questions?limit=10&offset=5", headers=api.admin
    )
    assert status == 200 and len(page["questions"]) == 10 and page["total"] == total


async def test_a_voter_asks_at_most_so_many_questions_in_one_qa(
    aiohttp_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("opus.ingest.ASKS_PER_MINUTE", QUESTIONS_PER_VOTER + 5)
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    qa = await api.poll(room["id"], kind="qa", options=None)
    voter = await api.join(room["code"])
    for i in range(QUESTIONS_PER_VOTER):
        status, _ = await api.call(
            "POST",
            f"/api/v1/polls/{qa['id']}/votes",
            json={"text": f"Question {i}?"},
            headers=voter["headers"],
        )
        assert status == 202
    status, body = await api.call(
        "POST",
        f"/api/v1/polls/{qa['id']}/votes",
        json={"text": "One more?"},
        headers=voter["headers"],
    )
    assert status == 409 and body["error"]["code"] == "question_limit"


async def test_the_consoles_moderation_list_pages_through_a_crowded_qa(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    qa = await api.poll(room["id"], kind="qa", options=None)
    voters = [await api.join(room["code"]) for _ in range(70)]
    for n, v in enumerate(voters):
        for i in range(ASKS_PER_MINUTE):
            status, _ = await api.call(
                "POST",
                f"/api/v1/polls/{qa['id']}/votes",
                json={"text": f"Q {n}.{i}?"},
                headers=v["headers"],
            )
            assert status == 202
    total = ASKS_PER_MINUTE * len(voters)
    await api.total_when(qa["id"], total)
    await _log_in(client)
    async with client.get(f"/host/rooms/{room['id']}") as r:
        html = await r.text()
    assert f"Questions 1 to 200 of {total}" in html and f"Next {total - 200}" in html
    assert "Q 69.2?" not in html  # the newest question is past the first page
    async with client.get(f"/host/polls/{qa['id']}/questions?offset=200") as r:
        part = await r.text()
    # The newest questions, beyond the first page, are one click away.
    assert f"Questions 201 to {total} of {total}" in part and "Q 69.2?" in part
    assert "Earlier" in part and "Next" not in part
