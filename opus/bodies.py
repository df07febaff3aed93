"""The JSON bodies the API accepts, each declared once.

A declaration gives the decoding and the type checks (msgspec, in C: a field of the wrong type
is 400 `invalid_field`), and the JSON Schema that `/api/openapi.json` serves. The rules that
depend on the value (lengths after trimming, a poll's options, a vote on a closed poll) stay
with the domain (kinds.py, rooms.py, ingest.py) and answer 422 or 409 as docs/api.md says;
here they are only described, for the schema (`Shown`).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from opus.errors import BadRequest, Unprocessable
from opus.kinds import (
    DEFAULT_TIME_LIMIT_S,
    KINDS,
    MAX_ANSWER,
    MAX_ASK,
    MAX_BLOCKED,
    MAX_LABEL,
    MAX_OPTIONS,
    MIN_OPTIONS,
    SCALES,
    TIME_LIMIT_RANGE,
)
from opus.look import ACCENT_PATTERN, DEFAULT_ACCENT, THEMES

MAX_TITLE = 200
MAX_QUESTION = 500
MIN_PASSCODE, MAX_PASSCODE = 4, 32
# Text the server trims before checking it: it must hold at least one non-space character.
NOT_BLANK = r"\S"
KIND_HELP = (
    "`single`: one option per vote; `multiple`: one or more; `rating`: a value on a scale of "
    "5 or 10; `text`: a word cloud of short answers; `qa`: questions that attendees ask and "
    "upvote; `quiz`: one option, with right answers, a time limit and points. See "
    "docs/api.md, 'Poll kinds'."
)


def Shown(description: str, **schema: Any) -> Meta:
    """A field's description and the limits the domain checks, for the schema only."""
    return Meta(description=description, extra_json_schema=schema)


def _text(limit: int, description: str) -> Meta:
    return Shown(
        f"{description} 1 to {limit} characters after trimming spaces.",
        minLength=1,
        maxLength=limit,
        pattern=NOT_BLANK,
    )


class Body(Struct, kw_only=True):
    """A request body. A required field that is missing answers 400 `invalid_field`, or 422
    where docs/api.md says so (`missing_status`)."""

    missing_status: ClassVar[int] = 400
    schema_extra: ClassVar[dict[str, Any]] = {}

    def given(self) -> dict[str, Any]:
        """The fields the caller sent (UNSET ones left out)."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not UNSET
        }


# -- rooms --------------------------------------------------------------------------------

Title = Annotated[str, _text(MAX_TITLE, "The room's title.")]
Passcode = Annotated[
    str | None,
    Shown(
        f"{MIN_PASSCODE} to {MAX_PASSCODE} characters: joining then needs it. Null or empty: "
        "the code is enough.",
        maxLength=MAX_PASSCODE,
    ),
]
ShowPasscode = Annotated[bool, Meta(description="The projector screen shows the passcode.")]
Pace = Annotated[
    str,
    Meta(
        description="`presenter`: the host shows one poll at a time, and the screen and "
        "every phone follow it; `self`: every open poll is on every phone (the default "
        "through the API). Anything else: 422 `invalid_field`.",
        extra_json_schema={"enum": ["presenter", "self"]},
    ),
]
Theme = Annotated[
    str,
    Shown(
        "The projector's and the phones' colours: `auto` (default) keeps each page's own (a "
        "dark projector, light phones), `light` or `dark` sets both. `invalid_field` otherwise.",
        enum=list(THEMES),
    ),
]
Language = Annotated[
    str | None,
    Shown(
        "The language of the room's projector screen, and of the phones that chose none: one "
        "of en, es, fr, de, ar, ja; null: each browser's own (the default). "
        "`invalid_field` otherwise.",
    ),
]
Accent = Annotated[
    str,
    Shown(
        f"The colour of buttons and highlights, `#rrggbb` (default `{DEFAULT_ACCENT}`); the "
        "text on it is black or white, whichever reads better. `invalid_field` otherwise.",
        pattern=ACCENT_PATTERN,
    ),
]


class CreateRoom(Body):
    missing_status = 422

    title: Title
    passcode: Passcode | UnsetType = UNSET
    show_passcode: ShowPasscode | UnsetType = UNSET
    pace: Pace | UnsetType = UNSET
    theme: Theme | UnsetType = UNSET
    language: Language | UnsetType = UNSET
    accent: Accent | UnsetType = UNSET


class RenameRoom(Body):
    """Only the fields sent change; a body with none of them needs `title`."""

    title: Annotated[str, _text(MAX_TITLE, "The room's new title.")] | UnsetType = UNSET
    passcode: Passcode | UnsetType = UNSET
    show_passcode: ShowPasscode | UnsetType = UNSET
    pace: Pace | UnsetType = UNSET
    theme: Theme | UnsetType = UNSET
    language: Language | UnsetType = UNSET
    accent: Accent | UnsetType = UNSET


class DuplicateRoom(Body):
    title: (
        Annotated[str, _text(MAX_TITLE, "The copy's title; absent: the old title + ' (copy)'.")]
        | UnsetType
    ) = UNSET


class PollOrder(Body):
    poll_ids: Annotated[
        list[Annotated[str, Meta(extra_json_schema={"format": "uuid"})]],
        Shown(
            "Every poll of the room (drafts too), each once, in the new order. "
            "`invalid_order` otherwise.",
            uniqueItems=True,
        ),
    ]


# -- polls --------------------------------------------------------------------------------

Question = Annotated[str, _text(MAX_QUESTION, "The question.")]
Kind = Annotated[str, Shown(KIND_HELP, enum=list(KINDS))]
Labels = Annotated[
    list[Annotated[str, _text(MAX_LABEL, "An option's label, unique in the poll.")]],
    Shown(
        "single, multiple, quiz: required. Ignored by the other kinds (a rating's options are "
        "its scale).",
        minItems=MIN_OPTIONS,
        maxItems=MAX_OPTIONS,
        uniqueItems=True,
    ),
]
Correct = Annotated[
    list[Annotated[int, Meta(extra_json_schema={"minimum": 0, "maximum": MAX_OPTIONS - 1})]],
    Shown(
        "Quiz only, required: the positions (from 0) in `options` of the right answer. An "
        "answer (one option) is right only when it is exactly this set, so give one position. "
        "`invalid_correct` when empty or out of range.",
        minItems=1,
    ),
]
TimeLimit = Annotated[
    int | None,
    Shown(
        "Quiz only: seconds to answer once it opens; null for no limit. `invalid_time_limit` "
        "outside the range.",
        minimum=TIME_LIMIT_RANGE[0],
        maximum=TIME_LIMIT_RANGE[1],
    ),
]
Scale = Annotated[
    int,
    Shown(
        'Rating only: the options become "1" to this. `invalid_scale` otherwise.',
        enum=list(SCALES),
    ),
]
BlockedWords = Annotated[
    Annotated[list[str], Meta(extra_json_schema={"maxItems": MAX_BLOCKED})] | str,
    Shown(
        "Text only: words left out of the cloud (kept lowercased, sorted, without repeats). "
        f"A string is split at commas and spaces. At most {MAX_BLOCKED} (`too_long`).",
    ),
]
Moderated = Annotated[
    bool,
    Meta(
        description="Qa only: new questions are `pending` (seen by the host only) until the "
        "host makes them `visible`."
    ),
]
AllowChange = Annotated[
    bool, Meta(description="A later vote by the same voter replaces the earlier one.")
]
HideResults = Annotated[
    bool, Meta(description="Attendees see the results only once the poll is closed.")
]


class CreatePoll(Body):
    """The fields of another kind are ignored."""

    missing_status = 422
    schema_extra = {
        "allOf": [
            {
                "if": {
                    "required": ["kind"],
                    "properties": {
                        "kind": {"enum": sorted(set(KINDS) - {"single", "multiple", "quiz"})}
                    },
                },
                "then": {},
                "else": {"required": ["options"]},
            },
            {
                "if": {"required": ["kind"], "properties": {"kind": {"const": "quiz"}}},
                "then": {"required": ["options", "correct"]},
            },
        ]
    }

    question: Question
    kind: Kind = "single"
    options: Labels | UnsetType = UNSET
    correct: Correct | UnsetType = UNSET
    time_limit_s: TimeLimit = DEFAULT_TIME_LIMIT_S
    scale: Scale = 5
    blocked_words: BlockedWords = []
    moderated: Moderated = False
    allow_change: AllowChange = False
    hide_results: HideResults = False


class UpdatePoll(Body, forbid_unknown_fields=True):
    """Only the fields to change. `question`, `kind`, `options`, `correct`, `scale` and
    `time_limit_s` only while the poll is a draft (`poll_not_draft` otherwise); sending any of
    them rebuilds the options with new ids. `hide_results`, `allow_change`, `blocked_words`
    and `moderated` at any time. Any other field answers 422 `invalid_field`."""

    question: Question | UnsetType = UNSET
    kind: Kind | UnsetType = UNSET
    options: Labels | UnsetType = UNSET
    correct: Correct | UnsetType = UNSET
    time_limit_s: TimeLimit | UnsetType = UNSET
    scale: Scale | UnsetType = UNSET
    blocked_words: BlockedWords | UnsetType = UNSET
    moderated: Moderated | UnsetType = UNSET
    allow_change: AllowChange | UnsetType = UNSET
    hide_results: HideResults | UnsetType = UNSET


class Moderate(Body):
    """At least one of the three."""

    schema_extra = {"minProperties": 1}

    status: (
        Annotated[
            str,
            Shown(
                "`visible`: approve (or show again); `hidden`: take it off attendees' screens. "
                "`pending` cannot be set.",
                enum=["visible", "hidden"],
            ),
        ]
        | UnsetType
    ) = UNSET
    pinned: Annotated[bool, Meta(description="Pinned questions come first.")] | UnsetType = UNSET
    answered: Annotated[bool, Meta(description="A mark for the screen.")] | UnsetType = UNSET


# -- attendees ----------------------------------------------------------------------------


class Join(Body):
    code: Annotated[
        str,
        Shown(
            "The room's code, in any case, with or without the dash.",
            minLength=1,
            pattern=NOT_BLANK,
        ),
    ]
    passcode: Annotated[str, Meta(description="The room's passcode, when it has one.")] | None = (
        None
    )


class CastVote(Body):
    """One of four shapes, by the poll's kind: `option_ids` (single, multiple, quiz, and
    rating), `value` (rating), `text` (text: an answer of 1 to 80 characters, one per voter;
    qa: a question of 1 to 280 characters, its id is the vote's event_id) or `upvote` (qa: a
    question of this poll, once per voter and question). A body with both `text` and
    `upvote` is an upvote."""

    schema_extra = {
        "anyOf": [{"required": [name]} for name in ("option_ids", "value", "text", "upvote")]
    }

    event_id: (
        Annotated[
            uuid.UUID,
            Meta(
                description="The vote's idempotency key. Absent: the server makes one. Send "
                "the same one again to retry safely."
            ),
        ]
        | None
    ) = None
    option_ids: (
        Annotated[
            list[str],
            Shown(
                "Ids of the poll's options: exactly one, or one or more on a `multiple` poll. "
                "Repeats are ignored.",
                minItems=1,
            ),
        ]
        | UnsetType
    ) = UNSET
    value: (
        Annotated[
            int,
            Shown(
                "From 1 to the poll's `scale` (`invalid_value` outside it).",
                minimum=1,
                maximum=max(SCALES),
            ),
        ]
        | UnsetType
    ) = UNSET
    text: (
        Annotated[
            str,
            Shown(
                "Runs of spaces count as one and the ends are trimmed before the length is "
                f"checked (`empty_text`, `too_long`): {MAX_ANSWER} characters for an answer, "
                f"{MAX_ASK} for a question.",
                minLength=1,
                maxLength=MAX_ASK,
                pattern=NOT_BLANK,
            ),
        ]
        | UnsetType
    ) = UNSET
    upvote: Annotated[str, Shown("The question's id.", minLength=1)] | UnsetType = UNSET


class SocketVote(CastVote, kw_only=True):
    """A vote sent over the attendee's socket (docs/api.md, "Votes over the socket"): the
    body of `POST /api/v1/polls/{poll_id}/votes` with its `type` and its poll."""

    missing_status: ClassVar[int] = 400
    type: Literal["vote"]
    poll_id: Annotated[str, Meta(max_length=64)]


REQUESTS: tuple[type[Body], ...] = (
    CreateRoom,
    RenameRoom,
    DuplicateRoom,
    PollOrder,
    CreatePoll,
    UpdatePoll,
    Moderate,
    Join,
    CastVote,
)


# -- decoding -----------------------------------------------------------------------------


def sent[T](value: T | UnsetType) -> T | None:
    """A field's value, or None when the caller did not send it."""
    return None if value is UNSET else value


_decoders: dict[type[Body], msgspec.json.Decoder[Any]] = {}
# JSON may spell half of a UTF-16 surrogate pair (`"\ud800"`): Python could not encode the
# string again, so msgspec refuses it; the message says why.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_FIELD = re.compile(r"`\$\.(\w+)")
_MISSING = re.compile(r"missing required field `(\w+)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


def decode[B: Body](raw: bytes, cls: type[B]) -> B:
    """The body, decoded and type-checked, or the contract's error."""
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.json.Decoder(cls)
    if not raw.strip():
        raw = b"{}"
    try:
        body: B = decoder.decode(raw)
        return body
    except msgspec.ValidationError as exc:
        raise _invalid(cls, str(exc)) from None
    except msgspec.DecodeError:
        if _SURROGATE_ESCAPE.search(raw):
            raise BadRequest(
                "The request body has text that is not valid Unicode (a lone "
                "surrogate escape such as \\ud800).",
                code="invalid_json",
            ) from None
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
    except RecursionError:  # thousands of nested brackets: no body of this API is like that
        raise BadRequest("The request body is nested too deeply.", code="invalid_json") from None


def _invalid(cls: type[Body], message: str) -> BadRequest | Unprocessable:
    if message.startswith("Expected `object`") and " - at " not in message:
        return BadRequest("The request body must be a JSON object.", code="invalid_json")
    if missing := _MISSING.search(message):
        name = missing.group(1)
        error = Unprocessable if cls.missing_status == 422 else BadRequest
        return error(f"'{name}' is required.", code="invalid_field")
    if unknown := _UNKNOWN.search(message):
        return Unprocessable(
            f"This field cannot be changed: {unknown.group(1)}.", code="invalid_field"
        )
    field = _FIELD.search(message)
    where = f"'{field.group(1)}': " if field else ""
    detail = message.split(" - at ")[0]
    return BadRequest(f"{where}{detail}.", code="invalid_field")


def of[B: Body](cls: type[B], fields: dict[str, Any]) -> B:
    """A body from a page's form (the host console, the attendee page), checked as the API
    checks it."""
    try:
        return msgspec.convert(fields, cls)
    except msgspec.ValidationError as exc:
        raise _invalid(cls, str(exc)) from None
