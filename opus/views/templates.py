"""The pages' templates: one Jinja environment per language (i18n.py), each with its
catalog's gettext, its dates and its direction, and the strings its scripts need."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import jinja2
from babel import Locale, dates

from opus import __version__, i18n, look
from opus.resources import templates_dir


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()


_TODAY = i18n.N_("today, %(time)s")


def _date_and_time(stamp: datetime, where: str) -> str:
    """ "15 Nov 2026, 14:05", as the locale joins a date and a time (no seconds)."""
    joined = str(Locale.parse(where).datetime_formats["medium"])
    day = dates.format_date(stamp, "medium", locale=where)
    return joined.replace("{1}", day).replace(
        "{0}", dates.format_time(stamp, "short", locale=where)
    )


def fmt_time(iso: str | None, lang: str = i18n.DEFAULT) -> str:
    """A time of today ("14:05"), or a date and time, in the box's time zone and the page's
    language."""
    if not iso:
        return ""
    stamp, where = _when(iso), i18n.formatting_locale(lang)
    if stamp.date() == datetime.now(UTC).astimezone().date():
        return dates.format_time(stamp, "short", locale=where)
    return _date_and_time(stamp, where)


def fmt_date(iso: str | None, today: date | None = None, lang: str = i18n.DEFAULT) -> str:
    """A date and time as a person writes it ("30 Nov 2026, 14:05"; today: "today, 14:05"),
    in the box's time zone (the host's laptop, whose clock the host reads too) and the page's
    language."""
    if not iso:
        return ""
    stamp, where = _when(iso), i18n.formatting_locale(lang)
    time_of_day = dates.format_time(stamp, "short", locale=where)
    if stamp.date() == (today or datetime.now(UTC).astimezone().date()):
        return i18n.translations(lang).gettext(_TODAY) % {"time": time_of_day}
    return _date_and_time(stamp, where)


class Templates:
    """One template environment per language: each with its catalog's gettext, its dates,
    its direction and the strings its scripts need."""

    def __init__(self, static_version: str) -> None:
        self.static_version = static_version
        self._by_language = {lang: self._environment(lang) for lang in i18n.LANGUAGES}

    def get(self, lang: str) -> jinja2.Environment:
        return self._by_language.get(lang) or self._by_language[i18n.DEFAULT]

    def _environment(self, lang: str) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"],
        )
        env.policies["ext.i18n.trimmed"] = True  # as babel.cfg extracts them
        env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
        version = self.static_version
        env.globals["static"] = lambda path: f"/static/{path}?v={version}"
        env.globals["version"] = __version__
        env.globals["look"] = look.for_page
        env.globals["lang"] = lang
        env.globals["dir"] = i18n.direction(lang)
        env.globals["languages"] = i18n.LANGUAGES
        env.globals["js_messages"] = json.dumps(i18n.js_messages(lang), ensure_ascii=False)
        env.filters["time"] = lambda iso: fmt_time(iso, lang)
        env.filters["date"] = lambda iso: fmt_date(iso, lang=lang)
        return env


def environment(static_version: str) -> jinja2.Environment:
    """The English templates (tests and tools that need no other language)."""
    return Templates(static_version).get(i18n.DEFAULT)
