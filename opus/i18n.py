"""The pages' languages: gettext catalogs made with Babel (opus/locale/<lang>/LC_MESSAGES/
opus.po), read and compiled once when first asked for, so a source checkout, a wheel and the
single binary all work from the same files.

Which language a page speaks: the phone's own choice (the `opus_lang` cookie, set by the
language links at the foot of the attendee's pages), then the room's (its `language`, which the
projector screen always follows), then the browser's Accept-Language, then English.

Scripts get their strings from the page (`js_messages`), and pick plural forms with the same
rules as gettext (see `Opus.nt` in live.js).
"""

from __future__ import annotations

import functools
import io
from gettext import NullTranslations
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from opus.accept import weighted
from opus.resources import package_dir

LANGUAGES = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "de": "Deutsch",
    "ar": "العربية",
    "ja": "日本語",
}
DEFAULT = "en"
RIGHT_TO_LEFT = frozenset({"ar"})
COOKIE = "opus_lang"
DOMAIN = "opus"


def N_(message: str) -> str:  # gettext's name for "mark it, translate it later"
    """Marks a string for the catalogs; it is translated where it is shown."""
    return message


def locale_dir() -> Path:
    return package_dir() / "locale"


def catalog_path(lang: str) -> Path:
    return locale_dir() / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def catalog(lang: str) -> Catalog | None:
    """The language's catalog, None for English (the strings in the code are English)."""
    path = catalog_path(lang)
    if lang == DEFAULT or not path.is_file():
        return None
    with path.open("rb") as po:
        return read_po(po, locale=lang, domain=DOMAIN)


@functools.cache
def translations(lang: str) -> NullTranslations:
    found = catalog(lang)
    if found is None:
        return NullTranslations()
    mo = io.BytesIO()
    write_mo(mo, found, use_fuzzy=False)
    mo.seek(0)
    return Translations(mo, domain=DOMAIN)


@functools.cache
def js_messages(lang: str) -> dict[str, Any]:
    """The translations of the scripts' strings: msgid -> msgstr, or [singular, plural] ->
    the list of plural forms (keyed by the singular)."""
    found = catalog(lang)
    if found is None:
        return {}
    out: dict[str, Any] = {}
    for message in found:
        if not message.id or message.fuzzy or not message.string:
            continue
        if not any(file.endswith(".js") for file, _ in message.locations):
            continue
        if isinstance(message.id, tuple | list):
            forms = list(message.string)
            if all(forms):
                out[str(message.id[0])] = forms
        else:
            out[str(message.id)] = message.string
    return out


def formatting_locale(lang: str) -> str:
    """The locale for dates and numbers: English pages write them the international way
    ("15 Nov 2026, 14:05"), the others as their language does."""
    return "en_GB" if lang == DEFAULT else lang


def direction(lang: str) -> str:
    return "rtl" if lang in RIGHT_TO_LEFT else "ltr"


def negotiate(accept_language: str) -> str:
    """The best shipped language for an Accept-Language header ("fr-CH, fr;q=0.9, en;q=0.8")."""
    wanted = [
        (-quality, index, tag)
        for index, (tag, quality) in enumerate(weighted(accept_language))
        if quality > 0
    ]
    for _, _, tag in sorted(wanted):
        base = tag.split("-")[0]
        if base in LANGUAGES:
            return base
    return DEFAULT


def choose(
    cookie: str | None, room_language: str | None, accept_language: str, *, phone: bool = True
) -> str:
    """The language of a page: the phone's choice (`phone` pages only), the room's, the
    browser's."""
    if phone and cookie in LANGUAGES:
        return str(cookie)
    if room_language in LANGUAGES:
        return str(room_language)
    return negotiate(accept_language)
