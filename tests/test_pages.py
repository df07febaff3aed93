"""The web pages in real headless Chromium against a real `opus serve`: the host console, the
projector screen and the attendee pages, with and without JavaScript, online and offline."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser import PHONE, Host
from playwright.sync_api import Browser, Page, Route, expect

from conftest import ADMIN, ServerProcess

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
expect.set_options(timeout=10_000)


@pytest.fixture
def api(site: ServerProcess) -> Host:
    return Host(site.base)


def log_in(page: Page) -> None:
    page.goto("/host")
    expect(page).to_have_url(re.compile(r"/host/login"))
    page.fill("#token", ADMIN)
    page.click("button:has-text('Log in')")
    expect(page.locator("h1")).to_have_text("Rooms")


def vote_on(page: Page, label: str, button: str = "Vote") -> None:
    page.get_by_label(label, exact=True).check()
    page.click(f"form.vote button:has-text('{button}')")


# -- the whole path -------------------------------------------------------------------------


def test_host_opens_a_poll_two_phones_vote_and_the_screen_follows(
    contexts: Any, site: ServerProcess, api: Host
) -> None:
    laptop = contexts(viewport={"width": 1280, "height": 860})
    console = laptop.new_page()
    console.goto("/host")
    console.fill("#token", "not-the-token")
    console.click("button:has-text('Log in')")
    expect(console.locator(".flash-error")).to_contain_text("not the admin token")
    console.fill("#token", ADMIN)
    console.click("button:has-text('Log in')")
    console.fill("#title", "Physics 101")
    console.click("button:has-text('Create room')")
    expect(console.locator("h1")).to_have_text("Physics 101")
    console.fill("#question", "Which planet is the largest?")
    console.fill("#options", "Mercury\nJupiter\nSaturn\nNeptune")
    console.click("button:has-text('Add as draft')")
    expect(console.locator(".hpoll .badge")).to_have_text("draft")
    console.click("button[data-action=open]")
    expect(console.locator(".hpoll .badge")).to_have_text("open")
    code = console.locator(".big-code").inner_text().replace("-", "")
    room_id = console.url.split("/host/rooms/")[1].split("#")[0]
    poll = api.ok("GET", f"/api/v1/rooms/{room_id}")["polls"][0]

    screen = contexts(viewport={"width": 1600, "height": 900}).new_page()
    screen.goto(f"/screen/{code}")
    expect(screen.locator("[data-question]")).to_have_text("Which planet is the largest?")
    expect(screen.locator("[data-connection]")).to_have_text("Live")
    screen.evaluate("window.sameDocument = true")  # gone if the page reloads

    phones = []
    for choice in ("Jupiter", "Saturn"):
        phone = contexts(**PHONE).new_page()
        phone.goto(f"/j/{code}")
        expect(phone.locator(".question")).to_have_text("Which planet is the largest?")
        vote_on(phone, choice)
        expect(phone.locator("[data-receipt]")).to_have_text("Counted.")
        expect(phone.locator(".voted")).to_contain_text(choice)
        phones.append(phone)

    jupiter = screen.locator(".bar", has_text="Jupiter")
    expect(jupiter.locator("[data-votes]")).to_have_text("1")
    expect(screen.locator(".bar", has_text="Saturn").locator("[data-votes]")).to_have_text("1")
    expect(screen.locator("[data-total]")).to_have_text("2")
    assert screen.evaluate("window.sameDocument") is True
    # The console's chart and activity feed move too, without a reload.
    expect(console.locator(".bar", has_text="Jupiter").locator("[data-votes]")).to_have_text("1")
    expect(console.locator("[data-connection]")).to_have_text("Live")
    expect(console.locator("[data-stat=votes_per_minute]")).to_have_text("2")
    # The first phone sees the second phone's vote arrive in its results.
    expect(phones[0].locator(".bar", has_text="Saturn").locator("[data-votes]")).to_have_text("1")

    # A fuller hall for the README's screenshots.
    ids = {o["label"]: o["id"] for o in poll["options"]}
    for label, count in (("Jupiter", 9), ("Saturn", 5), ("Neptune", 2), ("Mercury", 1)):
        for _ in range(count):
            api.vote_as_newcomer(code, poll["id"], ids[label])
    expect(screen.locator("[data-total]")).to_have_text("19")
    expect(console.locator(".bar", has_text="Jupiter").locator("[data-votes]")).to_have_text("10")
    expect(phones[0].locator("[data-total]")).to_have_text("19")
    time.sleep(1)  # let the bars finish their transition before the pictures
    SHOTS.mkdir(parents=True, exist_ok=True)
    screen.screenshot(path=str(SHOTS / "screen.png"))
    console.evaluate("window.scrollTo(0, 0)")
    console.screenshot(path=str(SHOTS / "host-console.png"))
    phones[0].screenshot(path=str(SHOTS / "attendee-phone.png"))


# -- attendees --------------------------------------------------------------------------------


def test_without_javascript_join_vote_and_clear_messages(contexts: Any, api: Host) -> None:
    room = api.room("No script")
    poll = api.poll(room["id"], question="Tea or coffee?", options=["Tea", "Coffee"])
    phone = contexts(java_script_enabled=False, **PHONE)
    page = phone.new_page()
    page.goto("/")
    page.fill("#code", room["code_display"].lower())  # as people type it
    page.click("button:has-text('Join')")
    expect(page).to_have_url(re.compile(f"/j/{room['code']}$"))
    other_tab = phone.new_page()
    other_tab.goto(f"/j/{room['code']}")

    vote_on(page, "Coffee")
    expect(page.locator(".flash")).to_have_text("Thank you: your vote is in.")
    assert api.total_when(poll["id"], 1) == 1
    expect(page.locator(".voted")).to_contain_text("Coffee")
    expect(page.locator(".results [data-total]")).to_have_text("1")

    # The same phone voting again from a tab it left open: refused, and said plainly.
    vote_on(other_tab, "Tea")
    expect(other_tab.locator(".flash-error")).to_have_text("You have already voted in this poll.")
    time.sleep(0.3)
    assert api.results(poll["id"])["total_votes"] == 1

    # A poll closed while its form was on screen.
    late = api.poll(room["id"], question="Lunch?", options=["Yes", "No"])
    page.goto(f"/j/{room['code']}")
    card = page.locator(f"#poll-{late['id']}")
    api.close(late["id"])
    card.get_by_label("Yes", exact=True).check()
    card.locator("button:has-text('Vote')").click()
    expect(page.locator(".flash-error")).to_have_text(
        "This poll is closed: your vote was not counted."
    )
    expect(page.locator(f"#poll-{late['id']} .closed-note")).to_contain_text("closed")

    page.goto("/j/ZZZZZZZZ")
    expect(page.locator(".flash-error")).to_contain_text("No room has the code")


def socket_votes(page: Page) -> list[tuple[float, str]]:
    """The votes the page sends on its live socket: (when, event_id). A vote sent again goes
    on the socket when that is open by then, else with a POST."""
    sent: list[tuple[float, str]] = []

    def frame(payload: str | bytes) -> None:
        message = json.loads(payload)
        if message.get("type") == "vote":
            sent.append((time.monotonic(), message["event_id"]))

    page.on("websocket", lambda ws: ws.on("framesent", frame))
    return sent


def test_a_vote_made_offline_is_sent_when_back_and_counted_once(contexts: Any, api: Host) -> None:
    room = api.room("Wi-Fi drop")
    poll = api.poll(room["id"], options=["Left", "Right"])
    phone = contexts(**PHONE)
    page = phone.new_page()
    page.goto(f"/j/{room['code']}")
    phone.set_offline(True)
    vote_on(page, "Right")
    receipt = page.locator("[data-receipt]")
    expect(receipt).to_have_attribute("data-state", "local")
    expect(receipt).to_contain_text("Saved on this phone")
    assert page.evaluate("JSON.parse(localStorage.getItem('opus.outbox')).length") == 1
    assert api.results(poll["id"])["total_votes"] == 0

    phone.set_offline(False)
    expect(receipt).to_have_text("Counted.", timeout=20_000)
    assert page.evaluate("JSON.parse(localStorage.getItem('opus.outbox')).length") == 0
    page.reload()
    expect(page.locator(".voted")).to_contain_text("Right")
    assert api.total_when(poll["id"], 1) == 1
    time.sleep(0.5)
    assert api.results(poll["id"])["total_votes"] == 1


def test_a_vote_whose_answer_was_lost_is_sent_again_and_counted_once(
    contexts: Any, api: Host
) -> None:
    room = api.room("Lost answer")
    poll = api.poll(room["id"], options=["Up", "Down"])
    page = contexts(**PHONE).new_page()
    sent: list[str] = []

    def lose_first_answer(route: Route) -> None:
        sent.append(route.request.post_data or "")
        if len(sent) == 1:
            route.fetch()  # the server takes the vote...
            route.abort("connectionreset")  # ...and the phone never hears back
        else:
            route.continue_()

    page.route("**/api/v1/polls/*/votes", lose_first_answer)
    on_socket = socket_votes(page)
    page.goto(f"/j/{room['code']}")
    vote_on(page, "Up")
    expect(page.locator("[data-receipt]")).to_have_text("Counted.", timeout=20_000)
    again = [json.loads(body)["event_id"] for body in sent[1:]] + [e for _, e in on_socket]
    assert again and set(again) == {json.loads(sent[0])["event_id"]}  # the same vote, again
    assert api.total_when(poll["id"], 1) == 1
    export = api.ok("GET", f"/api/v1/polls/{poll['id']}/export?format=json")
    assert len(export["votes"]) == 1


def test_a_vote_refused_by_a_busy_server_is_sent_again_after_retry_after(
    contexts: Any, api: Host
) -> None:
    room = api.room("Busy hall")
    poll = api.poll(room["id"], options=["Yes", "No"])
    page = contexts(**PHONE).new_page()
    sent: list[tuple[float, str]] = []

    def busy_once(route: Route) -> None:
        sent.append((time.monotonic(), json.loads(route.request.post_data or "{}")["event_id"]))
        if len(sent) == 1:  # what a full queue answers (503 queue_full); the server never sees it
            route.fulfill(
                status=503,
                headers={"Retry-After": "3"},
                content_type="application/json",
                body=json.dumps(
                    {"error": {"code": "queue_full", "message": "Too many votes at once."}}
                ),
            )
        else:
            route.continue_()

    page.route("**/api/v1/polls/*/votes", busy_once)
    on_socket = socket_votes(page)
    page.goto(f"/j/{room['code']}")
    vote_on(page, "Yes")
    receipt = page.locator(f"#poll-{poll['id']} [data-receipt]")
    expect(receipt).to_contain_text("Everyone is voting at once")
    # Another poll opens meanwhile: the list is refreshed, and the vote still says it waits.
    api.poll(room["id"], question="And then?", options=["A", "B"])
    expect(page.locator(".question", has_text="And then?")).to_be_visible()
    expect(receipt).to_contain_text("Everyone is voting at once")
    expect(receipt).to_have_text("Counted.", timeout=20_000)
    sent = sorted(sent + on_socket)  # sent again on the socket, open by then, or POSTed
    assert [event for _, event in sent] == [sent[0][1]] * 2  # the same vote, sent twice
    assert sent[1][0] - sent[0][0] >= 2  # not before Retry-After
    assert api.total_when(poll["id"], 1) == 1


def test_notifications_arrive_live_with_an_unread_badge(contexts: Any, api: Host) -> None:
    room = api.room("Inbox")
    api.poll(room["id"], question="Here?", options=["Yes", "No"])
    page = contexts(**PHONE).new_page()
    page.goto(f"/j/{room['code']}")
    # Opening the page made no voter: the first vote does, and brings the inbox.
    expect(page.locator("[data-not-joined]")).to_be_visible()
    expect(page.locator(".inbox-link")).to_be_hidden()
    vote_on(page, "Yes")
    expect(page.locator("[data-receipt]")).to_have_text("Counted.")
    expect(page.locator("[data-not-joined]")).to_be_hidden()
    expect(page.locator(".inbox-link")).to_be_visible()
    expect(page.locator("[data-unread]")).to_be_hidden()
    api.poll(room["id"], question="Ready for the quiz?", options=["Yes", "Not yet"])
    # The new poll and its notifications (prepared, then open) arrive without a reload.
    expect(page.locator(".question", has_text="Ready for the quiz?")).to_be_visible()
    expect(page.locator("[data-unread]")).to_have_text("2")
    page.click(".inbox-link")
    expect(page.locator(".note.unread", has_text="Poll open")).to_contain_text(
        "Ready for the quiz?"
    )
    page.click("button:has-text('Mark all as read')")
    expect(page.locator(".flash")).to_have_text("Marked as read.")
    expect(page.locator(".note.unread")).to_have_count(0)
    page.click(".back-link")
    expect(page.locator("[data-unread]")).to_be_hidden()


def test_a_room_with_a_passcode_asks_for_it(contexts: Any, api: Host) -> None:
    room = api.ok("POST", "/api/v1/rooms", {"title": "Board meeting", "passcode": "tulip-42"})
    poll = api.poll(room["id"], question="Approve the budget?", options=["Yes", "No"])
    for script in (True, False):
        page = contexts(java_script_enabled=script, **PHONE).new_page()
        page.goto(f"/j/{room['code']}")
        expect(page.locator("h1")).to_have_text("Board meeting")
        expect(page.locator(".question")).to_have_count(0)  # nothing before the passcode
        page.fill("#passcode", "tulip-41")
        page.click("button:has-text('Join')")
        expect(page.locator(".flash-error")).to_have_text(
            "That is not this room's passcode: check it and try again."
        )
        page.fill("#passcode", "tulip-42")
        page.click("button:has-text('Join')")
        expect(page.locator(".flash")).to_have_text("You have joined: vote below.")
        vote_on(page, "Yes")
        if script:
            expect(page.locator("[data-receipt]")).to_have_text("Counted.")
        else:
            expect(page.locator(".flash")).to_have_text("Thank you: your vote is in.")
    assert api.total_when(poll["id"], 2) == 2


def test_a_join_refused_for_too_many_identities_says_why(browser: Browser, tmp_path: Path) -> None:
    """Behind a proxy that names the client (X-Forwarded-For), every phone here comes from one
    address: the second identity in the room is refused, with and without JavaScript."""
    server = ServerProcess(
        tmp_path / "data", OPUS_TRUSTED_PROXIES="127.0.0.1", OPUS_IDENTITIES_PER_ADDRESS="1"
    )
    server.start()
    try:
        api = Host(server.base)
        room = api.room("Crowded")
        poll = api.poll(room["id"], question="Stuffed?", options=["Yes", "No"])
        said = "This network address has already joined this room 1 time"
        for n, script in enumerate((True, True, False)):
            context = browser.new_context(
                base_url=server.base,
                java_script_enabled=script,
                extra_http_headers={"X-Forwarded-For": "10.9.8.7"},
                **PHONE,
            )
            page = context.new_page()
            page.goto(f"/j/{room['code']}")
            vote_on(page, "Yes")
            if n == 0:
                expect(page.locator("[data-receipt]")).to_have_text("Counted.")
            elif script:
                expect(page.locator("[data-receipt]")).to_contain_text(said)
            else:
                expect(page.locator(".flash-error")).to_contain_text(said)
            context.close()
        time.sleep(0.3)
        assert api.results(poll["id"])["total_votes"] == 1
    finally:
        server.stop()


# -- security ---------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(
    contexts: Any, api: Host, site: ServerProcess
) -> None:
    laptop = contexts()
    page = laptop.new_page()
    log_in(page)
    before = len(api.ok("GET", "/api/v1/rooms")["rooms"])
    for form in ({"title": "Forged"}, {"title": "Forged", "csrf": "made-up"}):
        answer = laptop.request.post("/host/rooms", form=form, max_redirects=0)
        assert answer.status == 403
        assert "expired" in answer.text()
    token = page.locator("input[name=csrf]").first.input_value()
    forged_origin = laptop.request.post(
        "/host/rooms",
        form={"title": "Forged", "csrf": token},
        headers={"Origin": "http://evil.example"},
        max_redirects=0,
    )
    assert forged_origin.status == 403
    assert len(api.ok("GET", "/api/v1/rooms")["rooms"]) == before
    real = laptop.request.post(
        "/host/rooms", form={"title": "Real", "csrf": token}, max_redirects=0
    )
    assert real.status == 303
    assert len(api.ok("GET", "/api/v1/rooms")["rooms"]) == before + 1

    # An attendee's vote form too, and the host's pages without a session.
    room = api.room("Guarded")
    poll = api.poll(room["id"])
    phone = contexts()
    phone.new_page().goto(f"/j/{room['code']}")
    answer = phone.request.post(
        f"/j/{room['code']}/polls/{poll['id']}/vote",
        form={"option": poll["options"][0]["id"]},
        max_redirects=0,
    )
    assert answer.status == 403
    assert api.results(poll["id"])["total_votes"] == 0
    stranger = phone.request.get(f"/host/rooms/{room['id']}", max_redirects=0)
    assert stranger.status == 303 and "/host/login" in stranger.headers["location"]
    assert (
        phone.request.get(f"/host/polls/{poll['id']}/export?format=csv", max_redirects=0).status
        == 303
    )


# -- the host console -------------------------------------------------------------------------


def test_host_manages_rooms_and_polls(contexts: Any, api: Host) -> None:
    page = contexts(viewport={"width": 1280, "height": 900}).new_page()
    log_in(page)
    page.fill("#title", "Monday")
    page.click("button:has-text('Create room')")
    page.fill("#rename", "Monday lecture")
    page.click("button:has-text('Rename')")
    expect(page.locator("h1")).to_have_text("Monday lecture")
    for question in ("First?", "Second?"):
        page.fill("#question", question)
        page.fill("#options", "A\nB")
        page.click("button:has-text('Add as draft')")
    # A refused poll keeps what was typed.
    page.fill("#question", "Only one option?")
    page.fill("#options", "Lonely")
    page.click("button:has-text('Add as draft')")
    expect(page.locator(".side .flash-error")).to_contain_text("options")
    expect(page.locator("#question")).to_have_value("Only one option?")

    titles = page.locator(".hpoll h3")
    expect(titles).to_have_text(["1. First?", "2. Second?"])
    page.locator(".hpoll", has_text="Second?").get_by_label("Move up").click()
    expect(titles).to_have_text(["1. Second?", "2. First?"])

    page.locator(".hpoll", has_text="First?").get_by_role("link", name="Edit").click()
    page.fill("#question", "First, edited?")
    page.fill("#options", "A\nB\nC")
    page.click("button:has-text('Save')")
    edited = page.locator(".hpoll", has_text="First, edited?")
    expect(edited.locator(".option-list li")).to_have_text(["A", "B", "C"])

    edited.locator("button:has-text('Hide results until close')").click()
    edited = page.locator(".hpoll", has_text="First, edited?")
    expect(edited.locator(".tag")).to_contain_text(["results hidden until close"])
    edited.locator("button[data-action=open]").click()
    room_id = page.url.split("/host/rooms/")[1].split("#")[0]
    room = api.ok("GET", f"/api/v1/rooms/{room_id}")
    first = next(p for p in room["polls"] if p["question"] == "First, edited?")
    assert first["status"] == "open" and first["hide_results"] is True

    with page.expect_download() as download:
        page.locator(".hpoll", has_text="First, edited?").get_by_role("link", name="CSV").click()
    assert "option_label" in Path(download.value.path()).read_text()
    with page.expect_download() as download:
        page.get_by_role("link", name="Room JSON").click()
    assert "First, edited?" in Path(download.value.path()).read_text()
    printed = page.context.new_page()
    printed.goto(f"/host/rooms/{room_id}/print")
    expect(printed.locator("h2")).to_have_text(["1. First, edited?"])  # drafts are not printed

    page.on("dialog", lambda dialog: dialog.accept())
    page.fill("#copy-title", "Tuesday lecture")
    page.click("button:has-text('Duplicate with every poll')")
    expect(page.locator("h1")).to_have_text("Tuesday lecture")
    expect(page.locator(".hpoll .badge")).to_have_text(["draft", "draft"])
    page.click("button:has-text('Delete room')")
    expect(page.locator("h1")).to_have_text("Rooms")
    expect(page.locator(".rooms")).not_to_contain_text("Tuesday lecture")
    expect(page.locator(".rooms")).to_contain_text("Monday lecture")


# -- poll kinds -------------------------------------------------------------------------------


def test_rating_and_word_cloud(contexts: Any, api: Host) -> None:
    room = api.room("Feedback")
    rating = api.poll(room["id"], question="How was the talk?", kind="rating", scale=5)
    screen = contexts(viewport={"width": 1600, "height": 900}).new_page()
    screen.goto(f"/screen/{room['code']}")
    expect(screen.locator("[data-question]")).to_have_text("How was the talk?")
    for value in ("4", "5"):
        phone = contexts(**PHONE).new_page()
        phone.goto(f"/j/{room['code']}")
        phone.locator(".step", has_text=value).click()
        phone.click("form.vote button:has-text('Vote')")
        expect(phone.locator("[data-receipt]")).to_have_text("Counted.")
    expect(screen.locator("[data-average]")).to_have_text("4.5")
    assert api.results(rating["id"])["average"] == 4.5

    api.close(rating["id"])
    cloud = api.poll(
        room["id"], question="One word for today?", kind="text", blocked_words=["boring"]
    )
    expect(screen.locator("[data-question]")).to_have_text("One word for today?")
    for answer in ("Inspiring", "New York", "new york!", "boring"):
        phone = contexts(**PHONE).new_page()
        phone.goto(f"/j/{room['code']}")
        phone.locator(f"#poll-{cloud['id']} input[name=text]").fill(answer)
        phone.click(f"#poll-{cloud['id']} button:has-text('Send')")
        expect(phone.locator(f"#poll-{cloud['id']} [data-receipt]")).to_have_text("Counted.")
    expect(screen.locator(".word[data-word=inspiring]")).to_have_attribute("data-count", "1")
    # A short answer stays one phrase.
    expect(screen.locator('.word[data-word="new york"]')).to_have_attribute("data-count", "2")
    expect(screen.locator(".word[data-word=boring]")).to_have_count(0)


def test_questions_are_asked_moderated_and_upvoted(contexts: Any, api: Host) -> None:
    room = api.room("Ask me anything")
    api.poll(room["id"], question="Your questions", kind="qa", moderated=True)
    console = contexts(viewport={"width": 1280, "height": 900}).new_page()
    log_in(console)
    console.goto(f"/host/rooms/{room['id']}")
    expect(console.locator("[data-connection]")).to_have_text("Live")
    asker, voter = (contexts(**PHONE).new_page() for _ in range(2))
    for page in (asker, voter):
        page.goto(f"/j/{room['code']}")
    asker.fill("textarea[name=text]", "Will the slides be online?")
    asker.click("button:has-text('Ask')")
    expect(asker.locator("[data-receipt]")).to_have_text("Your question is in.")
    # Pending: the host sees it (live), attendees do not yet.
    pending = console.locator(".mod-pending", has_text="Will the slides be online?")
    expect(pending).to_be_visible()
    expect(voter.locator(".qa-item")).to_have_count(0)
    pending.locator("button:has-text('Approve')").click()
    expect(voter.locator(".qa-item")).to_have_text(re.compile("Will the slides be online?"))
    voter.locator(".qa-item .upvote-button").click()
    expect(voter.locator("[data-receipt]")).to_have_text("Upvoted.")
    expect(asker.locator(".qa-item [data-upvotes]")).to_have_text("1")
    expect(console.locator(".mod", has_text="slides")).to_contain_text("▲ 1")
    console.locator(".mod", has_text="slides").locator("button:has-text('Pin')").click()
    expect(voter.locator(".qa-item .tag-pin")).to_have_text("Pinned")
    # The console's own HTML lists the questions: no live frame or script needed.
    plain = contexts(java_script_enabled=False).new_page()
    log_in(plain)
    plain.goto(f"/host/rooms/{room['id']}")
    expect(plain.locator(".mod-visible.pinned")).to_contain_text("▲ 1 · shown · pinned")


def test_a_short_quiz_with_three_phones(contexts: Any, api: Host) -> None:
    console = contexts(viewport={"width": 1280, "height": 900}).new_page()
    log_in(console)
    console.fill("#title", "Friday quiz")
    console.click("button:has-text('Create room')")
    console.fill("#question", "Which is a gas giant?")
    console.select_option("#kind", "quiz")
    expect(console.locator("#scale")).to_be_hidden()  # only the quiz's fields
    console.fill("#options", "Mars\n*Saturn\nVenus")
    console.fill("#time_limit_s", "60")
    console.click("button:has-text('Add as draft')")
    expect(console.locator(".option-list .correct")).to_have_text("Saturn ✓")
    console.click("button[data-action=open]")
    code = console.locator(".big-code").inner_text()

    screen = contexts(viewport={"width": 1600, "height": 900}).new_page()
    screen.goto(f"/screen/{code}")
    expect(screen.locator("[data-countdown]")).to_have_text(re.compile(r"^(\d+ s|1:00)$"))
    phones = []
    for choice in ("Saturn", "Saturn", "Mars"):
        phone = contexts(**PHONE).new_page()
        phone.goto(f"/j/{code.replace('-', '')}")
        expect(phone.locator(".countdown")).to_have_text(re.compile(r"^(\d+ s|1:00)$"))
        vote_on(phone, choice, "Answer")
        expect(phone.locator("[data-receipt]")).to_have_text("Counted.")
        phones.append(phone)
    expect(screen.locator("[data-total]")).to_have_text("3")
    console.reload()
    console.click("button[data-action=close]")
    expect(screen.locator(".bar.correct")).to_contain_text("Saturn")
    expect(phones[0].locator(".verdict")).to_have_text("Right answer!")
    expect(phones[2].locator(".verdict")).to_have_text("Not this time.")
    # The fastest right answer leads; a wrong one scores nothing.
    names = [phone.locator(".room-code b").inner_text() for phone in phones]
    board = screen.locator(".leaderboard li")
    expect(board).to_have_count(3)
    expect(board.first).to_contain_text(names[0])
    expect(board.last).to_contain_text(names[2])
    expect(board.last.locator("b")).to_have_text("0")


# -- the screen on its own --------------------------------------------------------------------


def test_screen_keys_and_recovery_after_a_restart(browser: Browser, server: ServerProcess) -> None:
    server.start()
    api = Host(server.base)
    room = api.room("Resilient")
    first = api.poll(room["id"], question="First question?")
    api.close(first["id"])
    second = api.poll(
        room["id"], question="Second question?", options=["Yes", "No"], hide_results=True
    )
    context = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 720})
    try:
        screen = context.new_page()
        screen.goto(f"/screen/{room['code']}")
        question = screen.locator("[data-question]")
        expect(question).to_have_text("Second question?")  # the open one
        expect(screen.locator("[data-curtain]")).to_contain_text("appear when the poll closes")
        screen.keyboard.press("p")
        expect(question).to_have_text("First question?")
        screen.keyboard.press("h")
        expect(screen.locator("[data-curtain]")).to_be_visible()
        screen.keyboard.press("h")
        expect(screen.locator("[data-curtain]")).to_be_hidden()
        screen.keyboard.press("n")
        expect(question).to_have_text("Second question?")
        screen.keyboard.press("?")
        expect(screen.locator("[data-help]")).to_be_visible()
        screen.keyboard.press("Escape")
        screen.evaluate("window.sameDocument = true")

        server.kill()  # the network drops: the screen keeps trying
        expect(screen.locator("[data-connection]")).to_have_text("Reconnecting…")
        server.start()
        expect(screen.locator("[data-connection]")).to_have_text("Live", timeout=30_000)
        api.close(second["id"])  # its hidden results now show, after the restart
        expect(screen.locator("[data-total]")).to_have_text("0")
        expect(screen.locator(".bar")).to_have_count(2)
        assert screen.evaluate("window.sameDocument") is True
    finally:
        context.close()
