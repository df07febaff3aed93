"""The attendee page sends its votes on its live socket while that is open, and with a POST when
it is not, in real Chromium against a real `opus serve`. The socket is cut and refused with
Playwright's WebSocket routing, between the page and the server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from browser import PHONE, Host
from playwright.sync_api import Page, WebSocketRoute, expect

from conftest import ServerProcess

expect.set_options(timeout=10_000)


@pytest.fixture
def api(site: ServerProcess) -> Host:
    return Host(site.base)


class Line:
    """The page's socket, through Playwright: passed on to the server, cut on demand, and
    refused while `down`. Records the votes the page sent on it and the answers it got."""

    def __init__(self, page: Page) -> None:
        self.down = False
        self.lose_answers = False
        self.open: list[WebSocketRoute] = []
        self.connections = 0
        self.votes: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        page.route_web_socket("**/ws?*", self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        if self.down:
            ws.close(code=1013, reason="down")
            return
        server = ws.connect_to_server()
        self.open.append(ws)
        self.connections += 1

        def to_server(message: str | bytes) -> None:
            sent = json.loads(message)
            if sent.get("type") == "vote":
                self.votes.append(sent)
            server.send(message)

        def to_page(message: str | bytes) -> None:
            heard = json.loads(message)
            if heard.get("type", "").startswith("vote_"):
                self.answers.append(heard)
                if self.lose_answers:  # the server took it; the phone never hears back
                    self.cut()
                    return
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    def voters_socket(self, page: Page) -> None:
        """Wait for the socket the page opens again once its first vote joined the room."""
        deadline = time.monotonic() + 10
        while self.connections < 2:
            assert time.monotonic() < deadline, "the page did not open its voter's socket"
            page.wait_for_timeout(50)
        page.wait_for_timeout(300)  # its snapshot

    def cut(self) -> None:
        self.down = True
        for ws in self.open:
            ws.close(code=1001, reason="cut")
        self.open.clear()


def _posts(page: Page) -> list[tuple[str, dict[str, Any]]]:
    """The votes the page POSTs: (URL, body)."""
    posted: list[tuple[str, dict[str, Any]]] = []

    def seen(request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/votes"):
            posted.append((request.url, json.loads(request.post_data or "{}")))

    page.on("request", seen)
    return posted


def _vote(page: Page, poll: dict[str, Any], label: str) -> None:
    card = page.locator(f"#poll-{poll['id']}")
    card.get_by_label(label, exact=True).check()
    card.locator("form.vote button:has-text('Vote')").click()
    expect(card.locator("[data-receipt]")).to_have_text("Counted.", timeout=20_000)


def test_the_page_votes_on_its_socket_and_posts_when_the_socket_is_down(
    contexts: Any, api: Host
) -> None:
    room = api.room("Socket or POST")
    first, second, third = (
        api.poll(room["id"], question=f"Question {n}?", options=["Yes", "No"]) for n in (1, 2, 3)
    )
    page = contexts(**PHONE).new_page()
    line = Line(page)
    posted = _posts(page)
    page.goto(f"/j/{room['code']}")

    # The first vote joins the room (a POST), and the socket is opened again as the voter's.
    _vote(page, first, "Yes")
    line.voters_socket(page)
    before = len(posted)
    _vote(page, second, "No")
    assert [v["poll_id"] for v in line.votes] == [second["id"]]
    assert [a["type"] for a in line.answers] == ["vote_accepted"]
    assert len(posted) == before  # not POSTed

    # The socket drops and cannot come back: the next vote is POSTed, and counts.
    line.cut()
    _vote(page, third, "Yes")
    assert len(line.votes) == 1
    assert [url.split("/")[-2] for url, _ in posted[before:]] == [third["id"]]
    for poll in (first, second, third):
        assert api.total_when(poll["id"], 1) == 1
    time.sleep(0.5)
    assert [api.results(p["id"])["total_votes"] for p in (first, second, third)] == [1, 1, 1]


def test_a_socket_vote_whose_answer_was_lost_is_sent_again_and_counted_once(
    contexts: Any, api: Host
) -> None:
    room = api.room("Lost socket answer")
    warm, poll = (api.poll(room["id"], question=q, options=["Up", "Down"]) for q in ("A?", "B?"))
    page = contexts(**PHONE).new_page()
    line = Line(page)
    posted = _posts(page)
    page.goto(f"/j/{room['code']}")
    _vote(page, warm, "Up")  # joins the room
    line.voters_socket(page)
    before = len(posted)

    line.lose_answers = True  # the server commits the vote, the answer is lost with the socket
    _vote(page, poll, "Down")
    assert [v["poll_id"] for v in line.votes] == [poll["id"]]
    assert [a["type"] for a in line.answers] == ["vote_accepted"]
    # Sent again with a POST (the socket does not come back here), with the same event_id.
    assert [body["event_id"] for _, body in posted[before:]] == [line.votes[0]["event_id"]]
    assert page.evaluate("JSON.parse(localStorage.getItem('opus.outbox')).length") == 0
    assert api.total_when(poll["id"], 1) == 1
    time.sleep(0.5)
    results = api.results(poll["id"])
    assert results["total_votes"] == 1
    assert [o["votes"] for o in results["options"]] == [0, 1]
