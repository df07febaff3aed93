"""The pages' language in real Chromium against a real `opus serve`: a phone speaks its
browser's language until it picks another at the foot of the page (kept in a cookie, with or
without JavaScript); Arabic reads right to left; the projector screen ignores a phone's pick.
The strings are English until the translations land: these tests read `lang` and `dir`."""

from __future__ import annotations

from typing import Any

import pytest
from browser import PHONE, Host
from playwright.sync_api import Page, expect

from conftest import ServerProcess

expect.set_options(timeout=10_000)


@pytest.fixture
def api(site: ServerProcess) -> Host:
    return Host(site.base)


def speaks(page: Page, lang: str, direction: str = "ltr") -> None:
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.locator("html")).to_have_attribute("dir", direction)


def test_a_phone_speaks_its_browsers_language_until_it_picks_another(
    contexts: Any, api: Host
) -> None:
    room = api.room("Langues")
    api.poll(room["id"], question="Café ou thé ?", options=["Café", "Thé"])
    for script in (True, False):
        page = contexts(locale="fr-FR", java_script_enabled=script, **PHONE).new_page()
        page.goto(f"/j/{room['code']}")
        speaks(page, "fr")
        links = page.locator("nav.languages")  # its name is in the page's language
        expect(links.get_by_role("link")).to_have_count(6)
        expect(links.locator("[aria-current=true]")).to_have_text("Français")
        german = links.get_by_role("link", name="Deutsch")
        expect(german).to_have_attribute("lang", "de")
        expect(german).to_have_attribute("hreflang", "de")
        german.click()
        speaks(page, "de")
        expect(links.locator("[aria-current=true]")).to_have_text("Deutsch")
        # The pick is this phone's: its next pages speak German, whatever the browser asks.
        page.goto(f"/j/{room['code']}")
        speaks(page, "de")
        page.goto("/")
        speaks(page, "de")


def test_an_arabic_phone_reads_right_to_left(contexts: Any, api: Host) -> None:
    room = api.room("غرفة")
    page = contexts(locale="ar-EG", **PHONE).new_page()
    page.goto(f"/j/{room['code']}")
    speaks(page, "ar", "rtl")
    page.goto("/")
    speaks(page, "ar", "rtl")
    page.get_by_role("link", name="English").click()
    speaks(page, "en")


def test_the_screen_ignores_a_phones_pick(contexts: Any, api: Host) -> None:
    """The projector speaks the room's language (then the browser's): a host who picked
    another language on a phone page of the same browser does not change what the hall
    reads."""
    room = api.room("Salle")
    laptop = contexts(locale="fr-FR", viewport={"width": 1280, "height": 800})
    page = laptop.new_page()
    page.goto(f"/j/{room['code']}?lang=de")
    speaks(page, "de")
    page.goto(f"/screen/{room['code']}")
    speaks(page, "fr")


def test_the_inbox_says_a_closed_polls_result_in_the_pages_words(contexts: Any, api: Host) -> None:
    """Notifications are stored in English; the inbox page says them again from their poll
    and its final results, in the page's language (English here, until translations land)."""
    room = api.room("Inbox words")
    poll = api.poll(room["id"], question="Tea or coffee?", options=["Tea", "Coffee"])
    page = contexts(**PHONE).new_page()
    page.goto(f"/j/{room['code']}")
    page.get_by_label("Tea", exact=True).check()
    page.click("form.vote button:has-text('Vote')")
    expect(page.locator("[data-receipt]")).to_have_text("Counted.")
    api.close(poll["id"])
    expect(page.locator("[data-unread]")).to_have_text("1")  # the notification is written
    page.goto(f"/j/{room['code']}/inbox")
    closed = page.locator(".note", has_text="Closed: Tea or coffee?")
    expect(closed.locator(".note-message")).to_have_text(
        "Final result: Tea 1 (100%) and Coffee 0 (0%)"
    )
