"""What an attendee's notification says on the inbox page, in the page's language.

The notifications are stored, and sent on the API, in English (notifications.py writes one
row per voter as a poll changes, before anyone reads it); the page says them again from their
type, their poll's question and, once a poll closed, its final results."""

from __future__ import annotations

from typing import Any

from babel.lists import format_list
from babel.numbers import format_decimal

from opus import answers, i18n


def in_words(note: answers.Notification, questions: dict[str, str], lang: str) -> dict[str, Any]:
    """The notification with its title and message in `lang` (as stored when its poll is
    gone or its kind is not known here)."""
    said = i18n.translations(lang)
    question = questions.get(note["source_id"])
    shown: dict[str, Any] = dict(note)
    if note["type"] == "poll_created":
        shown["title"] = said.gettext("New poll")
        shown["message"] = said.gettext("The host has prepared a poll.")
    elif note["type"] == "poll_opened":
        shown["title"] = said.gettext("Poll open")
    elif note["type"] == "poll_closed" and question is not None:
        shown["title"] = said.gettext("Closed: %(question)s") % {"question": question}
        if "data" in note:
            shown["message"] = _closed(note["data"], lang)
    return shown


def _closed(results: answers.Results, lang: str) -> str:
    """The final result in a sentence (as notifications.py writes it in English)."""
    said, where = i18n.translations(lang), i18n.formatting_locale(lang)
    total = results["total_votes"]
    if not total:
        return said.gettext("The poll closed with no votes.")
    kind = results.get("kind")
    if kind == "text":
        top = [w["word"] for w in results.get("words", [])[:5]]
        if not top:
            return said.ngettext("%(num)d answer.", "%(num)d answers.", total) % {"num": total}
        return said.ngettext(
            "%(num)d answer. Most said: %(words)s.", "%(num)d answers. Most said: %(words)s.", total
        ) % {"num": total, "words": format_list(top, locale=where)}
    if kind == "qa":
        return said.ngettext("%(num)d question asked.", "%(num)d questions asked.", total) % {
            "num": total
        }
    mean = results.get("average")
    if kind == "rating" and mean is not None:
        average = format_decimal(mean, locale=where)
        return said.ngettext(
            "Average %(average)s from %(num)d rating.",
            "Average %(average)s from %(num)d ratings.",
            total,
        ) % {"average": average, "num": total}
    parts = format_list(
        [
            said.gettext("%(option)s %(votes)s (%(percent)s%%)")
            % {
                "option": o["label"],
                "votes": o["votes"],
                "percent": format_decimal(o["percent"] or 0, locale=where),
            }
            for o in results["options"]
        ],
        locale=where,
    )
    if kind == "quiz":
        right = [o["label"] for o in results["options"] if o.get("correct")]
        return said.gettext("Right answer: %(right)s. %(results)s") % {
            "right": format_list(right, locale=where),
            "results": parts,
        }
    return said.gettext("Final result: %(results)s") % {"results": parts}
