"""Smaller answers for phones on a slow Wi-Fi: pages, scripts, CSS and large JSON gzipped for a
client that takes gzip, and the versioned static files kept by the browser instead of fetched
again. Read as the browser gets them: the client here does not decompress."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from conftest import Api
from opus.app import create_app
from opus.config import Settings

GZIP = {"Accept-Encoding": "gzip, deflate, br"}  # what Chromium sends
YEAR = "public, max-age=31536000, immutable"


@pytest.fixture
async def raw(aiohttp_client: Any, settings: Settings) -> TestClient:
    """A client that hands back the bytes as sent, compressed or not."""
    return await aiohttp_client(create_app(settings), auto_decompress=False)  # type: ignore[no-any-return]


async def _get(client: TestClient, path: str, *, gzip_ok: bool, **kw: Any) -> tuple[Any, bytes]:
    """GET with Accept-Encoding: gzip, or with no Accept-Encoding at all."""
    if gzip_ok:
        kw["headers"] = {**GZIP, **kw.get("headers", {})}
    else:
        kw["skip_auto_headers"] = ["Accept-Encoding"]
    async with client.get(path, **kw) as r:
        return r, await r.read()


def _same(one: bytes, other: bytes) -> bool:
    """Equal but for what the attendee page makes anew each time: the server's clock and the
    id of each vote form."""
    fresh = re.compile(rb'(server_now\W+)\d+|(name="event_id" value=")[-\w]+')
    return fresh.sub(rb"\1\2", one) == fresh.sub(rb"\1\2", other)


async def _room_page(raw: TestClient) -> tuple[dict[str, Any], str, str]:
    """A room with an open poll, its attendee page, and the static version that page uses."""
    room = await Api(raw).room("Compressed")
    await Api(raw).poll(room["id"], ["Red", "Green", "Blue"])
    path = f"/j/{room['code']}"
    _, page = await _get(raw, path, gzip_ok=False)
    found = re.search(rb"/static/attendee\.js\?v=(\w+)", page)
    assert found is not None, page[:500]
    return room, path, found.group(1).decode()


async def test_pages_scripts_css_and_large_json_come_gzipped(raw: TestClient) -> None:
    _, page, version = await _room_page(raw)
    for path, kind in (
        (page, "html"),
        (f"/static/attendee.js?v={version}", "javascript"),
        (f"/static/opus.css?v={version}", "css"),
        ("/api/openapi.json", "json"),
    ):
        packed, packed_body = await _get(raw, path, gzip_ok=True)
        plain, plain_body = await _get(raw, path, gzip_ok=False)
        assert packed.status == plain.status == 200, path
        assert packed.content_type == plain.content_type and kind in plain.content_type, path
        assert packed.headers.get("Content-Encoding") == "gzip", path
        assert "Accept-Encoding" in packed.headers.get("Vary", ""), path
        assert "Content-Encoding" not in plain.headers, path
        assert "Accept-Encoding" in plain.headers.get("Vary", ""), path  # for caches
        assert _same(gzip.decompress(packed_body), plain_body), path
        assert len(packed_body) < len(plain_body) / 2, (path, len(packed_body), len(plain_body))
        assert int(packed.headers["Content-Length"]) == len(packed_body), path


async def test_small_answers_head_and_sockets_are_sent_as_they_are(raw: TestClient) -> None:
    """A vote's 202 and a JSON error are far under a packet: not worth compressing. Only the
    large answer beside them is."""
    api = Api(raw)
    room, page, _ = await _room_page(raw)
    poll = await api.poll(room["id"], ["Yes", "No"])
    voter = await api.join(room["code"])
    async with raw.post(
        f"/api/v1/polls/{poll['id']}/votes",
        json={"option_ids": [poll["options"][0]["id"]]},
        headers={**voter["headers"], **GZIP},
    ) as r:
        assert r.status == 202
        assert "Content-Encoding" not in r.headers
        assert json.loads(await r.read())["status"] == "accepted"

    error, body = await _get(raw, "/api/v1/nothing-here", gzip_ok=True)
    assert error.status == 404 and "Content-Encoding" not in error.headers
    assert json.loads(body)["error"]["code"] == "not_found"

    async with raw.head(page, headers=GZIP) as r:
        assert r.status == 200 and "Content-Encoding" not in r.headers

    async with raw.ws_connect(f"/ws?room={room['id']}", headers=GZIP) as ws:
        first = await ws.receive_json(timeout=10)
        assert first["type"], first

    large, _ = await _get(raw, "/api/openapi.json", gzip_ok=True)
    assert large.headers.get("Content-Encoding") == "gzip"


async def test_versioned_static_files_are_kept_a_year_and_others_asked_again(
    raw: TestClient,
) -> None:
    _, page, version = await _room_page(raw)
    for name in ("attendee.js", "opus.css", "icon.svg"):
        kept, _ = await _get(raw, f"/static/{name}?v={version}", gzip_ok=True)
        assert kept.status == 200 and kept.headers.get("Cache-Control") == YEAR, name
        for path in (f"/static/{name}", f"/static/{name}?v=0123456789"):
            asked, _ = await _get(raw, path, gzip_ok=True)
            assert asked.status == 200, path
            assert asked.headers.get("Cache-Control") == "no-cache", path
    html, _ = await _get(raw, page, gzip_ok=True)
    assert html.headers.get("Cache-Control") == "no-store"
    missing, _ = await _get(raw, f"/static/nothing.js?v={version}", gzip_ok=True)
    assert missing.status == 404


async def test_a_kept_static_file_is_confirmed_with_a_304(raw: TestClient) -> None:
    for gzip_ok in (True, False):
        first, body = await _get(raw, "/static/live.js", gzip_ok=gzip_ok)
        assert first.status == 200 and body
        assert (first.headers.get("Content-Encoding") == "gzip") is gzip_ok
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
        for check in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
            again, rest = await _get(raw, "/static/live.js", gzip_ok=gzip_ok, headers=check)
            assert again.status == 304 and rest == b"", check
            assert again.headers.get("ETag") == etag
            assert again.headers.get("Cache-Control") == "no-cache"
        changed, body = await _get(
            raw, "/static/live.js", gzip_ok=gzip_ok, headers={"If-None-Match": '"other"'}
        )
        assert changed.status == 200 and body
    plain, _ = await _get(raw, "/static/live.js", gzip_ok=False)
    packed, _ = await _get(raw, "/static/live.js", gzip_ok=True)
    assert plain.headers["ETag"] != packed.headers["ETag"]  # two bodies, two tags
