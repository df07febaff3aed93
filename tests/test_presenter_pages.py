"""Presenter mode in real Chromium: the host clicks Next in the console, and the projector and
the phones follow without a reload; a timed quiz counts in and closes itself; the projector's
keys move everyone when it holds the host's session; a poll is duplicated from the console."""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser import PHONE, Host
from playwright.sync_api import Page, expect

from conftest import ADMIN, ServerProcess

expect.set_options(timeout=15_000)


@pytest.fixture
def api(site: ServerProcess) -> Host:
    return Host(site.base)


def _console(contexts: Any, title: str) -> tuple[Page, str, str]:
    """The host logs in and creates a room in the console: presenter-paced by default."""
    console = contexts(viewport={"width": 1280, "height": 900}).new_page()
    console.goto("/host")
    console.fill("#token", ADMIN)
    console.click("button:has-text('Log in')")
    console.fill("#title", title)
    console.click("button:has-text('Create room')")
    expect(console.locator("h1")).to_have_text(title)
    expect(console.locator("[data-now-showing]")).to_contain_text("Nothing shown yet")
    code = console.locator(".big-code").inner_text().replace("-", "")
    room_id = console.url.split("/host/rooms/")[1].split("#")[0]
    return console, code, room_id


def _phone(contexts: Any, code: str) -> Page:
    phone = contexts(**PHONE).new_page()
    phone.goto(f"/j/{code}")
    phone.evaluate("window.sameDocument = true")  # gone if the page reloads
    return phone


def test_the_host_clicks_next_and_the_screen_and_phones_follow(contexts: Any, api: Host) -> None:
    console, code, room_id = _console(contexts, "Keynote")
    for question in ("First question?", "Second question?", "Third question?"):
        api.ok(
            "POST",
            f"/api/v1/rooms/{room_id}/polls",
            {"question": question, "kind": "single", "options": ["Yes", "No"]},
        )
    console.reload()
    screen = contexts(viewport={"width": 1600, "height": 900}).new_page()
    screen.goto(f"/screen/{code}")
    expect(screen.locator("[data-connection]")).to_have_text("Live")
    screen.evaluate("window.sameDocument = true")
    phones = [_phone(contexts, code) for _ in range(2)]
    for phone in phones:
        expect(phone.locator(".waiting")).to_be_visible()

    console.click("button[data-action=next]")
    expect(console.locator("[data-now-showing]")).to_contain_text("First question?")
    expect(screen.locator("[data-question]")).to_have_text("First question?")
    for phone in phones:
        expect(phone.locator("[data-shown] .question")).to_have_text("First question?")
        phone.get_by_label("Yes", exact=True).check()
        phone.click("form.vote button:has-text('Vote')")
        expect(phone.locator("[data-receipt]").first).to_have_text("Counted.")

    console.click("button[data-action=next]")
    expect(screen.locator("[data-question]")).to_have_text("Second question?")
    for phone in phones:
        expect(phone.locator("[data-shown] .question")).to_have_text("Second question?")
        # The earlier poll is folded below the shown one, not stacked above it.
        earlier = phone.locator("[data-earlier]")
        expect(earlier.locator("summary")).to_have_text("Earlier polls (1)")
        expect(earlier.locator(".question")).to_be_hidden()
        earlier.locator("summary").click()
        expect(earlier.locator(".question")).to_have_text("First question?")
    # The third poll, still a draft, is nowhere on the phones.
    expect(phones[0].get_by_text("Third question?")).to_have_count(0)

    console.click("button[data-action=previous]")
    expect(screen.locator("[data-question]")).to_have_text("First question?")
    expect(phones[0].locator("[data-shown] .question")).to_have_text("First question?")
    expect(screen.locator(".bar", has_text="Yes").locator("[data-votes]")).to_have_text("2")
    # Closing the second poll from the console shows it (its results) everywhere.
    console.locator("article", has_text="Second question?").locator(
        "button[data-action=close]"
    ).click()
    expect(screen.locator("[data-question]")).to_have_text("Second question?")
    expect(screen.locator("[data-status-label]")).to_have_text("Closed")
    expect(phones[1].locator("[data-shown] .question")).to_have_text("Second question?")
    assert screen.evaluate("window.sameDocument") is True
    for phone in phones:
        assert phone.evaluate("window.sameDocument") is True


def test_a_shown_quiz_counts_in_then_closes_itself_everywhere(contexts: Any, api: Host) -> None:
    room = api.ok("POST", "/api/v1/rooms", {"title": "Quiz night", "pace": "presenter"})
    quiz = api.ok(
        "POST",
        f"/api/v1/rooms/{room['id']}/polls",
        {
            "question": "How many legs has a spider?",
            "kind": "quiz",
            "options": ["Six", "Eight"],
            "correct": [1],
            "time_limit_s": 5,
        },
    )
    screen = contexts(viewport={"width": 1600, "height": 900}).new_page()
    screen.goto(f"/screen/{room['code']}")
    expect(screen.locator("[data-connection]")).to_have_text("Live")
    phone = _phone(contexts, room["code"])
    api.ok("POST", f"/api/v1/polls/{quiz['id']}/show")
    # The count-in, on the phone and on the screen, with the form kept back until it ends.
    expect(phone.locator("[data-count-in]")).to_contain_text("starts in")
    expect(phone.locator("form.vote")).to_be_hidden()
    expect(screen.locator("[data-count-in]")).to_contain_text("starts in")
    expect(phone.locator("form.vote")).to_be_visible()
    phone.get_by_label("Eight", exact=True).check()
    phone.click("form.vote button:has-text('Answer')")
    expect(phone.locator("[data-receipt]").first).to_have_text("Counted.")
    # Nobody closes it: its time runs out, and everything says so without a reload.
    expect(screen.locator("[data-status-label]")).to_have_text("Closed")
    expect(phone.locator("[data-shown]")).to_have_attribute("data-status", "closed")
    expect(phone.locator(".verdict-right")).to_have_text("Right answer!")
    assert phone.evaluate("window.sameDocument") is True


def test_the_projector_keys_move_the_phones_with_the_hosts_session(
    contexts: Any, api: Host
) -> None:
    console, code, room_id = _console(contexts, "Workshop")
    for question in ("Warm-up?", "Main question?"):
        api.ok(
            "POST",
            f"/api/v1/rooms/{room_id}/polls",
            {"question": question, "kind": "single", "options": ["A", "B"]},
        )
    # The projector is a tab of the host's own browser (its session).
    screen = console.context.new_page()
    screen.goto(f"/screen/{code}")
    expect(screen.locator("[data-connection]")).to_have_text("Live")
    phone = _phone(contexts, code)
    screen.keyboard.press("n")
    expect(phone.locator("[data-shown] .question")).to_have_text("Warm-up?")
    expect(screen.locator("[data-question]")).to_have_text("Warm-up?")
    screen.keyboard.press("ArrowRight")
    expect(phone.locator("[data-shown] .question")).to_have_text("Main question?")
    expect(screen.locator("[data-question]")).to_have_text("Main question?")
    # The console, open in another tab, follows as well.
    expect(console.locator("[data-now-showing]")).to_contain_text("Main question?")
    # A screen without the host's session moves only itself.
    public = contexts(viewport={"width": 1280, "height": 720}).new_page()
    public.goto(f"/screen/{code}")
    expect(public.locator("[data-question]")).to_have_text("Main question?")
    public.keyboard.press("p")
    expect(public.locator("[data-question]")).to_have_text("Warm-up?")
    expect(phone.locator("[data-shown] .question")).to_have_text("Main question?")


def test_the_host_duplicates_a_poll_from_the_console(contexts: Any, api: Host) -> None:
    console, _, room_id = _console(contexts, "Seminar")
    api.ok(
        "POST",
        f"/api/v1/rooms/{room_id}/polls",
        {"question": "Tea or coffee?", "kind": "single", "options": ["Tea", "Coffee"]},
    )
    console.reload()
    console.locator("article", has_text="Tea or coffee?").locator(
        "button[data-action=duplicate]"
    ).click()
    expect(console.locator(".flash")).to_contain_text("Copied as a draft")
    expect(console.locator("article.hpoll h3")).to_have_text(
        [re.compile(r"Tea or coffee\?"), re.compile(r"Tea or coffee\?")]
    )
    expect(console.locator("article.hpoll .badge").nth(1)).to_have_text("draft")


def test_the_host_reopens_a_closed_poll_and_phones_can_vote_again(contexts: Any, api: Host) -> None:
    console, code, room_id = _console(contexts, "Retro")
    api.ok(
        "POST",
        f"/api/v1/rooms/{room_id}/polls",
        {"question": "Keep the format?", "kind": "single", "options": ["Keep", "Change"]},
    )
    console.reload()
    console.click("button[data-action=next]")
    phone = _phone(contexts, code)
    expect(phone.locator("[data-shown] .question")).to_have_text("Keep the format?")
    console.click("button[data-action=close-shown]")
    expect(phone.locator("[data-shown]")).to_have_attribute("data-status", "closed")
    expect(phone.locator("form.vote")).to_have_count(0)
    console.click("button[data-action=reopen]")
    expect(console.locator(".flash")).to_contain_text("open again")
    expect(phone.locator("[data-shown]")).to_have_attribute("data-status", "open")
    phone.get_by_label("Change", exact=True).check()
    phone.click("form.vote button:has-text('Vote')")
    expect(phone.locator("[data-receipt]").first).to_have_text("Counted.")
    assert phone.evaluate("window.sameDocument") is True


def test_the_screen_moves_on_when_its_poll_is_deleted(contexts: Any, api: Host) -> None:
    room = api.ok("POST", "/api/v1/rooms", {"title": "Deletions"})
    first = api.ok(
        "POST",
        f"/api/v1/rooms/{room['id']}/polls",
        {"question": "Stays?", "kind": "single", "options": ["A", "B"]},
    )
    second = api.ok(
        "POST",
        f"/api/v1/rooms/{room['id']}/polls",
        {"question": "Goes?", "kind": "single", "options": ["A", "B"]},
    )
    api.ok("POST", f"/api/v1/polls/{first['id']}/open")
    api.ok("POST", f"/api/v1/polls/{second['id']}/open")
    screen = contexts(viewport={"width": 1280, "height": 720}).new_page()
    errors: list[str] = []
    screen.on("pageerror", lambda error: errors.append(str(error)))
    screen.goto(f"/screen/{room['code']}")
    expect(screen.locator("[data-question]")).to_have_text("Goes?")
    api.ok("DELETE", f"/api/v1/polls/{second['id']}")
    expect(screen.locator("[data-question]")).to_have_text("Stays?")
    assert errors == []
