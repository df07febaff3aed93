"""Every string a person reads is in every shipped catalog, translated; no English is left
outside the catalogs in the templates and scripts; the language is chosen as documented."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from conftest import Api
from opus import i18n

ROOT = Path(__file__).resolve().parent.parent
OPUS = ROOT / "opus"
KEYWORDS = {
    "_": None,
    "N_": None,
    # gettext("...") and {% trans %}; kit.gettext(request, "...", name=value, ...)
    "gettext": {1: (1,), 2: (2,), 3: (2,), 4: (2,)},
    "ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
    "Opus.t": None,
    "Opus.nt": (1, 2),
}
METHODS = [
    ("answers.py", "ignore"),
    ("**.py", "python"),
    ("templates/**.html", "jinja2"),
    ("static/**.js", "javascript"),
]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
SHIPPED = [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT]


def _extracted() -> dict[tuple[str | tuple[str, ...], str | None], list[str]]:
    """Every message in the code: (msgid or (singular, plural), context) -> where."""
    found: dict[tuple[str | tuple[str, ...], str | None], list[str]] = {}
    for filename, lineno, message, _, context in extract_from_dir(
        str(OPUS), METHODS, options_map=OPTIONS, keywords=KEYWORDS
    ):
        key = message if isinstance(message, str) else tuple(message)
        found.setdefault((key, context), []).append(f"{filename}:{lineno}")
    return found


@pytest.mark.parametrize("lang", SHIPPED)
def test_every_string_is_translated_in_every_shipped_language(lang: str) -> None:
    """Run `make messages`, then translate what it added: a new string without its
    translation fails here."""
    path = i18n.catalog_path(lang)
    with path.open("rb") as po:
        catalog = read_po(po, locale=lang)
    missing = []
    for (key, context), where in _extracted().items():
        message = catalog.get(key if isinstance(key, str) else key[0], context=context)
        strings = [] if message is None else message.string
        strings = [strings] if isinstance(strings, str) else list(strings)
        if message is None or message.fuzzy or not strings or not all(strings):
            missing.append(f"{key!r} ({where[0]})")
    assert not missing, f"{len(missing)} strings not translated in {path}:\n" + "\n".join(
        missing[:40]
    )


@pytest.mark.parametrize("lang", SHIPPED)
def test_every_translation_keeps_its_placeholders(lang: str) -> None:
    """A translation that drops or renames a %(name)s would fail as the page renders."""
    with i18n.catalog_path(lang).open("rb") as po:
        catalog = read_po(po, locale=lang)
    wrong = [f"{message.id!r}: {errors}" for message, errors in catalog.check()]
    for message in catalog:
        if not message.id or not message.string:
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        wanted = set(re.findall(r"%\((\w+)\)", " ".join(ids)))
        for string in strings:
            # A plural form may leave the number out ("one vote"), never add a name.
            if not set(re.findall(r"%\((\w+)\)", string)) <= wanted:
                wrong.append(f"{message.id!r}: {string!r}")
    assert not wrong, "\n".join(wrong)


# Words on the pages that stay as they are in every language.
_KEEP = {"Opus", "QR", "CSV", "JSON", "Wi-Fi", "WPA", "WEP", "OK"}
_WORDS = re.compile(r"[A-Za-z][A-Za-z'\u2019-]+")
_TAG = re.compile(r"<[^>]*>", re.S)
_SEEN_ATTRIBUTES = re.compile(
    r'\b(?:placeholder|aria-label|title|alt|data-confirm|value|label)="([^"{}]*)"'
)


def _english(text: str) -> list[str]:
    """Words a person reads: not the kept ones, nor codes in capitals (ABCD-EFGH)."""
    return [w for w in _WORDS.findall(text) if w not in _KEEP and not w.isupper()]


def _template_leftovers(path: Path) -> list[str]:
    """Text of a template outside `_()`, `ngettext()` and `{% trans %}`: English a person
    would read in every language. A tag cut by a `{{ }}` is seen whole (with `{}` in its
    place), and a block's name or a CSS class in `{% block body_class %}` is not text."""
    env = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    out: list[str] = []
    in_trans = False
    names: list[str] = []  # the words of the tag being read, `{%` first
    class_block = False
    for _, kind, value in env.lex(path.read_text()):
        if kind == "whitespace":
            continue
        if kind == "block_begin":
            names = ["{%"]
        elif kind == "name" and names:
            names.append(value)
            if names[1:] in (["trans"], ["pluralize"]):
                in_trans = True
            elif names[1:] == ["endtrans"]:
                in_trans = False
            class_block = names[1:] == ["block", "body_class"]
        if kind == "data" and not in_trans and not class_block:
            out.append(value)
        elif kind in ("variable_begin", "block_begin"):
            out.append("\x00")
        if kind == "block_end":
            names = []
        if kind == "data":
            class_block = False
    text = "".join(out).replace("\x00", "{}")
    # A macro's attributes, outside a tag: `data-x="..."`, `data-look`.
    attributes = re.sub(r'[\w-]+="[^"]*"|\bdata-[\w-]+', " ", text)
    left = []
    for shown in [*_SEEN_ATTRIBUTES.findall(text), _TAG.sub(" ", attributes)]:
        for line in re.sub(r"&\w+;", " ", shown).splitlines():
            words = _english(line)
            if words:
                left.append(f"{path.relative_to(ROOT)}: {' '.join(words)[:70]}")
    return left


def test_no_english_is_left_outside_the_catalogs_in_templates() -> None:
    left = []
    for path in sorted((OPUS / "templates").rglob("*.html")):
        left.extend(_template_leftovers(path))
    assert not left, "wrap these in _() or {% trans %}:\n" + "\n".join(left)


# A script's own words: a string literal with two words or more, or a capitalised word, that
# is not a selector, an attribute name, a key's name or a URL, outside Opus.t() and Opus.nt().
_KEYS = {"Escape", "Enter", "Tab", "ArrowRight", "ArrowLeft", "ArrowUp", "ArrowDown", "PageUp"}
_KEYS |= {"PageDown", "Home", "End", "Space", "Backspace", "Retry-After", "Content-Type"}
_JS_STRING = re.compile(r"""(Opus\.n?t\(\s*)?(["'])((?:\\.|(?!\2).)*)\2""")
_JS_CODE = re.compile(r"^[\s\w.#:\[\]=\"'(),>*+~-]*$")


_JS_LITERAL = r"""(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')"""
# The strings an Opus.t() or Opus.nt() call hands to the catalogs, over several lines too.
_JS_WRAPPED = re.compile(rf"Opus\.n?t\(\s*{_JS_LITERAL}(?:\s*,\s*{_JS_LITERAL})?")


def _blank(call: re.Match[str]) -> str:
    return "Opus.t(" + "\n" * call.group(0).count("\n")


def test_no_english_is_left_outside_the_catalogs_in_scripts() -> None:
    left = []
    for path in sorted((OPUS / "static").glob("*.js")):
        # Wrapped strings blanked out, each line where it was.
        source = _JS_WRAPPED.sub(
            lambda m: "Opus.t(" + "\n" * m.group(0).count("\n"), path.read_text()
        )
        for lineno, line in enumerate(source.splitlines(), 1):
            if line.lstrip().startswith(("//", "/*", "*")):
                continue
            for wrapped, _, text in _JS_STRING.findall(line):
                if wrapped or not _english(text):
                    continue
                sentence = " " in text.strip() and not _JS_CODE.match(text)
                sentence = sentence or bool(re.match(r"[A-Z][a-z]+", text) and text not in _KEYS)
                if sentence:
                    left.append(f"{path.relative_to(ROOT)}:{lineno}: {text[:60]}")
    assert not left, "wrap these in Opus.t() or Opus.nt():\n" + "\n".join(left)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", "en"),
        ("fr-CH, fr;q=0.9, en;q=0.8", "fr"),
        ("pt-BR, es;q=0.5, de;q=0.7", "de"),
        ("ar-EG", "ar"),
        ("ja-JP,ja;q=0.9", "ja"),
        ("zh-CN, *;q=0.1", "en"),
        ("de;q=0, es", "es"),
    ],
)
def test_the_browsers_language_is_the_best_shipped_one(header: str, expected: str) -> None:
    assert i18n.negotiate(header) == expected


def test_a_phones_choice_wins_then_the_rooms_then_the_browsers() -> None:
    assert i18n.choose("ja", "fr", "de") == "ja"
    assert i18n.choose(None, "fr", "de") == "fr"
    assert i18n.choose("xx", None, "de") == "de"
    # The projector screen follows the room, whatever the cookie of the browser it runs in.
    assert i18n.choose("ja", "fr", "de", phone=False) == "fr"
    assert i18n.choose("ja", None, "de", phone=False) == "de"


async def test_a_rooms_language_is_set_checked_and_cleared(api: Api) -> None:
    room = await api.room()
    assert room["language"] is None  # each browser's own
    path = f"/api/v1/rooms/{room['id']}"
    status, body = await api.call("PATCH", path, json={"language": "ar"}, headers=api.admin)
    assert status == 200 and body["language"] == "ar"
    status, body = await api.call("PATCH", path, json={"language": "klingon"}, headers=api.admin)
    assert (status, body["error"]["code"]) == (422, "invalid_field")
    status, body = await api.call("PATCH", path, json={"language": None}, headers=api.admin)
    assert status == 200 and body["language"] is None
