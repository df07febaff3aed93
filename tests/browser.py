"""Helpers for the page tests: Debian's Chromium driven by Playwright (never a downloaded
browser), and the host's API calls through plain HTTP for setting the stage quickly."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Playwright

from conftest import ADMIN

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def launch(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the page tests need Debian's chromium "
            "package (apt-get install -y chromium; .ci/run installs it)."
        )
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


class Host:
    """The host's API, synchronously, to prepare rooms and polls and to read true counts."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str = ADMIN
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, answer = self.call(method, path, body)
        assert status in (200, 201), (status, answer)
        return answer

    def room(self, title: str = "Room") -> dict[str, Any]:
        return self.ok("POST", "/api/v1/rooms", {"title": title})  # type: ignore[no-any-return]

    def poll(self, room_id: str, *, open: bool = True, **body: Any) -> dict[str, Any]:
        body.setdefault("question", "Which one?")
        body.setdefault("kind", "single")
        if body["kind"] in ("single", "multiple", "quiz"):
            body.setdefault("options", ["Red", "Green", "Blue"])
        poll = self.ok("POST", f"/api/v1/rooms/{room_id}/polls", body)
        if open:
            poll = self.ok("POST", f"/api/v1/polls/{poll['id']}/open")
        return poll  # type: ignore[no-any-return]

    def close(self, poll_id: str) -> None:
        self.ok("POST", f"/api/v1/polls/{poll_id}/close")

    def results(self, poll_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/api/v1/polls/{poll_id}/results")  # type: ignore[no-any-return]

    def total_when(self, poll_id: str, expected: int, timeout: float = 10.0) -> int:
        """The poll's counted total once it reaches `expected` (or when the time is up)."""
        deadline = time.monotonic() + timeout
        while True:
            total = int(self.results(poll_id)["total_votes"])
            if total >= expected or time.monotonic() > deadline:
                return total
            time.sleep(0.05)

    def vote_as_newcomer(self, code: str, poll_id: str, option_id: str) -> None:
        """One more attendee, through the API: a fuller hall than browser windows make."""
        status, joined = self.call("POST", "/api/v1/join", {"code": code}, token="")
        assert status == 201, joined
        status, answer = self.call(
            "POST",
            f"/api/v1/polls/{poll_id}/votes",
            {"option_ids": [option_id]},
            token=joined["voter_token"],
        )
        assert status == 202, answer
