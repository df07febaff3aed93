"""The host console's languages in real Chromium: it speaks the host's browser's language,
offers the others at its foot, keeps the host's pick; the room's own language is set from the
console, for the screen and the phones, while the console keeps the host's. And the console's
switches, whose labels now come from the catalogs, still flip what they say."""

from __future__ import annotations

from typing import Any

import pytest
from browser import PHONE, Host
from playwright.sync_api import Page, expect

from conftest import ADMIN, ServerProcess
from opus import bodies, i18n

expect.set_options(timeout=15_000)


@pytest.fixture
def api(site: ServerProcess) -> Host:
    return Host(site.base)


def _log_in(page: Page) -> None:
    page.goto("/host")
    page.fill("#token", ADMIN)
    page.locator("form[action='/host/login'] button[type=submit]").click()
    expect(page).to_have_url(f"{page.url.split('/host')[0]}/host")


def _create_room(page: Page, title: str) -> str:
    page.fill("#title", title)
    page.locator("form[action='/host/rooms'] button[type=submit]").click()
    expect(page.locator("h1")).to_have_text(title)
    return page.url.split("/host/rooms/")[1].split("#")[0]


def test_the_console_speaks_the_hosts_language_and_offers_the_others(contexts: Any) -> None:
    page = contexts(locale="de-DE", viewport={"width": 1280, "height": 900}).new_page()
    page.goto("/host/login")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "de")  # the browser's language
    picker = page.locator("nav.host-languages")  # its name is in the page's language
    links = picker.get_by_role("link")
    expect(links).to_have_text(list(i18n.LANGUAGES.values()))
    for code, name in i18n.LANGUAGES.items():
        link = picker.get_by_role("link", name=name)
        expect(link).to_have_attribute("hreflang", code)
        expect(link).to_have_attribute("lang", code)
    expect(picker.locator("[aria-current=true]")).to_have_text("Deutsch")

    picker.get_by_role("link", name="Français").click()
    expect(html).to_have_attribute("lang", "fr")
    expect(picker.locator("[aria-current=true]")).to_have_text("Français")
    _log_in(page)  # the pick is kept from page to page
    expect(html).to_have_attribute("lang", "fr")
    room_id = _create_room(page, "Salle des fêtes")

    # A refused poll shows the room page again at the form's address: the links still lead
    # to the room page, not to an address only a form can use.
    page.fill("#question", "Une seule option ?")
    page.fill("#options", "Oui")
    page.locator("form.poll-form button[type=submit]").click()
    expect(page.locator(".side .flash-error")).to_be_visible()
    picker.get_by_role("link", name="العربية").click()
    expect(page).to_have_url(f"{page.url.split('/host')[0]}/host/rooms/{room_id}?lang=ar")
    expect(html).to_have_attribute("dir", "rtl")
    expect(page.locator("h1")).to_have_text("Salle des fêtes")


def test_a_language_picked_on_the_login_page_still_leads_to_the_page_asked_for(
    contexts: Any, api: Host
) -> None:
    """A host who follows a room's link logged out lands on the login page with `?next=`:
    picking a language there, even after a wrong token, must not forget where they were going."""
    room = api.room("Aula")
    page = contexts(locale="en-GB", viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"/host/rooms/{room['id']}")
    expect(page.locator("#token")).to_be_visible()
    picker = page.locator("nav.host-languages")
    picker.get_by_role("link", name="Deutsch").click()
    expect(page.locator("html")).to_have_attribute("lang", "de")
    page.fill("#token", "not-the-token")
    page.locator("form[action='/host/login'] button[type=submit]").click()
    expect(page.locator(".flash-error")).to_be_visible()
    picker.get_by_role("link", name="Español").click()
    expect(page.locator("html")).to_have_attribute("lang", "es")
    page.fill("#token", ADMIN)
    page.locator("form[action='/host/login'] button[type=submit]").click()
    expect(page).to_have_url(f"{page.url.split('/host')[0]}/host/rooms/{room['id']}")
    expect(page.locator("h1")).to_have_text("Aula")
    expect(page.locator("html")).to_have_attribute("lang", "es")


@pytest.mark.skipif(
    "language" not in bodies.RenameRoom.__struct_fields__,
    reason="rooms have no language yet (the lead's branch adds it)",
)
def test_the_host_sets_the_rooms_language_for_the_screen_and_phones(contexts: Any) -> None:
    console = contexts(locale="en-GB", viewport={"width": 1280, "height": 900}).new_page()
    _log_in(console)
    _create_room(console, "Réunion")
    code = console.locator(".big-code").inner_text().replace("-", "")
    console.select_option("#room-language", label="Français")
    console.locator("form[data-language] button[type=submit]").click()
    expect(console.locator(".flash")).to_have_text("The screen and the phones speak Français now.")
    expect(console.locator("#room-language")).to_have_value("fr")
    expect(console.locator("html")).to_have_attribute("lang", "en")  # the host's, still

    screen = contexts(locale="de-DE").new_page()
    screen.goto(f"/screen/{code}")
    expect(screen.locator("html")).to_have_attribute("lang", "fr")
    phone = contexts(**PHONE, locale="ja-JP").new_page()
    phone.goto(f"/j/{code}")
    expect(phone.locator("html")).to_have_attribute("lang", "fr")

    console.select_option("#room-language", label="Each phone's own language")
    console.locator("form[data-language] button[type=submit]").click()
    expect(console.locator(".flash")).to_have_text("Each phone speaks its own language now.")
    phone.reload()
    expect(phone.locator("html")).to_have_attribute("lang", "ja")


def test_the_consoles_switches_flip_their_poll(contexts: Any, api: Host) -> None:
    console = contexts(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(console)
    room_id = _create_room(console, "Switches")
    hidden = api.poll(room_id, question="Hidden until close?", hide_results=True, open=False)
    qa = api.poll(room_id, question="Your questions", kind="qa", open=False)
    console.reload()
    console.locator("button[data-action=next]").click()  # shows (and opens) the first poll
    bar = console.locator("[data-presenter]")
    expect(bar).to_contain_text("Showing: Hidden until close?")
    expect(bar.locator(".badge")).to_have_text("open")
    card = console.locator(f"#poll-{hidden['id']}")
    expect(card.locator(".tag")).to_contain_text(["on the screen", "results hidden until close"])
    bar.locator("button[data-action=reveal]").click()
    expect(card.locator(".tag", has_text="results hidden")).to_have_count(0)
    expect(bar.locator("button[data-action=reveal]")).to_have_count(0)
    card.get_by_role("button", name="Allow changes").click()
    expect(console.locator(f"#poll-{hidden['id']} .tag")).to_contain_text(["answers can change"])

    questions = console.locator(f"#poll-{qa['id']}")
    questions.get_by_role("button", name="Moderate questions").click()
    questions = console.locator(f"#poll-{qa['id']}")
    expect(questions.locator(".tag", has_text="moderated")).to_be_visible()
    questions.get_by_role("button", name="Stop moderating").click()
    expect(console.locator(f"#poll-{qa['id']} .tag", has_text="moderated")).to_have_count(0)


def test_a_refusal_reads_in_the_consoles_language(contexts: Any, api: Host) -> None:
    """The domain's usual refusals come in the host's language too: Next after the last poll."""
    room = api.ok("POST", "/api/v1/rooms", {"title": "Salle", "pace": "presenter"})
    api.poll(room["id"], question="Seule question ?", open=False)
    page = contexts(locale="fr-FR", viewport={"width": 1280, "height": 900}).new_page()
    _log_in(page)
    page.goto(f"/host/rooms/{room['id']}")
    page.click("button[data-action=next]")
    expect(page.locator("[data-now-showing]")).to_contain_text("Seule question ?")
    page.click("button[data-action=next]")
    said = i18n.translations("fr").gettext("There is no poll after the one shown.")
    assert said != "There is no poll after the one shown."
    expect(page.locator(".flash-error")).to_have_text(said)
