"""Exports of a poll or a whole room, as JSON or CSV: one implementation for the API, the
`opus export` command and the host's pages. Built from `Rooms.room()`, `Rooms.results()` and
`Rooms.counted_votes()`, so every poll kind exports whatever those return."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, cast

from opus.answers import PollExport, RoomExport, RoomFields
from opus.errors import BadRequest, NotFound
from opus.events import now_iso
from opus.rooms import Rooms

FORMATS = ("json", "csv")
POLL_COLUMNS = [
    "record",
    "option_id",
    "option_label",
    "votes",
    "event_id",
    "voter_id",
    "counted_at",
    "value",
]
ROOM_COLUMNS = ["poll_id", "question", "kind", *POLL_COLUMNS]
# The keys every vote and every results body has; anything else is a kind's extra.
_VOTE_KEYS = {"event_id", "voter_id", "option_ids", "counted_at"}
_RESULT_KEYS = {"poll_id", "status", "total_votes", "options", "kind"}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise BadRequest("'format' is csv or json.", code="invalid_format")
    return fmt


async def poll_export(rooms: Rooms, poll_id: str) -> PollExport:
    """`{"poll", "results", "votes"}`: the poll, its results and its counted votes."""
    return {
        "poll": await rooms.poll(poll_id),
        "results": await rooms.results(poll_id, for_host=True),  # every question, every answer
        "votes": await rooms.counted_votes(poll_id),
    }


async def find_room(rooms: Rooms, room: str) -> str:
    """The id of the room named by its id or its join code (as typed: any case, a dash)."""
    try:
        await rooms.room(room, include_drafts=True)
        return room
    except NotFound:
        return str((await rooms.room_by_code(room))["id"])


async def room_export(rooms: Rooms, room_id: str) -> RoomExport:
    """`{"room", "exported_at", "polls": [poll_export, ...]}`, drafts included."""
    room = await rooms.room(room_id, include_drafts=True)
    polls = [await poll_export(rooms, p["id"]) for p in room["polls"]]
    return {
        "room": cast(RoomFields, {k: v for k, v in room.items() if k != "polls"}),
        "exported_at": now_iso(),
        "polls": polls,
    }


def _poll_rows(export: PollExport) -> Iterator[list[Any]]:
    """One `result` row per option, a row per kind-specific figure (a rating's average, a word
    cloud's words, ...), then one `vote` row per chosen option of each counted vote; a vote
    without options (a word-cloud answer, a question) gives one row with its `value`."""
    results, votes = export["results"], export["votes"]
    labels = {o["id"]: o["label"] for o in export["poll"].get("options", [])}
    for option in results.get("options", []):
        yield ["result", option["id"], option["label"], option["votes"], "", "", "", ""]
    for key, value in results.items():
        if key in _RESULT_KEYS:
            continue
        if isinstance(value, list):
            for item in value:
                yield [key, "", "", "", "", "", "", _value(item)]
        else:
            yield [key, "", "", "", "", "", "", _value(value)]
    for vote in votes:
        extra = {k: v for k, v in vote.items() if k not in _VOTE_KEYS}
        common = [vote.get("event_id", ""), vote.get("voter_id", ""), vote.get("counted_at", "")]
        value = _value(extra) if extra else ""
        option_ids = vote.get("option_ids")
        if not option_ids:
            yield ["vote", "", "", "", *common, value]
            continue
        for option_id in option_ids:
            yield ["vote", option_id, labels.get(option_id, ""), "", *common, value]


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _inert(row: list[Any]) -> list[Any]:
    """A spreadsheet runs a cell that begins with = + - @ as a formula: an attendee's answer
    such as `=HYPERLINK(...)` must open as the text it is (OWASP's advice: a leading quote).
    Numbers such as -3 stay numbers."""
    out = []
    for cell in row:
        if isinstance(cell, str) and cell.startswith(_FORMULA):
            try:
                float(cell)
            except ValueError:
                cell = "'" + cell
        out.append(cell)
    return out


def poll_csv(export: PollExport) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(POLL_COLUMNS)
    writer.writerows(_inert(row) for row in _poll_rows(export))
    return out.getvalue()


def room_csv(export: RoomExport) -> str:
    """Every poll's rows, each prefixed with the poll's id, question and kind."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ROOM_COLUMNS)
    for poll_export_ in export["polls"]:
        poll = poll_export_["poll"]
        prefix = [poll["id"], poll.get("question", ""), poll.get("kind", "")]
        writer.writerows(_inert([*prefix, *row]) for row in _poll_rows(poll_export_))
    return out.getvalue()


def render(export: PollExport | RoomExport, fmt: str) -> str:
    """The export as the text of a file: JSON (indented) or CSV."""
    if check_format(fmt) == "json":
        return json.dumps(export, indent=2, ensure_ascii=False) + "\n"
    if "polls" in export:
        return room_csv(cast(RoomExport, export))
    return poll_csv(export)
