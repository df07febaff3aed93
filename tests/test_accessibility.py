"""Accessibility of every page, in real headless Chromium against a real `opus serve`.

axe-core (bundled in axe-playwright-python: nothing is fetched) finds no violation on any page,
in a light and a dark colour scheme; form fields stand out from what surrounds them (WCAG
1.4.11, which axe does not check); motion stops under `prefers-reduced-motion`; an attendee
and the host get through with the keyboard alone, and focus never falls back to the page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from browser import PHONE, Host
from playwright.sync_api import Browser, Locator, Page, expect

from conftest import ADMIN, ServerProcess
from opus import i18n

expect.set_options(timeout=10_000)

SCHEMES = ["light", "dark"]
# English, and Arabic: right to left, the layout mirrored.
LOCALES = ["en-GB", "ar-EG"]
LAPTOP = {"viewport": {"width": 1280, "height": 900}}
PROJECTOR = {"viewport": {"width": 1600, "height": 900}}
AXE = Axe()


# -- the stage: one room with a poll of each kind, votes, questions, a draft -----------------


@dataclass
class Stage:
    code: str
    room_id: str
    passcode_code: str
    passcode_room_id: str
    draft_id: str
    visible: int  # polls the screen steps through
    questions: list[str]
    voter: dict[str, Any]  # a phone that voted in every poll (its cookies)
    host: dict[str, Any]  # a logged-in host browser (its cookies)
    polls: dict[str, dict[str, Any]] = field(default_factory=dict)


def newcomer(api: Host, code: str) -> str:
    status, joined = api.call("POST", "/api/v1/join", {"code": code}, token="")
    assert status == 201, joined
    return str(joined["voter_token"])


def cast(api: Host, token: str, poll_id: str, body: dict[str, Any]) -> None:
    status, answer = api.call("POST", f"/api/v1/polls/{poll_id}/votes", body, token=token)
    assert status == 202, answer


@pytest.fixture(scope="module")
def api(site: ServerProcess) -> Host:
    return Host(site.base)


def every_kind(api: Host, title: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A room with an open poll of each kind (and a closed one before them)."""
    room = api.room(title)
    rid = room["id"]
    polls = {
        "earlier": api.poll(rid, question="Tea or coffee?", options=["Tea", "Coffee"]),
        "single": api.poll(rid, question="Which colour?"),
        "multiple": api.poll(
            rid, question="Which fruits?", kind="multiple", options=["Apple", "Pear", "Plum"]
        ),
        "rating": api.poll(rid, question="How was the talk?", kind="rating", scale=5),
        "text": api.poll(rid, question="One word for today?", kind="text"),
        "qa": api.poll(rid, question="Your questions", kind="qa"),
        "quiz": api.poll(
            rid,
            question="Which is a gas giant?",
            kind="quiz",
            options=["Mars", "Saturn", "Venus"],
            correct=[1],
            time_limit_s=600,
        ),
    }
    api.close(polls["earlier"]["id"])
    return room, polls


@pytest.fixture(scope="module")
def stage(browser: Browser, site: ServerProcess, api: Host) -> Stage:
    room, polls = every_kind(api, "Every kind")
    code = room["code"]
    ids = {kind: poll["id"] for kind, poll in polls.items()}
    # A quiz already played (the leaderboard), and a draft (its Open and Edit buttons).
    played = api.poll(
        room["id"], question="Which is a moon?", kind="quiz", options=["Io", "Mars"], correct=[0]
    )
    draft = api.poll(room["id"], question="Next week?", options=["Yes", "No"], open=False)
    questions = [
        "Will the slides be online?",
        "Is there a break?",
        "Where is the lab?",
        "Who wrote the textbook?",
    ]
    for n, text in enumerate(questions):
        token = newcomer(api, code)
        cast(api, token, ids["qa"], {"text": text})
        cast(api, token, ids["text"], {"text": ["inspiring", "long", "inspiring", "clear"][n]})
        cast(api, token, played["id"], {"option_ids": [played["options"][n % 2]["id"]]})
    api.close(played["id"])
    assert api.total_when(ids["qa"], len(questions)) == len(questions)
    qa_ids = [
        q["event_id"]
        for q in api.ok("GET", f"/api/v1/polls/{ids['qa']}/export?format=json")["votes"]
    ]
    assert len(qa_ids) == 4

    # A phone that voted in every open poll and upvoted a question: results, receipts, inbox.
    phone = browser.new_context(base_url=site.base, **PHONE)
    assert phone.request.post("/api/v1/join", data={"code": code}).status == 201
    bodies = {
        "single": {"option_ids": [polls["single"]["options"][1]["id"]]},
        "multiple": {"option_ids": [o["id"] for o in polls["multiple"]["options"][:2]]},
        "rating": {"value": 4},
        "text": {"text": "clear"},
        "qa": {"upvote": qa_ids[0]},
        "quiz": {"option_ids": [polls["quiz"]["options"][1]["id"]]},
    }
    for kind, body in bodies.items():
        answer = phone.request.post(f"/api/v1/polls/{ids[kind]}/votes", data=body)
        assert answer.status == 202, answer.text()
    api.total_when(ids["single"], 1)
    voter = phone.storage_state()
    phone.close()

    laptop = browser.new_context(base_url=site.base)
    log_in(laptop.new_page())
    host = laptop.storage_state()
    laptop.close()

    guarded = api.ok("POST", "/api/v1/rooms", {"title": "Board meeting", "passcode": "tulip-42"})
    return Stage(
        code=code,
        room_id=room["id"],
        passcode_code=guarded["code"],
        passcode_room_id=guarded["id"],
        draft_id=draft["id"],
        visible=len(polls) + 1,
        questions=questions,
        voter=voter,
        host=host,
        polls=polls,
    )


def log_in(page: Page) -> None:
    page.goto("/host/login")
    page.fill("#token", ADMIN)
    page.click("button:has-text('Log in')")
    expect(page.locator("h1")).to_have_text("Rooms")


# -- what is checked on each page -----------------------------------------------------------


def axe_report(page: Page) -> str:
    """axe-core's violations of every rule, its experimental ones too (such as
    label-content-name-mismatch), or "" when there is none."""
    page.evaluate(AXE.axe_script)
    experimental = page.evaluate("axe.getRules(['experimental']).map(r => r.ruleId)")
    options = {
        "resultTypes": ["violations"],
        "rules": {rule: {"enabled": True} for rule in experimental},
    }
    results = AXE.run(page, options=options)
    return results.generate_report() if results.violations_count else ""


# The contrast of each visible form field's border against the field and what surrounds it.
FAINT_FIELDS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  }).reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const behind = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const faint = [];
  const fields = "input:not([type=hidden]):not([type=radio]):not([type=checkbox]),"
    + " select, textarea";
  for (const el of document.querySelectorAll(fields)) {
    if (!el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    const line = rgb(style.borderTopColor).slice(0, 3);
    const worst = Math.min(ratio(line, behind(el)), ratio(line, behind(el.parentElement)));
    if (worst < 3) faint.push(`${el.outerHTML.slice(0, 80)}: ${worst.toFixed(2)}:1`);
  }
  return faint;
}"""


def faint_fields(page: Page) -> list[str]:
    return list(page.evaluate(FAINT_FIELDS))


def check(page: Page, where: str) -> list[str]:
    problems = []
    report = axe_report(page)
    if report:
        problems.append(f"{where}: {report}")
    page.evaluate("document.activeElement && document.activeElement.blur()")  # at rest
    problems += [f"{where}: field border under 3:1: {f}" for f in faint_fields(page)]
    return problems


# -- every page, every scheme ---------------------------------------------------------------

PAGES = [
    "home",
    "passcode",
    "attendee",
    "attendee-voted",
    "inbox",
    "screen",
    "host-login",
    "host-rooms",
    "host-room",
    "host-edit",
    "print",
    "error",
]


def open_page(
    browser: Browser, site: ServerProcess, stage: Stage, name: str, **options: Any
) -> Page:
    """The named page, in a new browser context with these options, ready to be checked."""
    code = stage.code
    where: dict[str, tuple[str, dict[str, Any]]] = {
        "home": ("/", PHONE),
        "passcode": (f"/j/{stage.passcode_code}", PHONE),
        "attendee": (f"/j/{code}", PHONE),
        "attendee-voted": (f"/j/{code}", {**PHONE, "storage_state": stage.voter}),
        "inbox": (f"/j/{code}/inbox", {**PHONE, "storage_state": stage.voter}),
        "screen": (f"/screen/{code}", PROJECTOR),
        "host-login": ("/host/login", LAPTOP),
        "host-rooms": ("/host", {**LAPTOP, "storage_state": stage.host}),
        "host-room": (f"/host/rooms/{stage.room_id}", {**LAPTOP, "storage_state": stage.host}),
        "host-edit": (
            f"/host/polls/{stage.draft_id}/edit",
            {**LAPTOP, "storage_state": stage.host},
        ),
        "print": (f"/host/rooms/{stage.room_id}/print", {**LAPTOP, "storage_state": stage.host}),
        "error": ("/screen/ZZZZZZZZ", PHONE),
    }
    path, device = where[name]
    context = browser.new_context(base_url=site.base, **device, **options)
    page = context.new_page()
    page.goto(path)
    if name in ("attendee", "attendee-voted", "screen", "host-room"):
        live = _said(options.get("locale"), "Live")
        expect(page.locator("[data-connection]").first).to_have_text(
            re.compile(f"{re.escape(live)}|^$")
        )
    if name == "attendee-voted":
        expect(page.locator("[data-receipt][data-state=counted]")).to_have_count(5)
    return page


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", PAGES)
def test_every_page_passes_axe_and_its_fields_stand_out(
    browser: Browser, site: ServerProcess, stage: Stage, name: str, scheme: str, locale: str
) -> None:
    page = open_page(browser, site, stage, name, color_scheme=scheme, locale=locale)
    try:
        problems = check_all(page, name, stage, locale)
        assert not problems, "\n".join(problems)
    finally:
        page.context.close()


def _said(locale: str | None, message: str, **values: Any) -> str:
    """A message as a page in this browser locale says it."""
    lang = i18n.negotiate(locale or "")
    text = i18n.translations(lang).gettext(message)
    return text % values if values else text


def check_all(page: Page, name: str, stage: Stage, locale: str = "en-GB") -> list[str]:
    """What `check` finds on the page (on the screen, with each poll it shows)."""
    problems = check(page, name)
    # Every poll the projector shows, from the last one back (once per look: right to left
    # changes the layout, not the colours each kind of chart is drawn in).
    if name == "screen" and not locale.startswith("ar"):
        position = page.locator("[data-position]")
        for _ in range(stage.visible):
            page.keyboard.press("n")
        for n in range(stage.visible, 1, -1):
            expect(position).to_have_text(
                _said(locale, "Poll %(n)s of %(total)s", n=n, total=stage.visible)
            )
            page.keyboard.press("p")
            problems += check(page, f"screen, poll {n - 1}")
    return problems


# A light stage with a yellow accent (black text on buttons), dark phones with a teal one, and
# each page's own theme with a crimson one.
LOOKS = [("light", "#ffd400"), ("dark", "#0f766e"), ("auto", "#be123c")]
THEMED = ["passcode", "attendee", "attendee-voted", "inbox", "screen"]


@pytest.mark.parametrize(("theme", "accent"), LOOKS)
@pytest.mark.parametrize("name", THEMED)
def test_every_room_look_passes_axe(
    browser: Browser,
    site: ServerProcess,
    stage: Stage,
    api: Host,
    name: str,
    theme: str,
    accent: str,
) -> None:
    rooms = (stage.room_id, stage.passcode_room_id)
    for room_id in rooms:
        api.ok("PATCH", f"/api/v1/rooms/{room_id}", {"theme": theme, "accent": accent})
    # The device's own scheme, the other way: the room's theme wins.
    page = open_page(
        browser, site, stage, name, color_scheme="light" if theme == "dark" else "dark"
    )
    try:
        expect(page.locator("html")).to_have_attribute("style", re.compile(f"--accent: {accent}"))
        problems = check_all(page, name, stage)
        assert not problems, "\n".join(problems)
    finally:
        page.context.close()
        for room_id in rooms:
            api.ok("PATCH", f"/api/v1/rooms/{room_id}", {"theme": "auto", "accent": "#4338ca"})


# -- motion ---------------------------------------------------------------------------------

MOVING = """() => [...document.querySelectorAll("*")].filter((el) => {
  const style = getComputedStyle(el);
  const long = (value) => value.split(",").some((t) => parseFloat(t) > 0);
  return long(style.transitionDuration) || long(style.animationDuration);
}).map((el) => el.className || el.tagName)"""


@pytest.mark.parametrize("name", ["attendee-voted", "screen"])
def test_motion_stops_when_the_device_asks_for_less(
    browser: Browser, site: ServerProcess, stage: Stage, name: str
) -> None:
    moving = open_page(browser, site, stage, name)
    still = open_page(browser, site, stage, name, reduced_motion="reduce")
    try:
        assert moving.evaluate(MOVING), "nothing moves: this test would prove nothing"
        assert still.evaluate(MOVING) == []
    finally:
        moving.context.close()
        still.context.close()


# -- the keyboard alone ---------------------------------------------------------------------


def tab_to(page: Page, target: Locator, limit: int = 120) -> None:
    """Press Tab until `target` has the focus (as a person tabs through the page)."""
    for _ in range(limit):
        if target.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {target}")


def focused(page: Page) -> str:
    """What has the focus, as its tag, attributes and text."""
    return str(
        page.evaluate(
            "(() => { const el = document.activeElement;"
            " return el === document.body || !el ? 'BODY' : el.outerHTML.slice(0, 200); })()"
        )
    )


def settled_focus(page: Page, card: Locator) -> None:
    """After a vote the focus is on the card's receipt (what says it counted) or in its
    form: never back on the page's body."""
    inside = "el => el.contains(document.activeElement) && document.activeElement !== document.body"
    expect(card.locator("[data-receipt]")).not_to_have_text("Sending…")
    page.wait_for_function(
        "id => { const c = document.getElementById(id);"
        " return c && c.contains(document.activeElement); }",
        arg=card.get_attribute("id"),
    )
    assert card.evaluate(inside), focused(page)


def test_an_attendee_votes_in_every_kind_with_the_keyboard_alone(
    browser: Browser, site: ServerProcess, api: Host
) -> None:
    room, polls = every_kind(api, "Keys only")
    token = newcomer(api, room["code"])
    cast(api, token, polls["qa"]["id"], {"text": "Can we see the code?"})
    context = browser.new_context(base_url=site.base, **PHONE)
    page = context.new_page()
    try:
        page.goto(f"/j/{room['code']}")

        def card(kind: str) -> Locator:
            return page.locator(f"#poll-{polls[kind]['id']}")

        def counted(kind: str, text: str = "Counted.") -> None:
            expect(card(kind).locator("[data-receipt]")).to_have_text(text)
            settled_focus(page, card(kind))

        # Single and quiz: Tab into the radio group, an arrow picks the next option.
        for kind, key in (("single", "Enter"), ("quiz", "Space")):
            tab_to(page, card(kind).locator("input[type=radio]").first)
            page.keyboard.press("ArrowDown")
            expect(card(kind).locator("input[type=radio]").nth(1)).to_be_checked()
            tab_to(page, card(kind).locator("button[type=submit]"))
            page.keyboard.press(key)
            counted(kind)
        # Multiple: Space ticks a box, Tab moves to the next one.
        boxes = card("multiple").locator("input[type=checkbox]")
        tab_to(page, boxes.first)
        page.keyboard.press("Space")
        page.keyboard.press("Tab")
        page.keyboard.press("Space")
        tab_to(page, card("multiple").locator("button[type=submit]"))
        page.keyboard.press("Enter")
        counted("multiple")
        # Rating: the steps are radios too.
        tab_to(page, card("rating").locator("input[type=radio]").first)
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        tab_to(page, card("rating").locator("button[type=submit]"))
        page.keyboard.press("Enter")
        counted("rating")
        # Word cloud: Enter in the field sends it.
        tab_to(page, card("text").locator("input[name=text]"))
        page.keyboard.type("curious")
        page.keyboard.press("Enter")
        counted("text")
        # Q&A: ask, then upvote someone else's question.
        tab_to(page, card("qa").locator("textarea"))
        page.keyboard.type("Is it recorded?")
        tab_to(page, card("qa").locator("form.vote button[type=submit]"))
        page.keyboard.press("Enter")
        counted("qa", "Your question is in.")
        upvote = card("qa").locator(".qa-item", has_text="Can we see the code?").locator("button")
        tab_to(page, upvote)
        page.keyboard.press("Enter")
        counted("qa", "Upvoted.")

        assert api.results(polls["single"]["id"])["options"][1]["votes"] == 1
        assert api.results(polls["quiz"]["id"])["total_votes"] == 1
        assert [o["votes"] for o in api.results(polls["multiple"]["id"])["options"]] == [1, 1, 0]
        assert api.results(polls["rating"]["id"])["average"] == 4
        assert api.total_when(polls["text"]["id"], 1) == 1
        questions = api.results(polls["qa"]["id"])["questions"]
        assert {q["text"]: q["upvotes"] for q in questions} == {
            "Can we see the code?": 1,
            "Is it recorded?": 0,
        }
    finally:
        context.close()


def test_the_host_opens_and_closes_a_poll_with_the_keyboard_alone(
    browser: Browser, site: ServerProcess, api: Host
) -> None:
    room = api.room("Keyboard host")
    api.poll(room["id"], question="First draft?", open=False)
    poll = api.poll(room["id"], question="Second draft?", open=False)
    context = browser.new_context(base_url=site.base, **LAPTOP)
    page = context.new_page()
    try:
        page.goto("/host")
        expect(page.locator("#token")).to_be_focused()  # the login form's only field
        page.keyboard.type(ADMIN)
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Rooms")
        tab_to(page, page.get_by_role("link", name="Keyboard host").first)
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Keyboard host")
        article = page.locator(f"#poll-{poll['id']}")
        tab_to(page, article.get_by_role("button", name=re.compile("^Open")))
        page.keyboard.press("Enter")
        expect(article.locator(".badge")).to_have_text("open")
        tab_to(page, article.get_by_role("button", name=re.compile("^Close")))
        page.keyboard.press("Enter")
        expect(article.locator(".badge")).to_have_text("closed")
        assert api.ok("GET", f"/api/v1/polls/{poll['id']}")["status"] == "closed"
    finally:
        context.close()


def test_the_host_shows_the_next_poll_and_closes_it_with_the_keyboard_alone(
    browser: Browser, site: ServerProcess, api: Host
) -> None:
    """Presenter mode from the keyboard: Next shows the first poll (and opens it), Show puts
    another on the screen, Close in the presenter bar ends it."""
    room = api.ok("POST", "/api/v1/rooms", {"title": "Keyboard presenter", "pace": "presenter"})
    first = api.poll(room["id"], question="Warm-up?", open=False)
    second = api.poll(room["id"], question="Main point?", open=False)
    context = browser.new_context(base_url=site.base, **LAPTOP)
    page = context.new_page()
    try:
        page.goto("/host")
        expect(page.locator("#token")).to_be_focused()  # typing before it would go nowhere
        page.keyboard.type(ADMIN)
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Rooms")
        page.goto(f"/host/rooms/{room['id']}")
        tab_to(page, page.locator("button[data-action=next]"))
        page.keyboard.press("Enter")
        expect(page.locator("[data-now-showing]")).to_contain_text("Warm-up?")
        article = page.locator(f"#poll-{second['id']}")
        tab_to(page, article.get_by_role("button", name=re.compile("^Show")))
        page.keyboard.press("Enter")
        expect(page.locator("[data-now-showing]")).to_contain_text("Main point?")
        tab_to(page, page.locator("button[data-action=close-shown]"))
        page.keyboard.press("Enter")
        expect(article.locator(".badge")).to_have_text("closed")
        shown = api.ok("GET", f"/api/v1/rooms/{room['id']}")
        assert shown["shown_poll_id"] == second["id"]
        assert api.ok("GET", f"/api/v1/polls/{first['id']}")["status"] == "open"
        assert api.ok("GET", f"/api/v1/polls/{second['id']}")["status"] == "closed"
    finally:
        context.close()


# -- the host console says which poll or question each button acts on -----------------------

NAMES = """(root) => [...root.querySelectorAll("button, a")].map((el) =>
  (el.getAttribute("aria-label") || el.textContent).replace(/\\s+/g, " ").trim())"""


def test_console_buttons_name_their_poll_or_question(
    browser: Browser, site: ServerProcess, stage: Stage
) -> None:
    page = open_page(browser, site, stage, "host-room")
    try:
        for poll in page.locator(".hpoll").all():
            question = poll.locator("h3").first.inner_text().split(". ", 1)[1]
            names = poll.locator(".hpoll-actions").evaluate(NAMES)
            assert names and all(question in name for name in names), (question, names)
            for item in poll.locator(".mod").all():
                text = item.locator(".q-text").inner_text()
                names = item.locator(".mod-actions").evaluate(NAMES)
                assert len(names) == 3 and all(text in name for name in names), (text, names)
        # What a screen reader lists: each name once, and starting with what is shown.
        every = page.locator(".polls-col").evaluate(NAMES)
        assert len(every) == len(set(every)), sorted(n for n in every if every.count(n) > 1)
        draft = page.locator(f"#poll-{stage.draft_id}")
        expect(draft.get_by_role("button", name=re.compile("^Open"))).to_have_accessible_name(
            re.compile("^Open .*Next week\\?")
        )
        page.goto("/host")
        names = page.locator(".rooms").evaluate(NAMES)
        assert len(names) == len(set(names)), names
        row = page.locator(".rooms tbody tr", has_text="Board meeting")
        expect(row.get_by_role("link", name=re.compile("^Screen"))).to_have_accessible_name(
            re.compile("^Screen .*Board meeting")
        )
    finally:
        page.context.close()


# -- the room's look follows the host's choice, live ------------------------------------------


def colour_of(locator: Locator, prop: str) -> str:
    return str(locator.evaluate(f"el => getComputedStyle(el).{prop}"))


def test_the_screen_and_phones_follow_the_rooms_theme_and_accent(
    browser: Browser, site: ServerProcess, api: Host
) -> None:
    room = api.room("Bright hall")
    api.poll(room["id"], question="Can you read this?", options=["Yes", "No"])
    path = f"/api/v1/rooms/{room['id']}"
    screen_context = browser.new_context(base_url=site.base, color_scheme="dark", **PROJECTOR)
    phone_context = browser.new_context(base_url=site.base, color_scheme="dark", **PHONE)
    try:
        screen = screen_context.new_page()
        screen.goto(f"/screen/{room['code']}")
        stage = screen.locator("body")
        question = screen.locator("[data-question]")
        expect(question).to_have_text("Can you read this?")
        expect(stage).to_have_css("color", "rgb(248, 250, 252)")  # light on the dark stage
        phone = phone_context.new_page()
        phone.goto(f"/j/{room['code']}")
        vote = phone.locator("form.vote button[type=submit]")
        expect(vote).to_have_css("background-color", "rgb(67, 56, 202)")  # today's indigo
        expect(phone.locator("body")).to_have_css("background-color", "rgb(243, 244, 248)")

        # A bright hall: the host makes the room light, with a teal accent, in the console.
        console = browser.new_context(base_url=site.base, **LAPTOP)
        host = console.new_page()
        log_in(host)
        host.goto(f"/host/rooms/{room['id']}")
        host.select_option("#theme", "light")
        host.fill("#accent", "#0f766e")
        host.click("button:has-text('Save colours')")
        expect(host.locator(".flash")).to_contain_text("new colours")
        expect(host.locator("#theme")).to_have_value("light")
        console.close()
        expect(stage).to_have_css("color", "rgb(15, 23, 42)")  # dark text on a light stage
        assert "rgb(248, 250, 252)" in colour_of(stage, "backgroundImage")
        expect(question).to_have_text("Can you read this?")
        expect(vote).to_have_css("background-color", "rgb(15, 118, 110)")
        expect(vote).to_have_css("color", "rgb(255, 255, 255)")
        # A light accent: the buttons' text turns black.
        api.ok("PATCH", path, {"accent": "#ffd400"})
        expect(vote).to_have_css("background-color", "rgb(255, 212, 0)")
        expect(vote).to_have_css("color", "rgb(0, 0, 0)")
        # Dark: the phones too, whatever their own setting.
        api.ok("PATCH", path, {"theme": "dark"})
        expect(phone.locator("body")).to_have_css("background-color", "rgb(15, 23, 42)")
        expect(stage).to_have_css("color", "rgb(248, 250, 252)")
        # A phone opening the page now gets it at once, without its script too.
        plain = browser.new_context(base_url=site.base, java_script_enabled=False, **PHONE)
        fresh = plain.new_page()
        fresh.goto(f"/j/{room['code']}")
        expect(fresh.locator("form.vote button[type=submit]")).to_have_css(
            "background-color", "rgb(255, 212, 0)"
        )
        expect(fresh.locator("body")).to_have_css("background-color", "rgb(15, 23, 42)")
        plain.close()
    finally:
        screen_context.close()
        phone_context.close()
