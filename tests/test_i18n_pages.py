"""Phones in Arabic and Japanese, in real Chromium: the page speaks the language (its catalog's
sentences, not English), an Arabic page runs right to left with its layout mirrored, and the
fonts the kiosk package recommends draw real letters, not empty boxes."""

from __future__ import annotations

from browser import PHONE, Host
from playwright.sync_api import Browser, Page, expect

from conftest import ServerProcess
from opus import i18n

expect.set_options(timeout=15_000)

WAITING = "No poll is open right now"


def _phone(browser: Browser, site: ServerProcess, locale: str) -> Page:
    context = browser.new_context(base_url=site.base, locale=locale, **PHONE)
    return context.new_page()


def _draws_letters(page: Page, a: str, b: str) -> bool:
    """Whether the page's font draws two different letters differently (a missing font draws
    both as the same empty box)."""
    return bool(
        page.evaluate(
            """([a, b]) => {
              const font = getComputedStyle(document.body).font;
              const pixels = (text) => {
                const canvas = document.createElement("canvas");
                canvas.width = 64; canvas.height = 64;
                const g = canvas.getContext("2d");
                g.font = font.replace(/\\d+(\\.\\d+)?px/, "40px");
                g.fillText(text, 8, 48);
                return Array.from(g.getImageData(0, 0, 64, 64).data).join(",");
              };
              return pixels(a) !== pixels(b);
            }""",
            [a, b],
        )
    )


def test_an_arabic_phone_reads_right_to_left_in_arabic(
    browser: Browser, site: ServerProcess
) -> None:
    room = Host(site.base).room("Hall")
    page = _phone(browser, site, "ar-EG")
    page.goto(f"/j/{room['code']}")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "ar")
    expect(html).to_have_attribute("dir", "rtl")
    said = i18n.translations("ar").gettext(WAITING)
    assert said != WAITING
    expect(page.locator(".waiting h2")).to_have_text(said)
    # Mirrored: the room's name starts at the right, the inbox link sits at the left.
    title = page.locator(".room-title").bounding_box()
    width = page.viewport_size["width"] if page.viewport_size else 390
    assert title is not None and title["x"] + title["width"] > width * 0.6
    assert _draws_letters(page, "ب", "م")
    page.context.close()


def test_a_japanese_phone_reads_japanese_in_real_letters(
    browser: Browser, site: ServerProcess
) -> None:
    room = Host(site.base).room("Hall")
    page = _phone(browser, site, "ja-JP")
    page.goto(f"/j/{room['code']}")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
    said = i18n.translations("ja").gettext(WAITING)
    assert said != WAITING
    expect(page.locator(".waiting h2")).to_have_text(said)
    assert _draws_letters(page, "日", "本")
    page.context.close()


def test_the_screen_speaks_the_rooms_language(browser: Browser, site: ServerProcess) -> None:
    host = Host(site.base)
    room = host.room("Salle")
    host.ok("PATCH", f"/api/v1/rooms/{room['id']}", {"language": "fr"})
    context = browser.new_context(base_url=site.base, locale="de-DE")  # the kiosk's browser
    page = context.new_page()
    page.goto(f"/screen/{room['code']}")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    said = i18n.translations("fr").gettext("Join the poll")
    assert said != "Join the poll"
    expect(page.locator("[data-welcome] h1")).to_have_text(said)
    context.close()
