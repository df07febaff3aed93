"""The OpenAPI 3.1 description of the HTTP API, served at `GET /api/openapi.json`.

Its schemas are generated from the declarations of what the API accepts (opus/bodies.py, each
route naming its body with `api.accepts`) and answers (opus/answers.py); this module holds
only the operations' prose, security, errors and examples. docs/api.md is the prose version.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from aiohttp import web

from opus import __version__, answers, bodies
from opus.answers import LEADERBOARD_SIZE
from opus.bodies import MAX_PASSCODE, MAX_QUESTION, MAX_TITLE, MIN_PASSCODE
from opus.callers import VOTER_COOKIE
from opus.ingest import ASKS_PER_MINUTE, QUESTIONS_PER_VOTER
from opus.kinds import (
    KINDS,
    MAX_ANSWER,
    MAX_ASK,
    MAX_BLOCKED,
    MAX_LABEL,
    MAX_OPTIONS,
    MIN_OPTIONS,
    QUIZ_GRACE_S,
    SCALES,
    TIME_LIMIT_RANGE,
)
from opus.rooms import MODERATION_PAGE
from opus.views import api
from opus.views.api import JOIN_MISSES_PER_MINUTE

JSON = dict[str, Any]

PATH = "/api/openapi.json"


# Security requirements, by who may call.
ADMIN: list[JSON] = [{"adminToken": []}]
VOTER: list[JSON] = [{"voterToken": []}, {"voterCookie": []}]
ADMIN_OR_VOTER: list[JSON] = [*ADMIN, *VOTER]
ANYONE: list[JSON] = []
ANYONE_OR_ADMIN: list[JSON] = [{}, *ADMIN]
ANYONE_OR_VOTER: list[JSON] = [{}, *VOTER]
SOCKET: list[JSON] = [{}, *ADMIN, *VOTER, {"socketToken": []}]

DOCS = "docs/api.md"


# -- small builders -----------------------------------------------------------------------


REF = "#/components/schemas/{name}"


def ref(name: str) -> JSON:
    return {"$ref": REF.format(name=name)}


def json_body(schema: JSON, example: Any = None) -> JSON:
    media: JSON = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def json_examples(schema: JSON, examples: dict[str, tuple[str, Any]]) -> JSON:
    """A JSON body with several named examples: name -> (summary, value)."""
    return {
        "application/json": {
            "schema": schema,
            "examples": {
                name: {"summary": summary, "value": value}
                for name, (summary, value) in examples.items()
            },
        }
    }


def example(value: Any) -> JSON:
    """A request body's example; its schema comes from the route's declaration (`bodies`)."""
    return {"application/json": {"example": value}}


def examples(named: dict[str, tuple[str, Any]]) -> JSON:
    """A request body's named examples: name -> (summary, value)."""
    return {
        "application/json": {
            "examples": {
                name: {"summary": summary, "value": value}
                for name, (summary, value) in named.items()
            }
        }
    }


def _components(types: tuple[Any, ...]) -> JSON:
    """JSON Schemas of these declarations (and of the types they use), by name."""
    _, generated = msgspec.json.schema_components(types, ref_template=REF)
    for schema in generated.values():
        schema.pop("title", None)
        if "description" in schema:  # a docstring: one paragraph
            schema["description"] = " ".join(schema["description"].split())
        if not schema.get("required"):
            schema.pop("required", None)
    for cls in types:
        schema_extra = getattr(cls, "schema_extra", None)
        if schema_extra:
            generated[cls.__name__].update(schema_extra)
    return generated


def with_bodies(paths: JSON) -> JSON:
    """Each operation's request body is the one its route declares (`api.accepts`)."""
    for route in api.routes:
        if not isinstance(route, web.RouteDef):
            continue
        cls = api.BODIES.get(route.handler)
        if cls is None:
            continue
        operation = paths[route.path][route.method.lower()]
        body = operation.setdefault("requestBody", {"content": example({})})
        body["content"]["application/json"]["schema"] = ref(cls.__name__)
    return paths


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


# -- the errors each kind of call can answer ----------------------------------------------

BAD_JSON = (
    "`invalid_json`: the body is not JSON, not a JSON object, or has text with a lone "
    "surrogate escape (`\\ud800`)."
)
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
ROOM_404 = error("`room_not_found`: no room has this id.")


def host_errors(more: JSON | None = None) -> JSON:
    """The answers of a host-only call: the token's, then `more`, then anything else."""
    return {"401": NEEDS_ADMIN_401, "403": NEEDS_ADMIN_403, **(more or {}), "default": OTHER}


# -- components ---------------------------------------------------------------------------

UUID: JSON = {"type": "string", "format": "uuid"}

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
    "position": 0,
    "question": "Which planet is largest?",
    "kind": "single",
    "status": "open",
    "allow_change": False,
    "hide_results": False,
    "options": EXAMPLE_OPTIONS,
    "total_votes": 0,
    "scale": None,
    "blocked_words": [],
    "moderated": False,
    "time_limit_s": None,
    "deadline": None,
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
    "passcode_required": False,
    "theme": "auto",
    "accent": "#4338ca",
    "polls": [EXAMPLE_POLL],
}
EXAMPLE_RESULTS: JSON = {
    "poll_id": EXAMPLE_POLL_ID,
    "kind": "single",
    "status": "open",
    "total_votes": 1,
    "options": [
        {**EXAMPLE_OPTIONS[0], "votes": 0, "percent": 0.0},
        {**EXAMPLE_OPTIONS[1], "votes": 1, "percent": 100.0},
        {**EXAMPLE_OPTIONS[2], "votes": 0, "percent": 0.0},
    ],
}
EXAMPLE_QUESTION_ID = "01a208e5-eaca-7039-a660-d6b2ccbbba17"
EXAMPLE_QUESTION: JSON = {
    "id": EXAMPLE_QUESTION_ID,
    "text": "Will the slides be online?",
    "upvotes": 1,
    "pinned": True,
    "answered": True,
    "status": "visible",
    "created_at": "2026-11-23T14:53:35.309Z",
}
EXAMPLE_LEADERBOARD = [
    {"name": "Eager Owl 27", "points": 998, "correct": 1},
    {"name": "Sunny Wolf 22", "points": 981, "correct": 1},
    {"name": "Calm Beaver 52", "points": 0, "correct": 0},
]
_SCALE = [
    ("01a208e5-ea72-701d-a4e5-666a591c7dc6", 0),
    ("01a208e5-ea72-701e-abca-96fa579ef0e2", 0),
    ("01a208e5-ea72-701f-9750-5c0c60043669", 0),
    ("01a208e5-ea72-7020-b333-1287039128ab", 2),
    ("01a208e5-ea72-7021-be97-c12269ce2c57", 1),
]
EXAMPLE_KIND_RESULTS: dict[str, JSON] = {
    "rating": {
        "poll_id": "01a208e5-ea72-701c-8092-e1e99f890e30",
        "kind": "rating",
        "status": "open",
        "total_votes": 3,
        "options": [
            {"id": option_id, "label": str(n), "votes": votes, "percent": round(100 * votes / 3, 1)}
            for n, (option_id, votes) in enumerate(_SCALE, start=1)
        ],
        "average": 4.33,
    },
    "text": {
        "poll_id": "01a208e5-ea76-700a-9b5a-ebb812692de6",
        "kind": "text",
        "status": "open",
        "total_votes": 3,
        "options": [],
        "words": [
            {"word": "great", "count": 2},
            {"word": "demo", "count": 1},
            {"word": "don't", "count": 1},
            {"word": "stop", "count": 1},
            {"word": "talk", "count": 1},
        ],
    },
    "qa": {
        "poll_id": "01a208e5-ea7c-7023-b369-a41c0dbdf7ec",
        "kind": "qa",
        "status": "open",
        "total_votes": 2,
        "options": [],
        "questions": [EXAMPLE_QUESTION],
    },
    "quiz": {
        "poll_id": "01a208e5-ea84-7027-816c-bc1faccfcaf3",
        "kind": "quiz",
        "status": "closed",
        "total_votes": 3,
        "options": [
            {
                "id": "01a208e5-ea84-7028-b5f7-a62f787a4f0a",
                "label": "Paris",
                "votes": 2,
                "percent": 66.7,
                "correct": True,
            },
            {
                "id": "01a208e5-ea84-7029-b992-6ce5fda8d617",
                "label": "Lyon",
                "votes": 1,
                "percent": 33.3,
                "correct": False,
            },
            {
                "id": "01a208e5-ea84-702a-8316-63977351afc9",
                "label": "Nice",
                "votes": 0,
                "percent": 0.0,
                "correct": False,
            },
        ],
        "leaderboard": EXAMPLE_LEADERBOARD,
    },
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


def answer_schemas() -> JSON:
    """The answers' schemas, from their declarations in opus/answers.py."""
    generated = _components(answers.ANSWERS)
    generated["Error"]["example"] = {
        "error": {"code": "poll_not_open", "message": "This poll is not open for votes."}
    }
    return generated


def components() -> JSON:
    return {
        "schemas": {**answer_schemas(), **_components(bodies.REQUESTS)},
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
            "venueLogToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "In a venue, the token one box shows another to read its log: "
                "derived from the venue secret in venue.toml.",
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
            "get": {
                "operationId": "listRooms",
                "tags": ["host"],
                "summary": "Every room, newest first",
                "security": ADMIN,
                "responses": {
                    "200": ok(
                        "The rooms, without their polls.",
                        ref("RoomList"),
                        {
                            "rooms": [
                                {k: v for k, v in EXAMPLE_ROOM.items() if k != "polls"}
                                | {"poll_count": 1}
                            ]
                        },
                    ),
                    **host_errors(),
                },
            },
            "post": {
                "operationId": "createRoom",
                "tags": ["host"],
                "summary": "Create a room",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": example({"title": "Physics 101"}),
                },
                "responses": {
                    "201": {
                        **ok(
                            "The room, with its code.", ref("Room"), {**EXAMPLE_ROOM, "polls": []}
                        ),
                        "links": links(
                            "id",
                            "room_id",
                            "getRoom",
                            "createPoll",
                            "renameRoom",
                            "duplicateRoom",
                            "deleteRoom",
                        ),
                    },
                    "400": error(BAD_JSON + " `invalid_field`: `title` is not a string."),
                    **host_errors(
                        {
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_field`: `title` missing or blank, a "
                                f"passcode not {MIN_PASSCODE} to {MAX_PASSCODE} "
                                "characters, a `theme` not `auto`, `light` or `dark`, or an "
                                "`accent` not `#rrggbb`; `too_long`: title over "
                                f"{MAX_TITLE} characters."
                            ),
                        }
                    ),
                },
            },
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
                    "404": ROOM_404,
                    "default": OTHER,
                },
            },
            "patch": {
                "operationId": "renameRoom",
                "tags": ["host"],
                "summary": "Rename a room, set its passcode or its look",
                "description": "Only the fields sent change; the code stays the same. Sockets "
                "on the room get a `room` message.",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": example({"title": "Physics 102"}),
                },
                "responses": {
                    "200": ok(
                        "The room with all its polls.",
                        ref("Room"),
                        {**EXAMPLE_ROOM, "title": "Physics 102"},
                    ),
                    "400": error(BAD_JSON + " `invalid_field`: `title` is not a string."),
                    **host_errors(
                        {
                            "404": error(
                                "`room_not_found`: no room has this id (the body is checked first)."
                            ),
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_field`: `title` missing or blank, a "
                                f"passcode not {MIN_PASSCODE} to {MAX_PASSCODE} "
                                "characters, a `theme` not `auto`, `light` or `dark`, or an "
                                "`accent` not `#rrggbb`; `too_long`: title over "
                                f"{MAX_TITLE} characters."
                            ),
                        }
                    ),
                },
            },
            "delete": {
                "operationId": "deleteRoom",
                "tags": ["host"],
                "summary": "Delete a room, its polls, votes and voters",
                "description": "No undo. Its code stops working, its polls answer 404; "
                "receipts and notifications already written stay. Sockets on the room get "
                '`{"type": "room", "deleted": true}`.',
                "security": ADMIN,
                "responses": {
                    "200": ok("Deleted.", ref("Deleted"), {"id": EXAMPLE_ROOM_ID, "deleted": True}),
                    **host_errors({"404": ROOM_404}),
                },
            },
        },
        "/api/v1/rooms/{room_id}/duplicate": {
            "parameters": [room_id],
            "post": {
                "operationId": "duplicateRoom",
                "tags": ["host"],
                "summary": "A new room with a draft copy of every poll (no votes)",
                "description": "A template for the next session: a new code, every poll "
                "copied in order as a `draft` with its kind, options (new ids, a quiz's right "
                "answers) and settings.",
                "security": ADMIN,
                "requestBody": {
                    "required": False,
                    "content": example({"title": "Physics 101, again"}),
                },
                "responses": {
                    "201": {
                        **ok("The new room and its polls.", ref("Room")),
                        "links": links("id", "room_id", "getRoom", "createPoll"),
                    },
                    "400": error(BAD_JSON + " `invalid_field`: `title` is not a string."),
                    **host_errors(
                        {
                            "404": ROOM_404,
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_field`: `title` blank; `too_long`: over "
                                f"{MAX_TITLE} characters."
                            ),
                        }
                    ),
                },
            },
        },
        "/api/v1/rooms/{room_id}/order": {
            "parameters": [room_id],
            "put": {
                "operationId": "reorderPolls",
                "tags": ["host"],
                "summary": "Put the room's polls in a new order",
                "description": "Their `position`s become 0, 1, 2, ... Sockets on the room get "
                "a `room` message.",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": example({"poll_ids": [EXAMPLE_POLL_ID]}),
                },
                "responses": {
                    "200": ok("The room, its polls in the new order.", ref("Room"), EXAMPLE_ROOM),
                    "400": error(
                        BAD_JSON + " `invalid_field`: `poll_ids` missing or not a list of strings."
                    ),
                    **host_errors(
                        {
                            "404": ROOM_404,
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_order`: not every poll of the room exactly once."
                            ),
                        }
                    ),
                },
            },
        },
        "/api/v1/rooms/{room_id}/leaderboard": {
            "parameters": [room_id],
            "get": {
                "operationId": "getLeaderboard",
                "tags": ["host", "attendee"],
                "summary": "The room's quiz leaderboard",
                "description": f"The top {LEADERBOARD_SIZE} over the room's closed quizzes "
                "only (an open quiz's answers would give away who was right). Empty until a "
                "quiz closes.",
                "security": ADMIN_OR_VOTER,
                "responses": {
                    "200": ok(
                        "The leaderboard.",
                        ref("Leaderboard"),
                        {"room_id": EXAMPLE_ROOM_ID, "leaderboard": EXAMPLE_LEADERBOARD},
                    ),
                    "401": NEEDS_VOTER_401,
                    "403": error(
                        "`wrong_room`: the voter joined another room (also for a "
                        "room id that does not exist)."
                    ),
                    "404": error("`room_not_found`: no room has this id (host only)."),
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
                "description": "It goes after the room's other polls.",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": examples(
                        {
                            "single": (
                                "One option per vote",
                                {
                                    "question": "Which planet is largest?",
                                    "kind": "single",
                                    "options": ["Mars", "Jupiter", "Venus"],
                                },
                            ),
                            "rating": (
                                "A scale of 1 to 5",
                                {"question": "How was the talk?", "kind": "rating", "scale": 5},
                            ),
                            "text": (
                                "A word cloud",
                                {
                                    "question": "One word for today?",
                                    "kind": "text",
                                    "blocked_words": "boring, meh",
                                },
                            ),
                            "qa": (
                                "Questions, approved by the host",
                                {
                                    "question": "Questions for the speaker",
                                    "kind": "qa",
                                    "moderated": True,
                                },
                            ),
                            "quiz": (
                                "A quiz with 30 seconds to answer",
                                {
                                    "question": "Capital of France?",
                                    "kind": "quiz",
                                    "options": ["Paris", "Lyon", "Nice"],
                                    "correct": [0],
                                    "time_limit_s": 30,
                                },
                            ),
                        },
                    ),
                },
                "responses": {
                    "201": {
                        **ok(
                            "The poll, in `draft`.",
                            ref("Poll"),
                            {**EXAMPLE_POLL, "status": "draft", "opened_at": None},
                        ),
                        "links": links(
                            "id",
                            "poll_id",
                            "getPoll",
                            "updatePoll",
                            "deletePoll",
                            "openPoll",
                            "closePoll",
                            "exportPoll",
                            "getResults",
                            "castVote",
                        ),
                    },
                    "400": error(
                        BAD_JSON + " `invalid_field`: a field of the wrong type: `question` "
                        "or `kind` not a string, `options` absent (where the kind needs them) "
                        "or not a list of strings, `allow_change`, `hide_results` or "
                        "`moderated` not a boolean, `scale` not a whole number, `correct` not "
                        "a list of whole numbers, `time_limit_s` neither a whole number nor "
                        "null, `blocked_words` neither a string nor a list of strings."
                    ),
                    **host_errors(
                        {
                            "404": error(
                                "`room_not_found`: no room has this id (the body is checked first)."
                            ),
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_field`: `question` missing or blank, or an option "
                                f"label blank or over {MAX_LABEL} characters; "
                                f"`too_long`: `question` over {MAX_QUESTION} "
                                "characters; `invalid_kind`: `kind` is not one of "
                                f"{', '.join(KINDS)}; `option_count`: not {MIN_OPTIONS} to "
                                f"{MAX_OPTIONS} options; `duplicate_option`: two labels "
                                "are the same; `invalid_scale`: a rating's `scale` is not "
                                f"{' or '.join(map(str, SCALES))}; `invalid_correct`: a quiz's "
                                "`correct` is empty or outside its options; "
                                "`invalid_time_limit`: a quiz's `time_limit_s` is not "
                                f"{TIME_LIMIT_RANGE[0]} to {TIME_LIMIT_RANGE[1]}; `too_long` "
                                f"also: more than {MAX_BLOCKED} blocked words."
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
            "patch": {
                "operationId": "updatePoll",
                "tags": ["host"],
                "summary": "Edit a poll",
                "description": "Its shape while it is a draft; `hide_results`, "
                "`allow_change`, `blocked_words` and `moderated` at any time. Sockets on the "
                "room get a `poll` message (host sockets only for a draft), then fresh "
                "results.",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": examples(
                        {
                            "hide": (
                                "Hide the results until the poll closes",
                                {"hide_results": True},
                            ),
                            "block": (
                                "Block more words in a word cloud",
                                {"blocked_words": ["boring", "meh", "rude"]},
                            ),
                            "draft": (
                                "Change a draft's question and options",
                                {
                                    "question": "Which planet is smallest?",
                                    "options": ["Mercury", "Mars"],
                                },
                            ),
                        },
                    ),
                },
                "responses": {
                    "200": ok("The poll, as the host sees it.", ref("Poll"), EXAMPLE_POLL),
                    "400": error(
                        BAD_JSON + " `invalid_field`: a field of the wrong type, as at creation."
                    ),
                    **host_errors(
                        {
                            "404": POLL_404,
                            "409": error(
                                "`poll_not_draft`: a field that only a draft may change "
                                "(question, kind, options, correct, scale, time_limit_s) "
                                "on an open or closed poll."
                            ),
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_field`: a field that cannot be changed (checked "
                                "before the poll is looked up); otherwise the codes of "
                                "poll creation."
                            ),
                        }
                    ),
                },
            },
            "delete": {
                "operationId": "deletePoll",
                "tags": ["host"],
                "summary": "Delete a poll, with its votes",
                "description": "In any status. Later votes on it answer 404; receipts already "
                'given stay. Sockets on the room get `{"type": "poll", "status": "deleted"}`.',
                "security": ADMIN,
                "responses": {
                    "200": ok("Deleted.", ref("Deleted"), {"id": EXAMPLE_POLL_ID, "deleted": True}),
                    **host_errors({"404": POLL_404}),
                },
            },
        },
        "/api/v1/polls/{poll_id}/questions": {
            "parameters": [poll_id],
            "get": {
                "operationId": "listQuestions",
                "tags": ["host"],
                "summary": "Every question of a Q&A, in every status",
                "description": "Pending and hidden ones too, in the results' order. A poll "
                "of another kind has none.",
                "security": ADMIN,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": f"At most this many (default and most: {MODERATION_PAGE}).",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MODERATION_PAGE},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "required": False,
                        "description": "Skip this many first.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 1 << 31},
                    },
                ],
                "responses": {
                    "200": ok(
                        "A page of the questions.",
                        ref("Questions"),
                        {
                            "poll_id": EXAMPLE_KIND_RESULTS["qa"]["poll_id"],
                            "questions": [EXAMPLE_QUESTION],
                            "total": 1,
                            "limit": MODERATION_PAGE,
                            "offset": 0,
                        },
                    ),
                    **host_errors(
                        {
                            "400": error(
                                "`invalid_field`: `limit` or `offset` is not a whole "
                                "number in range."
                            ),
                            "404": POLL_404,
                        }
                    ),
                },
            },
        },
        "/api/v1/questions/{question_id}": {
            "parameters": [
                {
                    **id_param("question_id", "question"),
                    "description": "The question's id: the event_id of the vote that asked it.",
                }
            ],
            "patch": {
                "operationId": "moderateQuestion",
                "tags": ["host"],
                "summary": "Approve, hide, pin or mark a Q&A question answered",
                "description": "Sockets on the room get fresh results of the poll.",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": examples(
                        {
                            "approve": ("Approve a pending question", {"status": "visible"}),
                            "pin": (
                                "Pin it and mark it answered",
                                {"pinned": True, "answered": True},
                            ),
                        },
                    ),
                },
                "responses": {
                    "200": ok("The question.", ref("Question"), EXAMPLE_QUESTION),
                    "400": error(
                        BAD_JSON + " `invalid_field`: `pinned` or `answered` not a boolean."
                    ),
                    **host_errors(
                        {
                            "404": error(
                                "`question_not_found`: no question has this id (the "
                                "body is checked first)."
                            ),
                            "413": TOO_LARGE,
                            "422": error(
                                "`invalid_field`: `status` is neither visible nor "
                                "hidden, or none of the three fields was sent."
                            ),
                        }
                    ),
                },
            },
        },
        "/api/v1/polls/{poll_id}/reopen": {
            "parameters": [poll_id],
            "post": {
                "operationId": "reopenPoll",
                "tags": ["host"],
                "summary": "Open a closed poll again",
                "description": "Its votes stay, its rules are unchanged; a timed quiz gets its "
                "whole time again. In a presenter-paced room it is shown too. In a venue, a "
                "vote another box took after the earlier close (before it heard of it) "
                "counts after all.",
                "security": ADMIN,
                "responses": {
                    "200": poll_200,
                    **host_errors(
                        {
                            "404": POLL_404,
                            "409": error("`invalid_transition`: the poll is not closed."),
                        }
                    ),
                },
            },
        },
        "/api/v1/polls/{poll_id}/show": {
            "parameters": [poll_id],
            "post": {
                "operationId": "showPoll",
                "tags": ["host"],
                "summary": "Show this poll on the screen and on every phone",
                "description": "Presenter mode (a room's `pace`): the screen and every phone "
                "follow the shown poll over the socket (a `room` message with "
                "`shown_poll_id`). A draft is opened as it is shown; a timed quiz in a "
                "presenter-paced room starts after a 3 s count-in (its `opened_at` and "
                "`deadline` say when), and closes itself when its time is up.",
                "security": ADMIN,
                "responses": {
                    "200": ok("The room, with `shown_poll_id`.", ref("Room")),
                    **host_errors({"404": POLL_404}),
                },
            },
        },
        "/api/v1/rooms/{room_id}/next": {
            "parameters": [room_id],
            "post": {
                "operationId": "showNextPoll",
                "tags": ["host"],
                "summary": "Show the next poll",
                "description": "In the room's order of polls; a draft is opened as it is "
                "shown. With no poll shown yet, next shows the first.",
                "security": ADMIN,
                "responses": {
                    "200": ok("The room, with `shown_poll_id`.", ref("Room")),
                    **host_errors(
                        {"404": ROOM_404, "409": error("`no_next_poll`: there is none.")}
                    ),
                },
            },
        },
        "/api/v1/rooms/{room_id}/previous": {
            "parameters": [room_id],
            "post": {
                "operationId": "showPreviousPoll",
                "tags": ["host"],
                "summary": "Show the previous poll",
                "description": "In the room's order of polls; a draft is opened as it is "
                "shown. With no poll shown yet, next shows the first.",
                "security": ADMIN,
                "responses": {
                    "200": ok("The room, with `shown_poll_id`.", ref("Room")),
                    **host_errors(
                        {"404": ROOM_404, "409": error("`no_previous_poll`: there is none.")}
                    ),
                },
            },
        },
        "/api/v1/polls/{poll_id}/duplicate": {
            "parameters": [poll_id],
            "post": {
                "operationId": "duplicatePoll",
                "tags": ["host"],
                "summary": "A draft copy of a poll, right after it",
                "description": "Its question, kind, options (new ids, a quiz's right answers) "
                "and settings; no votes.",
                "security": ADMIN,
                "responses": {
                    "201": ok("The copy.", ref("Poll")),
                    **host_errors({"404": POLL_404}),
                },
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
                    "200": ok(
                        "The poll.",
                        ref("Poll"),
                        {
                            **EXAMPLE_POLL,
                            "status": "closed",
                            "closed_at": "2026-11-23T13:07:05.200Z",
                        },
                    ),
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
                    "content": example({"code": "XHYR-GCQG"}),
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
                    "403": error(
                        "`passcode_required`: the room has a passcode and none was "
                        "sent; `wrong_passcode`."
                    ),
                    "404": error("`room_not_found`: no room has this code."),
                    "413": TOO_LARGE,
                    "429": error(
                        "`too_many_identities`: this address already made the most voters "
                        "allowed in this room; `too_many_joins`: it made the most allowed in "
                        "the last minute; `too_many_requests`: too many wrong codes or "
                        f"passcodes from this address ({JOIN_MISSES_PER_MINUTE} a minute). "
                        "Each waits `Retry-After` seconds.",
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
                "GET /api/v1/votes/{event_id}. The body's shape depends on the poll's kind "
                "(see CastVote); a Q&A question's id is the event_id of the vote that asked it.",
                "security": VOTER,
                "requestBody": {
                    "required": True,
                    "content": examples(
                        {
                            "options": (
                                "single, multiple or quiz",
                                {
                                    "event_id": EXAMPLE_EVENT_ID,
                                    "option_ids": [EXAMPLE_OPTIONS[1]["id"]],
                                },
                            ),
                            "rating": ("rating: a value on the scale", {"value": 4}),
                            "text": ("text: a word-cloud answer", {"text": "Great talk"}),
                            "ask": ("qa: ask a question", {"text": "Will the slides be online?"}),
                            "upvote": ("qa: upvote a question", {"upvote": EXAMPLE_QUESTION_ID}),
                        },
                    ),
                },
                "responses": {
                    "202": {
                        **ok(
                            "Durable; it will be counted.",
                            ref("VoteAccepted"),
                            {"event_id": EXAMPLE_EVENT_ID, "status": "accepted"},
                        ),
                        "links": links("event_id", "event_id", "getReceipt"),
                    },
                    "400": error(
                        BAD_JSON + " `invalid_field`: the kind's field is missing "
                        "or of the wrong type (`option_ids` not a list of strings, "
                        "`value` not a whole number, `text` not a string, `upvote` "
                        "not a non-empty string), or `event_id` is not a UUID."
                    ),
                    "401": NEEDS_VOTER_401,
                    "403": error(
                        "`wrong_room`: the poll is in another room than the voter's; "
                        "`forbidden`: the admin token was sent; "
                        "`cross_site_request`: the voter cookie came with a body "
                        "that is not JSON, from another site's page."
                    ),
                    "404": error(
                        "`poll_not_found`: no poll has this id, or it is a draft; "
                        "`question_not_found`: an upvote of a question that is not "
                        "one of this poll's."
                    ),
                    "409": error(
                        "`poll_not_open`: the poll is closed (and the `event_id` is new); "
                        "`already_voted`: this voter has another vote in this poll (and it "
                        "does not allow changes), or already upvoted this question; "
                        "`event_id_conflict`: this `event_id` belongs to a different vote; "
                        "`time_up`: a quiz's time limit (plus "
                        f"{QUIZ_GRACE_S:g} s) has passed; `question_limit`: this voter "
                        f"already asked {QUESTIONS_PER_VOTER} questions in this Q&A."
                    ),
                    "429": error(
                        f"`too_many_questions`: more than {ASKS_PER_MINUTE} "
                        "questions a minute from this voter.",
                        retry_after=True,
                    ),
                    "413": TOO_LARGE,
                    "422": error(
                        "`no_option`: `option_ids` is empty; `too_many_options`: "
                        "more than one where the kind takes one (all but "
                        "`multiple`); `invalid_option`: an id is not one of the "
                        "poll's options; `invalid_value`: a rating's `value` "
                        "outside its scale; `empty_text`: `text` blank; `too_long`: "
                        f"`text` over {MAX_ANSWER} (word cloud) or {MAX_ASK} "
                        "(question) characters."
                    ),
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
                    "200": ok(
                        "Where the vote is.",
                        ref("Receipt"),
                        {"event_id": EXAMPLE_EVENT_ID, "status": "counted"},
                    ),
                    "401": NEEDS_VOTER_401,
                    "403": NEEDS_VOTER_403,
                    "404": error(
                        "`vote_not_found`: not a UUID, or this voter has no vote with this id."
                    ),
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
                "are the host's only; anyone else gets 404. With the admin token the answer is "
                "the host's view: a Q&A's pending and hidden questions, a quiz's right answers "
                "before it closes.",
                "security": ANYONE_OR_ADMIN,
                "responses": {
                    "200": {
                        "description": "The counts, with the kind's extras.",
                        "content": json_examples(
                            ref("Results"),
                            {
                                "single": ("A single-choice poll", EXAMPLE_RESULTS),
                                **{
                                    kind: (f"A {kind} poll", body)
                                    for kind, body in EXAMPLE_KIND_RESULTS.items()
                                },
                            },
                        ),
                    },
                    "403": error("`results_hidden`: shown when the poll closes."),
                    "404": error(
                        "`poll_not_found`: no poll has this id, or it is a draft and "
                        "the admin token was not sent."
                    ),
                    "default": OTHER,
                },
            },
        },
        "/api/v1/venue": {
            "get": {
                "operationId": "getVenue",
                "tags": ["host"],
                "summary": "The venue's boxes, as this box sees them",
                "description": "In a venue of several boxes (opus serve --venue FILE --box "
                "NAME): this box's name, and for each other box whether this box reaches it "
                "and how many of its events this box knows of and has not applied yet. See "
                "docs/venue.md.",
                "security": ADMIN,
                "responses": {
                    "200": ok(
                        "This box and its peers.",
                        ref("VenueStatus"),
                        {
                            "box": "a",
                            "peers": [
                                {"box": "b", "reachable": True, "behind": 0, "clock_ahead_s": 0},
                                {"box": "c", "reachable": False, "behind": 0, "clock_ahead_s": 0},
                            ],
                        },
                    ),
                    **host_errors({"404": error("`not_a_venue`: this box serves alone.")}),
                },
            }
        },
        "/api/v1/venue/log": {
            "get": {
                "operationId": "getVenueLog",
                "tags": ["host"],
                "summary": "This box's log, for the other boxes of the venue",
                "description": "Every event this box committed or learned from the others, in "
                "order, a page at a time. A box whose copy of another box's stream was trimmed "
                "past what it had applied catches up from here (docs/venue.md). MessagePack: "
                "`events` is a list of event envelopes as the streams carry them, `next` the "
                "`after` of the next page, or null after the last page.",
                "security": [{"venueLogToken": []}],
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "The position after which to start (0: the beginning).",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "Events in the page at most.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 5000,
                            "default": 1000,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page of the log.",
                        "content": {
                            "application/msgpack": {
                                "schema": {
                                    "type": "object",
                                    "required": ["events", "next"],
                                    "properties": {
                                        "events": {
                                            "type": "array",
                                            "items": {"type": "string", "format": "binary"},
                                        },
                                        "next": {"type": ["integer", "null"]},
                                    },
                                }
                            }
                        },
                    },
                    "400": error("`invalid_field`: `after` or `limit` is not a whole number."),
                    "401": error("`bad_token`: not the venue's log token."),
                    "404": error("`not_a_venue`: this box serves alone."),
                    "default": OTHER,
                },
            }
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
                    "200": ok(
                        "The newest 100, newest first, and the unread count.",
                        ref("Inbox"),
                        EXAMPLE_NOTIFICATIONS,
                    ),
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
                    "404": error(
                        "`notification_not_found`: this voter has no notification with this id."
                    ),
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
                "(first, and in answer to `resume`), `results` (host sockets get the host's "
                "view of `qa` and `quiz` polls), `poll` (created, opened, closed, edited; "
                '`"status": "deleted"` without `poll` for a deleted one), `room` (renamed or '
                'reordered: the whole room; deleted: `"deleted": true`), `notification` '
                "(voter sockets), `activity` (host sockets) and `pong`; the client may send "
                '`{"type": "ping"}` and `{"type": "resume"}` (at most one snapshot a second). '
                "The admin token (in the Authorization header only) makes a host socket, a "
                "voter token a voter socket, no token a screen socket. Close codes: 1013 "
                "server full, 4029 too many sockets from this address, 4008 too slow, 1001 "
                "shutting down, 1009 a client message over 4096 bytes. OpenAPI cannot "
                "describe the messages: see "
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
                        "description": "A voter token, for clients that cannot send "
                        "`Authorization` (it wins over the header and the "
                        f"`{VOTER_COOKIE}` cookie). Never the admin token (400).",
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
                    "400": error(
                        "`room_required`: no `room`; `token_in_url`: the admin token "
                        "in `?token=`. (A request without the WebSocket upgrade "
                        "headers gets a plain-text 400.)"
                    ),
                    "401": error(
                        "`bad_token`: a token that is neither the admin token nor "
                        "a valid voter token."
                    ),
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
                    "200": ok(
                        "The server is ready.",
                        ref("Health"),
                        {
                            "status": "ok",
                            "version": __version__,
                            "node_id": "01a20884-3f77-7009-a2cb-34a775313623",
                        },
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "description": "For the box itself (loopback) and the admin token; for "
                "everyone with `--metrics-public`.",
                "security": ANYONE,
                "responses": {
                    "401": error("`unauthorized`: from another machine without the admin token."),
                    "200": {
                        "description": "Prometheus text format 0.0.4.",
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": "opus_votes_accepted_total 1.0\n",
                            }
                        },
                    },
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
            "ignored (except by PATCH /api/v1/polls/{poll_id}, which refuses them); text "
            "limits count characters after trimming spaces. "
            "Live updates come over the WebSocket `GET /ws`, whose messages OpenAPI cannot "
            f"describe: see {DOCS}, the prose reference.",
        },
        "tags": [
            {"name": "host", "description": "Needs the admin token."},
            {"name": "attendee", "description": "Needs a voter token (or its cookie)."},
            {"name": "live", "description": f"The WebSocket; its messages are in {DOCS}."},
            {"name": "operations", "description": "For scripts and monitoring."},
        ],
        "paths": with_bodies(paths()),
        "components": components(),
    }


# -- serving ------------------------------------------------------------------------------

_BODY = web.AppKey("openapi_body", bytes)


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_BODY], content_type="application/json", charset="utf-8")


def setup(app: web.Application) -> None:
    """Serve the document at GET /api/openapi.json (built once, here)."""
    app[_BODY] = json.dumps(document(), indent=2).encode()
    app.router.add_get(PATH, openapi_json)
