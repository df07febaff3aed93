"""Defects a tester found acting as a host and as attendees on phones, each checked in real
headless Chromium against a real `opus serve`, the way the tester saw it."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import pytest
from browser import PHONE, Host
from playwright.sync_api import Page, expect

from conftest import ADMIN, ServerProcess
from opus.views.templates import fmt_date

expect.set_options(timeout=10_000)


@pytest.fixture
def api(site: ServerProcess) -> Host:
    return Host(site.base)


# -- attendees ------------------------------------------------------------------------------


def test_an_attendee_asks_a_second_question_without_a_reload(contexts: Any, api: Host) -> None:
    room = api.room("Questions")
    api.poll(room["id"], question="Your questions", kind="qa")
    phone = contexts(**PHONE).new_page()
    phone.goto(f"/j/{room['code']}")
    box, ask = phone.locator("textarea[name=text]"), phone.locator("button:has-text('Ask')")
    box.fill("Will the slides be online?")
    ask.click()
    expect(phone.locator("[data-receipt]")).to_have_text("Your question is in.")
    expect(phone.locator(".qa-item")).to_have_text([re.compile("slides")])
    expect(box).to_have_value("")
    expect(ask).to_be_enabled()

    box.fill("Is there a recording?")
    ask.click()
    expect(phone.locator(".qa-item .q-text")).to_have_text(
        ["Will the slides be online?", "Is there a recording?"]
    )
    expect(box).to_have_value("")
    expect(phone.locator("[data-receipt]")).to_have_text("Your question is in.")


# -- the projector screen -------------------------------------------------------------------

SCREENS = [(1920, 1080), (1280, 720)]


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not shown"
    return found


def inside(inner: dict[str, float], width: int, height: int) -> bool:
    return (
        inner["x"] >= 0
        and inner["y"] >= 0
        and inner["x"] + inner["width"] <= width
        and inner["y"] + inner["height"] <= height
    )


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


@pytest.mark.parametrize(("width", "height"), SCREENS)
def test_the_large_join_mode_shows_the_whole_qr_code(
    contexts: Any, api: Host, width: int, height: int
) -> None:
    room = api.room("Arriving")
    screen = contexts(viewport={"width": width, "height": height}).new_page()
    screen.goto(f"/screen/{room['code']}")
    expect(screen.locator("[data-connection]")).to_have_text("Live")
    for mode in ("welcome", "poll"):
        if mode == "poll":
            api.poll(room["id"], question="Which planet is the largest in our solar system?")
            expect(screen.locator("[data-question]")).to_contain_text("Which planet")
        screen.keyboard.press("q")
        expect(screen.locator("[data-stage]")).to_have_attribute("data-big-join", "")
        qr = box(screen, ".join-panel > .qr")
        assert inside(qr, width, height), (mode, qr)
        assert qr["height"] > 0.4 * height, (mode, qr)  # large: that is what Q is for
        for other in (".screen-foot", ".join-code", ".join-label", "[data-current] .kicker"):
            if screen.locator(other).is_visible():
                assert not overlap(qr, box(screen, other)), (mode, other)
        screen.keyboard.press("q")
        expect(screen.locator("[data-stage]")).not_to_have_attribute("data-big-join", "")


@pytest.mark.parametrize(("width", "height"), SCREENS)
def test_the_total_and_the_average_stay_clear_of_the_footer(
    contexts: Any, api: Host, width: int, height: int
) -> None:
    room = api.room("Results")
    single = api.poll(
        room["id"],
        question="Which planet is the largest in our solar system, by far?",
        options=["Mercury", "Jupiter", "Saturn", "Neptune"],
    )
    for i, option in enumerate(single["options"]):
        for _ in range(i + 1):
            api.vote_as_newcomer(room["code"], single["id"], option["id"])
    screen = contexts(viewport={"width": width, "height": height}).new_page()
    screen.goto(f"/screen/{room['code']}")
    expect(screen.locator("[data-total]")).to_have_text("10")
    foot = box(screen, ".screen-foot")
    total = box(screen, ".chart .total")
    assert inside(total, width, height) and not overlap(total, foot), (total, foot)

    api.close(single["id"])
    rating = api.poll(
        room["id"], question="How was the talk today, all things considered?", kind="rating"
    )
    for value in (3, 4, 5, 5):
        status, joined = api.call("POST", "/api/v1/join", {"code": room["code"]}, token="")
        assert status == 201, joined
        api.call(
            "POST", f"/api/v1/polls/{rating['id']}/votes", {"value": value}, joined["voter_token"]
        )
    expect(screen.locator("[data-average]")).to_have_text("4.25")
    for part in (".chart .total", ".chart .average"):
        shown = box(screen, part)
        assert inside(shown, width, height) and not overlap(shown, foot), (part, shown, foot)


def test_the_key_hints_are_for_the_presenter_only(contexts: Any, api: Host) -> None:
    room = api.room("Hints")
    screen = contexts(viewport={"width": 1920, "height": 1080}).new_page()
    screen.goto(f"/screen/{room['code']}")
    expect(screen.locator("[data-connection]")).to_have_text("Live")
    keys = screen.locator(".screen-foot .keys")
    expect(keys).to_be_hidden()
    screen.keyboard.press("?")  # the help, and the hints while it is open
    expect(screen.locator("[data-help]")).to_be_visible()
    expect(keys).to_be_visible()
    screen.keyboard.press("?")
    expect(screen.locator("[data-help]")).to_be_hidden()
    expect(keys).to_be_hidden()
    screen.mouse.move(400, 300)  # the presenter reaches for the mouse
    screen.mouse.move(420, 310)
    expect(keys).to_be_visible()
    expect(keys).to_be_hidden()  # and they go again


# -- Q&A ------------------------------------------------------------------------------------


def log_in(page: Page) -> None:
    page.goto("/host/login")
    page.fill("#token", ADMIN)
    page.click("button:has-text('Log in')")
    expect(page.locator("h1")).to_have_text("Rooms")


def test_a_hidden_question_is_not_counted_for_the_audience(contexts: Any, api: Host) -> None:
    room = api.room("Town hall")
    poll = api.poll(room["id"], question="Your questions", kind="qa")
    asked = []
    for text in ("Will the slides be online?", "Is there a recording?", "Something rude"):
        status, joined = api.call("POST", "/api/v1/join", {"code": room["code"]}, token="")
        assert status == 201, joined
        status, answer = api.call(
            "POST", f"/api/v1/polls/{poll['id']}/votes", {"text": text}, joined["voter_token"]
        )
        assert status == 202, answer
        asked.append(answer["event_id"])
    api.total_when(poll["id"], 3)
    phone = contexts(**PHONE).new_page()
    phone.goto(f"/j/{room['code']}")
    screen = contexts(viewport={"width": 1280, "height": 720}).new_page()
    screen.goto(f"/screen/{room['code']}")
    laptop = contexts(viewport={"width": 1280, "height": 900})
    console = laptop.new_page()
    log_in(console)
    console.goto(f"/host/rooms/{room['id']}")
    host_screen = laptop.new_page()  # the screen opened from the console: the host's socket
    host_screen.goto(f"/screen/{room['code']}")
    for page in (phone, screen, host_screen):
        expect(page.locator(".qa-item")).to_have_count(3)
        expect(page.locator(".results .total")).to_have_text("3 questions")

    api.ok("PATCH", f"/api/v1/questions/{asked[2]}", {"status": "hidden"})
    for page in (phone, screen, host_screen):
        expect(page.locator(".qa-item")).to_have_count(2)
        expect(page.locator(".results .total")).to_have_text("2 questions")
        expect(page.locator(".results")).not_to_contain_text("Something rude")
    phone.reload()
    expect(phone.locator(".results .total")).to_have_text("2 questions")
    # The host's moderation list keeps every question, and says how many the audience sees.
    counts = console.locator("[data-question-counts]")
    expect(counts).to_have_text("3 questions asked: 2 shown, 1 hidden.")
    expect(console.locator(".mod-hidden")).to_contain_text("Something rude")


# -- quizzes --------------------------------------------------------------------------------


def test_a_long_countdown_reads_in_minutes(contexts: Any, api: Host) -> None:
    room = api.room("Timed")
    api.poll(room["id"], question="Capital of Peru?", kind="quiz", correct=[0], time_limit_s=463)
    phone = contexts(**PHONE).new_page()
    phone.goto(f"/j/{room['code']}")
    screen = contexts(viewport={"width": 1280, "height": 720}).new_page()
    screen.goto(f"/screen/{room['code']}")
    for clock in (phone.locator(".countdown"), screen.locator("[data-countdown]")):
        expect(clock).to_have_text(re.compile(r"^7:[0-4]\d$"))


def test_the_leaderboard_ranks_ties_together_and_shows_you(contexts: Any, api: Host) -> None:
    room = api.room("Ranked")
    quiz = api.poll(
        room["id"], question="Capital of Peru?", kind="quiz", options=["Lima", "Cusco"], correct=[0]
    )
    cusco = quiz["options"][1]["id"]
    phone = contexts(**PHONE).new_page()
    phone.goto(f"/j/{room['code']}")
    phone.get_by_label("Lima", exact=True).check()
    phone.click("form.vote button:has-text('Answer')")
    expect(phone.locator("[data-receipt]")).to_have_text("Counted.")
    me = phone.locator("[data-you] b").inner_text()
    for _ in range(2):  # two wrong answers: 0 points each, a tie for second place
        api.vote_as_newcomer(room["code"], quiz["id"], cusco)
    api.total_when(quiz["id"], 3)
    screen = contexts(viewport={"width": 1280, "height": 720}).new_page()
    screen.goto(f"/screen/{room['code']}")
    expect(screen.locator("[data-total]")).to_have_text("3")
    api.close(quiz["id"])

    expect(screen.locator(".leaderboard .rank")).to_have_text(["1", "2", "2"])
    expect(screen.locator(".leaderboard .you")).to_have_count(0)  # nobody's phone
    for _ in range(2):  # live, then as the page comes from the server
        board = phone.locator(".leaderboard li")
        expect(board.locator(".rank")).to_have_text(["1", "2", "2"])
        expect(board.first).to_have_class("you")
        expect(board.first.locator(".who")).to_have_text(f"{me} (you)")
        expect(phone.locator(".leaderboard .you")).to_have_count(1)
        phone.reload()


# -- the host console -----------------------------------------------------------------------


def test_the_rooms_list_says_when_each_room_was_made(contexts: Any, api: Host) -> None:
    api.room("Made today")
    console = contexts(viewport={"width": 1280, "height": 900}).new_page()
    log_in(console)
    made = console.locator(".rooms tr", has_text="Made today").locator("time")
    expect(made).to_have_text(re.compile(r"^today, \d\d:\d\d$"))


def test_an_earlier_date_reads_with_its_day_month_and_year() -> None:
    iso = "2026-11-15T12:05:00.000Z"  # November in every time zone
    local = datetime(2026, 11, 15, 12, 5, tzinfo=UTC).astimezone()  # the box's time zone
    expected = f"{local.day} Nov 2026, {local:%H:%M}"
    assert fmt_date(iso, today=date(2026, 11, 30)) == expected
    assert fmt_date(iso, today=local.date()) == f"today, {local:%H:%M}"


def test_the_activity_feed_speaks_to_a_host_not_an_engineer(contexts: Any, api: Host) -> None:
    room = api.room("Plain words")
    poll = api.poll(room["id"])
    console = contexts(viewport={"width": 1280, "height": 900}).new_page()
    log_in(console)
    console.goto(f"/host/rooms/{room['id']}")
    expect(console.locator("[data-connection]")).to_have_text("Live")
    api.vote_as_newcomer(room["code"], poll["id"], poll["options"][0]["id"])
    feed = console.locator("[data-activity]")
    counted = feed.locator(".stat", has_text="Votes are counted within")
    expect(counted.locator("b")).to_have_text(re.compile(r"^\d+(\.\d)? s$"))  # "0.1 s"
    expect(feed.locator(".stat", has_text="votes being counted").locator("b")).to_have_text(
        re.compile(r"^\d+$")
    )
    expect(feed).to_contain_text("votes in the last minute")
    for jargon in ("p99", "ms vote", "queued", "→"):
        expect(feed).not_to_contain_text(jargon)
