"""One person, one vote: a client address can mint only so many voters, opening a room's page
mints none, and a room may ask for a passcode. Addresses other than the test's own loopback
come through a trusted proxy's X-Forwarded-For, as they would behind a reverse proxy."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from conftest import ADMIN, Api, ServerProcess
from opus.app import create_app
from opus.config import Settings
from opus.keys import DB


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _join(api: Api, code: str, address: str, **extra: Any) -> tuple[int, Any, Any]:
    api.forget_cookies()
    async with api.client.request(
        "POST", api.url("/api/v1/join"), headers=_from(address), json={"code": code, **extra}
    ) as r:
        body = await r.json()
        retry_after = r.headers.get("Retry-After")
    api.forget_cookies()
    if r.status == 201:
        body["headers"] = {"Authorization": f"Bearer {body['voter_token']}"}
    return r.status, body, retry_after


async def _voters(client: TestClient) -> int:
    row = await client.app[DB].fetchone("SELECT COUNT(*) FROM voters")
    assert row is not None
    return int(row[0])


async def test_minting_from_one_address_stops_at_the_cap_and_the_extra_votes_are_not_counted(
    aiohttp_client: Any, settings: Settings
) -> None:
    settings = settings.replace(
        trusted_proxies="127.0.0.1", identities_per_address=3, join_rate_per_minute=0
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    room = await api.room()
    poll = await api.poll(room["id"], ["Stuffed", "Honest"])
    stuffed = poll["options"][0]["id"]
    accepted = 0
    for _ in range(10):  # a laptop minting voters to stuff the poll
        status, body, retry_after = await _join(api, room["code"], "10.0.0.66")
        if status != 201:
            assert status == 429 and body["error"]["code"] == "too_many_identities", body
            assert retry_after is not None and int(retry_after) > 0
            assert "joined this room 3 times" in body["error"]["message"]
            continue
        status, _ = await api.vote(body, poll["id"], [stuffed])
        accepted += status == 202
    assert accepted == 3
    assert (await api.total_when(poll["id"], 3))["options"][0]["votes"] == 3
    # Another phone on the network joins as before; so does the box's own loopback.
    status, _, _ = await _join(api, room["code"], "10.0.0.67")
    assert status == 201
    assert (await api.join(room["code"]))["voter_id"]
    # Another room has its own cap.
    other = await api.room("Other")
    status, _, _ = await _join(api, other["code"], "10.0.0.66")
    assert status == 201
    # The host console shows where the identities came from.
    html = await _host_page(client, f"/host/rooms/{room['id']}")
    assert "<code>10.0.0.66</code>: 3" in html and "5 people joined" in html


async def _host_page(client: TestClient, path: str) -> str:
    """A host console page, after logging in with the admin token through the form."""
    async with client.get("/host/login") as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert csrf is not None
    async with client.post(
        "/host/login",
        data={"csrf": csrf.group(1), "token": ADMIN},
        headers={"Origin": str(client.make_url("")).rstrip("/")},
        allow_redirects=False,
    ) as r:
        assert r.status == 303, await r.text()
    async with client.get(path) as r:
        assert r.status == 200
        return await r.text()


async def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Without trusted_proxies, X-Forwarded-For changes nothing: the peer here is loopback (not
    limited), so a cap that the header's address would hit is never hit."""
    client = await aiohttp_client(create_app(settings.replace(identities_per_address=1)))
    api = Api(client)
    room = await api.room()
    for _ in range(3):
        status, body, _ = await _join(api, room["code"], "10.0.0.66")
        assert status == 201, body


async def test_the_join_rate_per_address_answers_429_with_retry_after(
    aiohttp_client: Any, settings: Settings
) -> None:
    settings = settings.replace(
        trusted_proxies="127.0.0.0/8", identities_per_address=0, join_rate_per_minute=2
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    rooms = [await api.room(f"R{i}") for i in range(3)]
    for room in rooms[:2]:
        status, _, _ = await _join(api, room["code"], "192.168.1.20")
        assert status == 201
    status, body, retry_after = await _join(api, rooms[2]["code"], "192.168.1.20")
    assert status == 429 and body["error"]["code"] == "too_many_joins", body
    assert retry_after is not None and 0 < int(retry_after) <= 60
    status, _, _ = await _join(api, rooms[2]["code"], "192.168.1.21")
    assert status == 201


async def test_opening_the_page_mints_nothing_and_the_first_vote_does(client: TestClient) -> None:
    api = Api(client)
    room = await api.room()
    poll = await api.poll(room["id"], ["Yes", "No"])
    before = await _voters(client)
    for _ in range(20):
        client.session.cookie_jar.clear()
        async with client.get(f"/j/{room['code']}") as r:
            assert r.status == 200
            assert "opus_voter" not in r.cookies
    assert await _voters(client) == before
    # A phone without JavaScript votes with the page's form: that vote makes the voter.
    client.session.cookie_jar.clear()
    async with client.get(f"/j/{room['code']}") as r:
        html = await r.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None and "Your first vote joins you" in html
    async with client.post(
        f"/j/{room['code']}/polls/{poll['id']}/vote",
        data={"csrf": csrf.group(1), "option": poll["options"][0]["id"]},
        headers={"Origin": str(client.make_url("")).rstrip("/")},
        allow_redirects=False,
    ) as r:
        assert r.status == 303, await r.text()
        assert "opus_voter" in r.cookies
    assert await _voters(client) == before + 1
    assert (await api.total_when(poll["id"], 1))["total_votes"] == 1
    async with client.get(f"/j/{room['code']}") as r:  # the same phone: the same voter
        html = await r.text()
    assert "Your first vote joins you" not in html and "you are <b>" in html
    assert await _voters(client) == before + 1


async def test_a_room_with_a_passcode_needs_it_to_join(api: Api, client: TestClient) -> None:
    status, room = await api.call(
        "POST", "/api/v1/rooms", headers=api.admin, json={"title": "Board", "passcode": "tulip-42"}
    )
    assert status == 201 and room["passcode_required"] and room["passcode"] == "tulip-42"
    for extra, code in (
        ({}, "passcode_required"),
        ({"passcode": "tulip"}, "wrong_passcode"),
        ({"passcode": 42}, "invalid_field"),  # not a string: refused as the body is read
    ):
        status, body, _ = await _join(api, room["code"], "127.0.0.1", **extra)
        expected = 400 if code == "invalid_field" else 403
        assert status == expected and body["error"]["code"] == code, body
    status, _, _ = await _join(api, room["code"], "127.0.0.1", passcode=" tulip-42 ")
    assert status == 201
    # Attendees and screens do not learn it from the room, unless the host shows it.
    async with client.ws_connect(f"/ws?room={room['code']}") as ws:
        snapshot = await ws.receive_json(timeout=10)
    assert snapshot["room"]["passcode_required"] and "passcode" not in snapshot["room"]
    async with client.get(f"/screen/{room['code']}") as r:
        assert "tulip-42" not in await r.text()
    status, room = await api.call(
        "PATCH", f"/api/v1/rooms/{room['id']}", headers=api.admin, json={"show_passcode": True}
    )
    assert status == 200 and room["title"] == "Board" and room["show_passcode"]
    async with client.get(f"/screen/{room['code']}") as r:
        assert "tulip-42" in await r.text()
    # The page asks for it, and takes it.
    client.session.cookie_jar.clear()
    async with client.get(f"/j/{room['code']}") as r:
        html = await r.text()
    assert "needs its passcode" in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    origin = {"Origin": str(client.make_url("")).rstrip("/")}
    async with client.post(
        f"/j/{room['code']}/join", data={"csrf": csrf.group(1), "passcode": "nope"}, headers=origin
    ) as r:
        html = await r.text()
    assert "That is not this room&#39;s passcode" in html and "needs its passcode" in html
    async with client.post(
        f"/j/{room['code']}/join",
        data={"csrf": csrf.group(1), "passcode": "tulip-42"},
        headers=origin,
    ) as r:
        html = await r.text()
    assert "You have joined" in html and "needs its passcode" not in html
    # Removed: joining needs only the code again.
    status, room = await api.call(
        "PATCH", f"/api/v1/rooms/{room['id']}", headers=api.admin, json={"passcode": None}
    )
    assert status == 200 and not room["passcode_required"]
    status, _, _ = await _join(api, room["code"], "127.0.0.1")
    assert status == 201
    status, body = await api.call(
        "POST", "/api/v1/rooms", headers=api.admin, json={"title": "X", "passcode": "abc"}
    )
    assert status == 422 and body["error"]["code"] == "invalid_field"


async def test_a_room_made_with_a_title_alone_joins_with_the_code_alone(api: Api) -> None:
    room = await api.room()
    assert room["passcode_required"] is False and room.get("passcode") is None
    voter = await api.join(room["code"])
    assert voter["room_id"] == room["id"]


async def test_the_cap_holds_across_a_restart(tmp_path: Any) -> None:
    server = ServerProcess(
        tmp_path / "data", OPUS_TRUSTED_PROXIES="127.0.0.1", OPUS_IDENTITIES_PER_ADDRESS="2"
    )
    server.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base)
            room = await api.room()
            for _ in range(2):
                status, _, _ = await _join(api, room["code"], "10.1.2.3")
                assert status == 201
        assert server.terminate() == 0
        server.start()
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base)
            status, body, _ = await _join(api, room["code"], "10.1.2.3")
            assert status == 429 and body["error"]["code"] == "too_many_identities"
    finally:
        server.stop()
