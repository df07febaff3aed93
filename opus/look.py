"""A room's look on the projector and the phones: its theme and accent colour.

`auto` keeps each page's own look (a dark stage on the projector, light phones); `light` and
`dark` set both. The accent colours the buttons; the colours made from it (the text on a
button, a hover, a tint, the accent as text on the page) are chosen here so that every text
keeps a contrast of 4.5:1 or more (WCAG 1.4.3), whatever colour the host picks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opus.errors import Unprocessable

THEMES = ("auto", "light", "dark")
DEFAULT_THEME = "auto"
DEFAULT_ACCENT = "#4338ca"
ACCENT_PATTERN = "^#[0-9a-fA-F]{6}$"
TEXT_CONTRAST = 4.5

BLACK, WHITE = "#000000", "#ffffff"
# Each page's own theme under `auto`; each theme's page and card backgrounds and text colour
# (opus.css, screen.css).
OWN_THEME = {"phone": "light", "screen": "dark"}
PALETTES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("phone", "light"): ("#f3f4f8", "#ffffff", "#111827"),
    ("phone", "dark"): ("#0f172a", "#1e293b", "#e5e7eb"),
    ("screen", "light"): ("#f8fafc", "#ffffff", "#0f172a"),
    ("screen", "dark"): ("#0b1020", "#1e1b4b", "#f8fafc"),
}


def check_theme(value: str) -> str:
    if value not in THEMES:
        raise Unprocessable(f"'theme' is one of: {', '.join(THEMES)}.", code="invalid_field")
    return value


def check_accent(value: str) -> str:
    if not re.fullmatch(ACCENT_PATTERN, value):
        raise Unprocessable(
            "'accent' is a colour written #rrggbb, such as #4338ca.", code="invalid_field"
        )
    return value.lower()


# -- colour arithmetic (sRGB, WCAG 2 relative luminance) -----------------------------------


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def luminance(colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def mix(a: str, b: str, share_of_b: float) -> str:
    """`a` with `share_of_b` (0 to 1) of `b` mixed in."""
    return "#" + "".join(
        f"{round(x + (y - x) * share_of_b):02x}" for x, y in zip(_rgb(a), _rgb(b), strict=True)
    )


def readable_on(background: str) -> str:
    """Black or white, whichever reads better on `background` (always 4.5:1 or more)."""
    return BLACK if contrast(background, BLACK) >= contrast(background, WHITE) else WHITE


def towards(colour: str, target: str, against: tuple[str, ...]) -> str:
    """`colour`, moved towards `target` in small steps until it reads on every background
    of `against`."""
    for step in range(21):
        moved = mix(colour, target, step / 20)
        if all(contrast(moved, b) >= TEXT_CONTRAST for b in against):
            return moved
    return target


# -- what a page shows --------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    theme: str  # the page's: light or dark
    style: str  # CSS custom properties for the page's <html>; "" keeps the stylesheet's


def for_page(theme: str, accent: str, page: str) -> Look:
    """The look of a room's `page` ("phone" or "screen")."""
    own = OWN_THEME[page]
    shown = own if theme == "auto" else theme
    if shown == own and accent == DEFAULT_ACCENT:
        return Look(shown, "")
    page_bg, card, ink = PALETTES[page, shown]
    on_accent = readable_on(accent)
    # Hovering moves away from the text's colour: the contrast only grows.
    hover = mix(accent, WHITE if on_accent == BLACK else BLACK, 0.15)
    # A tint of the accent behind the page's text (a chosen answer).
    soft = card
    for share in (0.15, 0.12, 0.09, 0.06, 0.03):
        soft = mix(card, accent, share)
        if contrast(soft, ink) >= TEXT_CONTRAST:
            break
    # The accent as text (links, the screen's kicker): darker on light pages, lighter on dark.
    text = towards(accent, BLACK if shown == "light" else WHITE, (page_bg, card, soft))
    properties = {
        "--accent": accent,
        "--accent-ink": on_accent,
        "--accent-hover": hover,
        "--accent-soft": soft,
        "--accent-text": text,
    }
    return Look(shown, "; ".join(f"{k}: {v}" for k, v in properties.items()))
