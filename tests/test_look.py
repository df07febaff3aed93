"""A room's accent colour keeps every text readable, whatever colour the host picks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opus import look
from opus.errors import Unprocessable

colours = st.integers(0, 0xFFFFFF).map(lambda n: f"#{n:06x}")


def properties(shown: look.Look) -> dict[str, str]:
    return dict(item.split(": ") for item in shown.style.split("; "))


@given(
    accent=colours, theme=st.sampled_from(look.THEMES), page=st.sampled_from(["phone", "screen"])
)
def test_every_text_made_from_the_accent_reads_at_4_5_to_1(
    accent: str, theme: str, page: str
) -> None:
    shown = look.for_page(theme, accent, page)
    if not shown.style:  # the page's own look, already checked by axe in the page tests
        assert accent == look.DEFAULT_ACCENT and theme in ("auto", look.OWN_THEME[page])
        return
    colour = properties(shown)
    page_bg, card, ink = look.PALETTES[page, shown.theme]
    # A button's label on the accent, and on its hover.
    assert look.contrast(colour["--accent"], colour["--accent-ink"]) >= 4.5
    assert look.contrast(colour["--accent-hover"], colour["--accent-ink"]) >= 4.5
    # The accent as text (links, the screen's kicker) on the page, a card and the tint.
    for background in (page_bg, card, colour["--accent-soft"]):
        assert look.contrast(colour["--accent-text"], background) >= 4.5
    # The page's text on the tint (a chosen answer).
    assert look.contrast(ink, colour["--accent-soft"]) >= 4.5


def test_black_or_white_text_by_the_accents_luminance() -> None:
    assert properties(look.for_page("auto", "#ffd400", "phone"))["--accent-ink"] == "#000000"
    assert properties(look.for_page("auto", "#0f766e", "phone"))["--accent-ink"] == "#ffffff"


def test_auto_keeps_each_pages_own_look() -> None:
    assert look.for_page("auto", look.DEFAULT_ACCENT, "phone") == look.Look("light", "")
    assert look.for_page("auto", look.DEFAULT_ACCENT, "screen") == look.Look("dark", "")
    assert look.for_page("light", look.DEFAULT_ACCENT, "screen").theme == "light"
    assert look.for_page("dark", look.DEFAULT_ACCENT, "phone").theme == "dark"


@pytest.mark.parametrize("accent", ["red", "#fff", "#12345g", "0f766e", "#0f766e ", ""])
def test_an_accent_is_rrggbb(accent: str) -> None:
    with pytest.raises(Unprocessable):
        look.check_accent(accent)
    assert look.check_accent("#0F766E") == "#0f766e"
