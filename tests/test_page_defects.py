"""Defects a tester found acting as a host and as attendees on phones, each checked in real
headless Chromium against a real `opus serve`, the way the tester saw it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from browser import PHONE, Host, launch
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

from conftest import ServerProcess

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("defects") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def api(site: ServerProcess) -> Host:
    return Host(site.base)


@pytest.fixture
def contexts(browser: Browser, site: ServerProcess) -> Iterator[Any]:
    """New browser contexts (each one a separate phone or laptop), closed after the test."""
    made: list[BrowserContext] = []

    def new(**options: Any) -> BrowserContext:
        context = browser.new_context(base_url=site.base, **options)
        made.append(context)
        return context

    yield new
    for context in made:
        context.close()


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
