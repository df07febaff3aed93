"""The OpenAPI 3.1 description of the HTTP API, served at `GET /api/openapi.json`.

The document is built in code from the same limits the handlers enforce (imported from
`opus.rooms`), so a limit changed there changes here. docs/api.md is the prose version.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from aiohttp import web

from opus import __version__
from opus.kinds import KINDS, MAX_LABEL, MAX_OPTIONS, MIN_OPTIONS
from opus.rooms import CODE_ALPHABET, CODE_LENGTH, MAX_QUESTION, MAX_TITLE
from opus.views.api import VOTER_COOKIE, JoinThrottle

JSON = dict[str, Any]

PATH = "/api/openapi.json"

POLL_STATUSES = ("draft", "open", "closed")
RECEIPT_STATUSES = ("queued", "counted", "rejected")
RECEIPT_REASONS = ("already_voted", "invalid_option", "poll_not_found", "replaced", "superseded")
NOTIFICATION_TYPES = ("poll_created", "poll_opened", "poll_closed")
# Wrong join codes one address may send in a minute (the throttle's default).
JOIN_MISSES: int = inspect.signature(JoinThrottle).parameters["allowed"].default

# Security requirements, by who may call.
ADMIN: list[JSON] = [{"adminToken": []}]
VOTER: list[JSON] = [{"voterToken": []}, {"voterCookie": []}]
ADMIN_OR_VOTER: list[JSON] = [*ADMIN, *VOTER]
ANYONE: list[JSON] = []
ANYONE_OR_ADMIN: list[JSON] = [{}, *ADMIN]
ANYONE_OR_VOTER: list[JSON] = [{}, *VOTER]
SOCKET: list[JSON] = [{}, *ADMIN, *VOTER, {"socketToken": []}]

DOCS = "docs/api.md"

# Text the server trims before checking it: it must hold at least one non-space character.
NOT_BLANK = r"\S"


# -- small builders -----------------------------------------------------------------------


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: JSON, example: Any = None) -> JSON:
    media: JSON = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def ok(description: str, schema: JSON, example: Any = None) -> JSON:
    return {"description": description, "content": json_body(schema, example)}


def error(description: str, *, retry_after: bool = False) -> JSON:
    """An error answer: always the Error body; `description` names the `code` slugs."""
    response: JSON = {"description": description, "content": json_body(ref("Error"))}
    if retry_after:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return response


def links(source: str, param: str, *operation_ids: str) -> JSON:
    """OpenAPI links: the id in this answer's body feeds `param` of the named operations."""
    return {
        op[0].upper() + op[1:]: {
            "operationId": op,
            "parameters": {param: f"$response.body#/{source}"},
        }
        for op in operation_ids
    }


def id_param(name: str, what: str) -> JSON:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what}'s id (a UUID).",
        "schema": {"type": "string", "format": "uuid"},
    }


def text(limit: int, description: str) -> JSON:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": limit,
        "pattern": NOT_BLANK,
        "description": f"{description} 1 to {limit} characters after trimming spaces.",
    }


# -- the errors each kind of call can answer ----------------------------------------------

BAD_JSON = "`invalid_json`: the body is not JSON, or not a JSON object."
TOO_LARGE = error("`body_too_large`: the body is larger than the server's limit (64 KiB).")
OTHER = error(
    "Any other error, in the same shape: `method_not_allowed` (405, with `Allow`), "
    "`internal_error` (500)."
)
NEEDS_ADMIN_401 = error(
    "`unauthorized`: no `Authorization: Bearer` header; `bad_token`: the token is wrong."
)
NEEDS_ADMIN_403 = error("`forbidden`: a voter token was sent where the admin token is needed.")
NEEDS_VOTER_401 = error(
    "`unauthorized`: neither a bearer token nor the `opus_voter` cookie; "
    "`bad_token`: the voter token is not valid (join again)."
)
NEEDS_VOTER_403 = error("`forbidden`: the admin token was sent where a voter token is needed.")
POLL_404 = error("`poll_not_found`: no poll has this id.")


def host_errors(more: JSON | None = None) -> JSON:
    """The answers of a host-only call: the token's, then `more`, then anything else."""
    return {"401": NEEDS_ADMIN_401, "403": NEEDS_ADMIN_403, **(more or {}), "default": OTHER}


# -- components ---------------------------------------------------------------------------

UUID: JSON = {"type": "string", "format": "uuid"}
TIMESTAMP: JSON = {
    "type": "string",
    "format": "date-time",
    "description": "UTC, RFC 3339 with milliseconds.",
}
MAYBE_TIMESTAMP: JSON = {**TIMESTAMP, "type": ["string", "null"]}
COUNT: JSON = {"type": "integer", "minimum": 0}

EXAMPLE_ROOM_ID = "01a20884-63f5-7027-a1a7-e81889764ec2"
EXAMPLE_POLL_ID = "01a20884-658c-701d-aea6-1b86b40d1981"
EXAMPLE_OPTIONS = [
    {"id": "01a20884-658c-701e-a414-bb148289a2c3", "label": "Mars"},
    {"id": "01a20884-658c-701f-aad6-27a7dbe951be", "label": "Jupiter"},
    {"id": "01a20884-658c-7020-91c3-f866f2d124ea", "label": "Venus"},
]
EXAMPLE_EVENT_ID = "3f0c1a9e-5b7d-4c2a-9e1f-8a6b2c4d0e11"
EXAMPLE_VOTER_ID = "01a20884-66a4-701b-91a7-a0b24e8ed5b7"
EXAMPLE_POLL: JSON = {
    "id": EXAMPLE_POLL_ID,
    "room_id": EXAMPLE_ROOM_ID,
    "question": "Which planet is largest?",
    "kind": "single",
    "status": "open",
    "allow_change": False,
    "hide_results": False,
    "options": EXAMPLE_OPTIONS,
    "total_votes": 0,
    "created_at": "2026-11-23T13:07:04.204Z",
    "opened_at": "2026-11-23T13:07:04.473Z",
    "closed_at": None,
}
EXAMPLE_ROOM: JSON = {
    "id": EXAMPLE_ROOM_ID,
    "code": "XHYRGCQG",
    "code_display": "XHYR-GCQG",
    "title": "Physics 101",
    "created_at": "2026-11-23T13:07:03.797Z",
    "polls": [EXAMPLE_POLL],
}
EXAMPLE_RESULTS: JSON = {
    "poll_id": EXAMPLE_POLL_ID,
    "status": "open",
    "total_votes": 1,
    "options": [
        {**EXAMPLE_OPTIONS[0], "votes": 0, "percent": 0.0},
        {**EXAMPLE_OPTIONS[1], "votes": 1, "percent": 100.0},
        {**EXAMPLE_OPTIONS[2], "votes": 0, "percent": 0.0},
    ],
}
EXAMPLE_NOTIFICATIONS: JSON = {
    "notifications": [
        {
            "id": 2,
            "title": "Closed: Which planet is largest?",
            "message": "Final result: Mars 0 (0%), Jupiter 1 (100%), Venus 0 (0%)",
            "type": "poll_closed",
            "source_id": EXAMPLE_POLL_ID,
            "is_read": False,
            "created_at": "2026-11-23T13:07:05.203Z",
            "data": {**EXAMPLE_RESULTS, "status": "closed"},
        },
        {
            "id": 1,
            "title": "Poll open",
            "message": "Which planet is largest?",
            "type": "poll_opened",
            "source_id": EXAMPLE_POLL_ID,
            "is_read": True,
            "created_at": "2026-11-23T13:07:04.207Z",
        },
    ],
    "unread": 1,
}


def schemas() -> JSON:
    option: JSON = {
        "type": "object",
        "required": ["id", "label"],
        "properties": {"id": UUID, "label": {"type": "string"}},
    }
    poll: JSON = {
        "type": "object",
        "description": "A poll, as the host sees it. `draft` polls are shown to the host only.",
        "required": [
            "id", "room_id", "question", "kind", "status", "allow_change", "hide_results",
            "options", "total_votes", "created_at", "opened_at", "closed_at",
        ],
        "properties": {
            "id": UUID,
            "room_id": UUID,
            "question": {"type": "string"},
            "kind": {"type": "string", "enum": list(KINDS)},
            "status": {"type": "string", "enum": list(POLL_STATUSES)},
            "allow_change": {
                "type": "boolean",
                "description": "A later vote by the same voter replaces the earlier one.",
            },
            "hide_results": {
                "type": "boolean",
                "description": "Results are shown to attendees only once the poll is closed.",
            },
            "options": {"type": "array", "items": ref("Option")},
            "total_votes": {**COUNT, "description": "Voters counted (not options chosen)."},
            "created_at": TIMESTAMP,
            "opened_at": MAYBE_TIMESTAMP,
            "closed_at": MAYBE_TIMESTAMP,
        },
    }
    room: JSON = {
        "type": "object",
        "required": ["id", "code", "code_display", "title", "created_at", "polls"],
        "properties": {
            "id": UUID,
            "code": {
                "type": "string",
                "pattern": f"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$",
                "description": "The join code attendees type (any case, dash optional).",
            },
            "code_display": {
                "type": "string",
                "description": "The code as shown on the screen: ABCD-EFGH.",
            },
            "title": {"type": "string"},
            "created_at": TIMESTAMP,
            "polls": {
                "type": "array",
                "items": ref("Poll"),
                "description": "In creation order; attendees do not see `draft` polls.",
            },
        },
    }
    results: JSON = {
        "type": "object",
        "required": ["poll_id", "status", "total_votes", "options"],
        "properties": {
            "poll_id": UUID,
            "status": {"type": "string", "enum": list(POLL_STATUSES)},
            "total_votes": COUNT,
            "options": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "label", "votes", "percent"],
                    "properties": {
                        "id": UUID,
                        "label": {"type": "string"},
                        "votes": COUNT,
                        "percent": {
                            "type": "number",
                            "minimum": 0,
                            "description": "votes / total_votes * 100, one decimal; 0 with "
                            "no votes. On `multiple` polls the options add up to over 100.",
                        },
                    },
                },
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {
                            "type": "string",
                            "description": "A stable slug to branch on, e.g. `poll_not_open`.",
                        },
                        "message": {"type": "string", "description": "A sentence for a person."},
                    },
                }
            },
            "example": {
                "error": {"code": "poll_not_open", "message": "This poll is not open for votes."}
            },
        },
        "Option": option,
        "Poll": poll,
        "Room": room,
        "Results": results,
        "CreateRoom": {
            "type": "object",
            "required": ["title"],
            "properties": {"title": text(MAX_TITLE, "The room's title.")},
        },
        "CreatePoll": {
            "type": "object",
            "required": ["question", "options"],
            "properties": {
                "question": text(MAX_QUESTION, "The question."),
                "kind": {
                    "type": "string",
                    "enum": list(KINDS),
                    "default": "single",
                    "description": "`single`: exactly one option per vote; `multiple`: one "
                    "or more.",
                },
                "options": {
                    "type": "array",
                    "minItems": MIN_OPTIONS,
                    "maxItems": MAX_OPTIONS,
                    "uniqueItems": True,
                    "items": text(MAX_LABEL, "An option's label, unique in the poll."),
                },
                "allow_change": {"type": "boolean", "default": False},
                "hide_results": {"type": "boolean", "default": False},
            },
        },
        "Join": {
            "type": "object",
            "required": ["code"],
            "properties": {
                "code": {
                    "type": "string",
                    "minLength": 1,
                    "pattern": NOT_BLANK,
                    "description": "The room's code, in any case, with or without the dash.",
                }
            },
        },
        "Joined": {
            "type": "object",
            "required": ["voter_id", "voter_token", "room_id"],
            "properties": {
                "voter_id": UUID,
                "voter_token": {
                    "type": "string",
                    "description": "Send as `Authorization: Bearer <voter_token>`; also set "
                    f"as the `{VOTER_COOKIE}` cookie (HttpOnly, 7 days).",
                },
                "room_id": UUID,
            },
        },
        "CastVote": {
            "type": "object",
            "required": ["option_ids"],
            "properties": {
                "event_id": {
                    **UUID,
                    "description": "The vote's idempotency key. Absent: the server makes "
                    "one. Send the same one again to retry safely.",
                },
                "option_ids": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string"},
                    "description": "Ids of the poll's options: exactly one on a `single` "
                    "poll, one or more on a `multiple` poll. Repeats are ignored.",
                },
            },
        },
        "VoteAccepted": {
            "type": "object",
            "required": ["event_id", "status"],
            "properties": {
                "event_id": {**UUID, "description": "Lower case, with dashes."},
                "status": {"const": "accepted"},
            },
        },
        "Receipt": {
            "type": "object",
            "required": ["event_id", "status"],
            "properties": {
                "event_id": UUID,
                "status": {
                    "type": "string",
                    "enum": list(RECEIPT_STATUSES),
                    "description": "`queued`: durable, not yet counted; `counted`: in the "
                    "results; `rejected`: not (or no longer) in the results, see `reason`.",
                },
                "reason": {
                    "type": "string",
                    "enum": list(RECEIPT_REASONS),
                    "description": "Only with `rejected`. `replaced`: a later vote by the "
                    "same voter took its place; `superseded`: a later vote was counted first.",
                },
            },
        },
        "CountedVote": {
            "type": "object",
            "required": ["event_id", "voter_id", "option_ids", "counted_at"],
            "properties": {
                "event_id": UUID,
                "voter_id": UUID,
                "option_ids": {"type": "array", "items": UUID},
                "counted_at": TIMESTAMP,
            },
        },
        "PollExport": {
            "type": "object",
            "required": ["poll", "results", "votes"],
            "properties": {
                "poll": ref("Poll"),
                "results": ref("Results"),
                "votes": {"type": "array", "items": ref("CountedVote")},
            },
        },
        "RoomExport": {
            "type": "object",
            "description": "Every poll of a room, drafts included, in the room's order.",
            "required": ["room", "exported_at", "polls"],
            "properties": {
                "room": {
                    "type": "object",
                    "description": "The room, as in getRoom, without its polls.",
                    "required": ["id", "code", "title", "created_at"],
                },
                "exported_at": TIMESTAMP,
                "polls": {"type": "array", "items": ref("PollExport")},
            },
        },
        "Notification": {
            "type": "object",
            "description": "A message for one attendee. `poll_created`: the host prepared a poll "
            "(its question is not shown); `poll_opened`: a poll opened in the room; "
            "`poll_closed`: a poll the attendee voted in closed (`data` holds its "
            "final results).",
            "required": [
                "id", "title", "message", "type", "source_id", "is_read", "created_at",
            ],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "title": {"type": "string", "description": "A heading for a person."},
                "message": {"type": "string", "description": "A sentence for a person."},
                "type": {"type": "string", "enum": list(NOTIFICATION_TYPES)},
                "source_id": {**UUID, "description": "The poll's id."},
                "is_read": {"type": "boolean"},
                "created_at": TIMESTAMP,
                "data": {
                    **ref("Results"),
                    "description": "Only on `poll_closed`: the final results.",
                },
            },
        },
        "Inbox": {
            "type": "object",
            "required": ["notifications", "unread"],
            "properties": {
                "notifications": {
                    "type": "array",
                    "maxItems": 100,
                    "items": ref("Notification"),
                    "description": "The newest 100, newest first.",
                },
                "unread": {**COUNT, "description": "Unread notifications, of all of them."},
            },
        },
        "NotificationRead": {
            "type": "object",
            "required": ["id", "is_read"],
            "properties": {"id": {"type": "integer"}, "is_read": {"const": True}},
        },
        "MarkedRead": {
            "type": "object",
            "required": ["marked_read"],
            "properties": {
                "marked_read": {**COUNT, "description": "How many were unread until now."},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "node_id"],
            "properties": {
                "status": {"const": "ok"},
                "version": {"type": "string"},
                "node_id": {**UUID, "description": "This server's stable id."},
            },
        },
    }


def components() -> JSON:
    return {
        "schemas": schemas(),
        "securitySchemes": {
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The host's token: OPUS_ADMIN_TOKEN, or the file `admin_token` "
                "in the data dir.",
            },
            "voterToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "An attendee's `voter_token`, from POST /api/v1/join.",
            },
            "voterCookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": VOTER_COOKIE,
                "description": "The cookie POST /api/v1/join sets; same value as the token.",
            },
            "socketToken": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "GET /ws only: the admin token or a voter token, for clients "
                "that cannot set headers. It wins over the header and the cookie.",
            },
        },
        "headers": {
            "RetryAfter": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }


# -- paths --------------------------------------------------------------------------------


def paths() -> JSON:
    room_id = id_param("room_id", "room")
    poll_id = id_param("poll_id", "poll")
    poll_200 = ok("The poll.", ref("Poll"), EXAMPLE_POLL)
    transition = error("`invalid_transition`: only a draft poll opens, only an open poll closes.")
    return {
        "/api/v1/rooms": {
            "post": {
                "operationId": "createRoom",
                "tags": ["host"],
                "summary": "Create a room",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": json_body(ref("CreateRoom"), {"title": "Physics 101"}),
                },
                "responses": {
                    "201": {
                        **ok("The room, with its code.", ref("Room"),
                             {**EXAMPLE_ROOM, "polls": []}),
                        "links": links("id", "room_id", "getRoom", "createPoll"),
                    },
                    "400": error(BAD_JSON + " `invalid_field`: `title` is not a string."),
                    **host_errors(
                        {
                            "413": TOO_LARGE,
                            "422": error("`invalid_field`: `title` missing or blank; "
                                         f"`too_long`: over {MAX_TITLE} characters."),
                        }
                    ),
                },
            }
        },
        "/api/v1/rooms/{room_id}": {
            "parameters": [room_id],
            "get": {
                "operationId": "getRoom",
                "tags": ["host", "attendee"],
                "summary": "A room with its polls",
                "description": "The host sees every poll; an attendee of this room sees the "
                "open and closed ones.",
                "security": ADMIN_OR_VOTER,
                "responses": {
                    "200": ok("The room.", ref("Room"), EXAMPLE_ROOM),
                    "401": NEEDS_VOTER_401,
                    "403": error("`wrong_room`: the voter joined another room."),
                    "404": error("`room_not_found`: no room has this id."),
                    "default": OTHER,
                },
            },
        },
        "/api/v1/rooms/{room_id}/polls": {
            "parameters": [room_id],
            "post": {
                "operationId": "createPoll",
                "tags": ["host"],
                "summary": "Add a poll to a room (as a draft)",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": json_body(
                        ref("CreatePoll"),
                        {
                            "question": "Which planet is largest?",
                            "kind": "single",
                            "options": ["Mars", "Jupiter", "Venus"],
                        },
                    ),
                },
                "responses": {
                    "201": {
                        **ok("The poll, in `draft`.", ref("Poll"),
                             {**EXAMPLE_POLL, "status": "draft", "opened_at": None}),
                        "links": links(
                            "id", "poll_id", "getPoll", "openPoll", "closePoll", "exportPoll",
                            "getResults", "castVote",
                        ),
                    },
                    "400": error(
                        BAD_JSON + " `invalid_field`: a field of the wrong type: `question` "
                        "or `kind` not a string, `options` absent or not a list of strings, "
                        "`allow_change` or `hide_results` not a boolean."
                    ),
                    **host_errors(
                        {
                            "404": error("`room_not_found`: no room has this id (the body is "
                                         "checked first)."),
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_field`: `question` missing or blank, or an option "
                                f"label blank or over {MAX_LABEL} characters; "
                                f"`too_long`: `question` over {MAX_QUESTION} "
                                "characters; `invalid_kind`: `kind` is not one of "
                                f"{', '.join(KINDS)}; `option_count`: not {MIN_OPTIONS} to "
                                f"{MAX_OPTIONS} options; `duplicate_option`: two labels "
                                "are the same."
                            ),
                        }
                    ),
                },
            },
        },
        "/api/v1/polls/{poll_id}": {
            "parameters": [poll_id],
            "get": {
                "operationId": "getPoll",
                "tags": ["host"],
                "summary": "One poll",
                "security": ADMIN,
                "responses": {"200": poll_200, **host_errors({"404": POLL_404})},
            },
        },
        "/api/v1/polls/{poll_id}/open": {
            "parameters": [poll_id],
            "post": {
                "operationId": "openPoll",
                "tags": ["host"],
                "summary": "Open a draft poll for votes",
                "description": "Opening an open poll changes nothing and answers 200.",
                "security": ADMIN,
                "responses": {
                    "200": poll_200,
                    **host_errors({"404": POLL_404, "409": transition}),
                },
            },
        },
        "/api/v1/polls/{poll_id}/close": {
            "parameters": [poll_id],
            "post": {
                "operationId": "closePoll",
                "tags": ["host"],
                "summary": "Close an open poll",
                "description": "Closing a closed poll changes nothing and answers 200.",
                "security": ADMIN,
                "responses": {
                    "200": ok("The poll.", ref("Poll"),
                              {**EXAMPLE_POLL, "status": "closed",
                               "closed_at": "2026-11-23T13:07:05.200Z"}),
                    **host_errors({"404": POLL_404, "409": transition}),
                },
            },
        },
        "/api/v1/polls/{poll_id}/export": {
            "parameters": [poll_id],
            "get": {
                "operationId": "exportPoll",
                "tags": ["host"],
                "summary": "The poll, its results and its counted votes",
                "description": "Sent as an attachment (`Content-Disposition`). The CSV has "
                "one `result` row per option, then one `vote` row per chosen option of each "
                "counted vote.",
                "security": ADMIN,
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The export.",
                        "content": {
                            **json_body(ref("PollExport")),
                            "text/csv": {
                                "schema": {"type": "string"},
                                "example": (
                                    "record,option_id,option_label,votes,event_id,voter_id,"
                                    "counted_at,value\n"
                                    f"result,{EXAMPLE_OPTIONS[1]['id']},Jupiter,1,,,,\n"
                                    f"vote,{EXAMPLE_OPTIONS[1]['id']},Jupiter,,"
                                    f"{EXAMPLE_EVENT_ID},{EXAMPLE_VOTER_ID},"
                                    "2026-11-23T13:07:04.647Z,\n"
                                ),
                            },
                        },
                    },
                    "400": error("`invalid_format`: `format` is neither csv nor json."),
                    **host_errors({"404": POLL_404}),
                },
            },
        },
        "/api/v1/rooms/{room_id}/export": {
            "parameters": [room_id],
            "get": {
                "operationId": "exportRoom",
                "tags": ["host"],
                "summary": "Every poll of the room, with its results and counted votes",
                "description": "Sent as an attachment (`Content-Disposition`), as "
                "`opus export ROOM` writes it. The CSV has the poll export's columns, each "
                "row prefixed with the poll's `poll_id`, `question` and `kind`.",
                "security": ADMIN,
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The export.",
                        "content": {
                            **json_body(ref("RoomExport")),
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "400": error("`invalid_format`: `format` is neither csv nor json."),
                    **host_errors({"404": error("`room_not_found`: no room has this id.")}),
                },
            },
        },
        "/api/v1/join": {
            "post": {
                "operationId": "join",
                "tags": ["attendee"],
                "summary": "Join a room by its code",
                "description": "Sets the "
                f"`{VOTER_COOKIE}` cookie too. A request that carries a valid voter token "
                "of this room (header or cookie) gets that same voter back, so joining "
                "again never gives a second vote; otherwise a new voter is made.",
                "security": ANYONE_OR_VOTER,
                "requestBody": {
                    "required": True,
                    "content": json_body(ref("Join"), {"code": "XHYR-GCQG"}),
                },
                "responses": {
                    "201": {
                        **ok("A voter of the room.", ref("Joined")),
                        "headers": {
                            "Set-Cookie": {
                                "description": f"`{VOTER_COOKIE}=<voter_token>; HttpOnly; "
                                "Max-Age=604800; Path=/; SameSite=Lax`",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "400": error(BAD_JSON + " `invalid_field`: `code` missing or blank."),
                    "404": error("`room_not_found`: no room has this code."),
                    "413": TOO_LARGE,
                    "429": error(
                        "`too_many_requests`: too many wrong codes from this address "
                        f"({JOIN_MISSES} a minute); every join from it waits `Retry-After` "
                        "seconds.",
                        retry_after=True,
                    ),
                    "default": OTHER,
                },
            }
        },
        "/api/v1/polls/{poll_id}/votes": {
            "parameters": [poll_id],
            "post": {
                "operationId": "castVote",
                "tags": ["attendee"],
                "summary": "Vote",
                "description": "202 is sent only once the vote is durable on disk. The same "
                "`event_id` sent again (same voter, poll and options) answers 202 again and "
                "is counted once, even after the poll has closed (the open check applies to "
                "new votes only). Counting happens just after: follow it with "
                "GET /api/v1/votes/{event_id}.",
                "security": VOTER,
                "requestBody": {
                    "required": True,
                    "content": json_body(
                        ref("CastVote"),
                        {"event_id": EXAMPLE_EVENT_ID, "option_ids": [EXAMPLE_OPTIONS[1]["id"]]},
                    ),
                },
                "responses": {
                    "202": {
                        **ok("Durable; it will be counted.", ref("VoteAccepted"),
                             {"event_id": EXAMPLE_EVENT_ID, "status": "accepted"}),
                        "links": links("event_id", "event_id", "getReceipt"),
                    },
                    "400": error(BAD_JSON + " `invalid_field`: `option_ids` is missing or not "
                                 "a list of strings, or `event_id` is not a UUID."),
                    "401": NEEDS_VOTER_401,
                    "403": error("`wrong_room`: the poll is in another room than the voter's; "
                                 "`forbidden`: the admin token was sent."),
                    "404": POLL_404,
                    "409": error(
                        "`poll_not_open`: the poll is a draft or closed (and the `event_id` "
                        "is new); `already_voted`: "
                        "this voter has another vote in this poll (and it does not allow "
                        "changes); `event_id_conflict`: this `event_id` belongs to a "
                        "different vote."
                    ),
                    "413": TOO_LARGE,
                    "422": error("`no_option`: `option_ids` is empty; `too_many_options`: "
                                 "more than one on a `single` poll; `invalid_option`: an id "
                                 "is not one of the poll's options."),
                    "503": error(
                        "Nothing was saved; try again after `Retry-After`. `queue_full`: "
                        "too many votes wait to be counted; `storage_full`: the server's "
                        "disk is full; `storage_error`: the disk refused the write; "
                        "`unavailable`: the server is shutting down.",
                        retry_after=True,
                    ),
                    "default": OTHER,
                },
            },
        },
        "/api/v1/votes/{event_id}": {
            "parameters": [
                {
                    **id_param("event_id", "vote"),
                    "description": "The vote's event id, in any UUID spelling (any case, "
                    "with or without dashes, `urn:uuid:` prefix).",
                }
            ],
            "get": {
                "operationId": "getReceipt",
                "tags": ["attendee"],
                "summary": "A vote's receipt",
                "security": VOTER,
                "responses": {
                    "200": ok("Where the vote is.", ref("Receipt"),
                              {"event_id": EXAMPLE_EVENT_ID, "status": "counted"}),
                    "401": NEEDS_VOTER_401,
                    "403": NEEDS_VOTER_403,
                    "404": error("`vote_not_found`: not a UUID, or this voter has no vote with "
                                 "this id."),
                    "default": OTHER,
                },
            },
        },
        "/api/v1/polls/{poll_id}/results": {
            "parameters": [poll_id],
            "get": {
                "operationId": "getResults",
                "tags": ["attendee", "host"],
                "summary": "The poll's counts",
                "description": "Anyone may read them once the poll is open, unless it has "
                "`hide_results` and is not closed yet: then only the host. A draft's results "
                "are the host's only; anyone else gets 404.",
                "security": ANYONE_OR_ADMIN,
                "responses": {
                    "200": ok("The counts.", ref("Results"), EXAMPLE_RESULTS),
                    "403": error("`results_hidden`: shown when the poll closes."),
                    "404": error("`poll_not_found`: no poll has this id, or it is a draft and "
                                 "the admin token was not sent."),
                    "default": OTHER,
                },
            },
        },
        "/api/v1/notifications": {
            "get": {
                "operationId": "listNotifications",
                "tags": ["attendee"],
                "summary": "The attendee's notifications",
                "description": "A poll created in the room notifies everyone who had joined "
                "it; a closed poll notifies everyone who voted in it, with the final result. "
                "Once per voter and event; pushed live on an open WebSocket too.",
                "security": VOTER,
                "responses": {
                    "200": ok("The newest 100, newest first, and the unread count.",
                              ref("Inbox"), EXAMPLE_NOTIFICATIONS),
                    "401": NEEDS_VOTER_401,
                    "403": NEEDS_VOTER_403,
                    "default": OTHER,
                },
            }
        },
        "/api/v1/notifications/{notification_id}/read": {
            "parameters": [
                {
                    "name": "notification_id",
                    "in": "path",
                    "required": True,
                    "description": "The notification's `id`.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            ],
            "post": {
                "operationId": "readNotification",
                "tags": ["attendee"],
                "summary": "Mark one notification read",
                "description": "No body. Marking one that is already read answers the same.",
                "security": VOTER,
                "responses": {
                    "200": ok("Marked.", ref("NotificationRead"), {"id": 1, "is_read": True}),
                    "401": NEEDS_VOTER_401,
                    "403": NEEDS_VOTER_403,
                    "404": error("`notification_not_found`: this voter has no notification "
                                 "with this id."),
                    "default": OTHER,
                },
            },
        },
        "/api/v1/notifications/read-all": {
            "post": {
                "operationId": "readAllNotifications",
                "tags": ["attendee"],
                "summary": "Mark every notification read",
                "description": "No body.",
                "security": VOTER,
                "responses": {
                    "200": ok("How many were unread.", ref("MarkedRead"), {"marked_read": 1}),
                    "401": NEEDS_VOTER_401,
                    "403": NEEDS_VOTER_403,
                    "default": OTHER,
                },
            }
        },
        "/ws": {
            "get": {
                "operationId": "liveSocket",
                "tags": ["live"],
                "summary": "Live results, poll changes, notifications, the host's feed",
                "description": "Upgrades to a WebSocket (send the usual `Upgrade: websocket` "
                "headers). The server sends JSON text messages with a `type`: `snapshot` "
                "(first, and in answer to `resume`), `results`, `poll`, `notification` "
                "(voter sockets), `activity` (host sockets) and `pong`; the client may send "
                '`{"type": "ping"}` and `{"type": "resume"}`. The admin token makes a host '
                "socket, a voter token a voter socket, no token a screen socket. Close "
                "codes: 1013 server full, 4008 too slow, 1001 shutting down, 1009 a client "
                "message over 4096 bytes. OpenAPI cannot describe the messages: see "
                f"{DOCS}, section 'Live: the WebSocket'.",
                "security": SOCKET,
                "parameters": [
                    {
                        "name": "room",
                        "in": "query",
                        "required": True,
                        "description": "The room's id, or its code (any case, dash optional).",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                        "example": "XHYR-GCQG",
                    },
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "description": "The admin token or a voter token, for clients that "
                        "cannot send `Authorization` (it wins over the header and the "
                        f"`{VOTER_COOKIE}` cookie).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "seq",
                        "in": "query",
                        "required": False,
                        "description": "The last `seq` seen, when reconnecting. Accepted; "
                        "every new socket starts with a fresh snapshot anyway.",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "101": {
                        "description": "Switching Protocols: the WebSocket is open. Its "
                        f"messages are described in {DOCS}.",
                    },
                    "400": error("`room_required`: no `room`. (A request without the "
                                 "WebSocket upgrade headers gets a plain-text 400.)"),
                    "401": error("`bad_token`: a token that is neither the admin token nor "
                                 "a valid voter token."),
                    "403": error("`wrong_room`: a voter token of another room."),
                    "404": error("`room_not_found`: no room has this id or code."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Ready check",
                "security": ANYONE,
                "responses": {
                    "200": ok("The server is ready.", ref("Health"),
                              {"status": "ok", "version": __version__,
                               "node_id": "01a20884-3f77-7009-a2cb-34a775313623"}),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "security": ANYONE,
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4.",
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": "opus_votes_accepted_total 1.0\n",
                            }
                        },
                    }
                },
            }
        },
        PATH: {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document",
                "security": ANYONE,
                "responses": {
                    "200": ok("OpenAPI 3.1.", {"type": "object"}),
                },
            }
        },
    }


def document() -> JSON:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Opus",
            "version": __version__,
            "summary": "Live polls for a room full of phones.",
            "description": "Errors under /api/ are always "
            '`{"error": {"code": "<slug>", "message": "<sentence>"}}`. '
            "Request bodies are JSON objects (no Content-Type needed); unknown fields are "
            "ignored; text limits count characters after trimming spaces. "
            "Live updates come over the WebSocket `GET /ws`, whose messages OpenAPI cannot "
            f"describe: see {DOCS}, the prose reference.",
        },
        "tags": [
            {"name": "host", "description": "Needs the admin token."},
            {"name": "attendee", "description": "Needs a voter token (or its cookie)."},
            {"name": "live", "description": f"The WebSocket; its messages are in {DOCS}."},
            {"name": "operations", "description": "For scripts and monitoring."},
        ],
        "paths": paths(),
        "components": components(),
    }


# -- serving ------------------------------------------------------------------------------

_BODY = web.AppKey("openapi_body", bytes)


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[_BODY], content_type="application/json", charset="utf-8"
    )


def setup(app: web.Application) -> None:
    """Serve the document at GET /api/openapi.json (built once, here)."""
    app[_BODY] = json.dumps(document(), indent=2).encode()
    app.router.add_get(PATH, openapi_json)
