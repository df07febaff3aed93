"""What the API answers, and the rows the host's and attendees' reads build: each declared once.

These are TypedDicts: the reads in rooms.py, results.py and the views build them (mypy checks
each field), they go out as JSON as they are, and `/api/openapi.json` generates their schemas
from here. Descriptions are for the schema; docs/api.md says the same in prose.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from msgspec import Meta

from opus.bodies import KIND_HELP
from opus.codes import CODE_ALPHABET, CODE_LENGTH
from opus.kinds import KINDS, QUIZ_GRACE_S, SCALES, TIME_LIMIT_RANGE

MAX_WORDS = 60  # a word cloud's words in its results
LEADERBOARD_SIZE = 10
QUESTIONS_SHOWN = 50  # the top Q&A questions in results and snapshots
POLL_STATUSES = ("draft", "open", "closed")
RECEIPT_STATUSES = ("queued", "counted", "rejected")
RECEIPT_REASONS = (
    "already_voted",
    "invalid_option",
    "poll_closed",
    "poll_not_found",
    "question_hidden",
    "question_not_found",
    "replaced",
    "superseded",
    "time_up",
)
QUESTION_STATUSES = ("visible", "pending", "hidden")
NOTIFICATION_TYPES = ("poll_created", "poll_opened", "poll_closed")
INBOX_SIZE = 100


def _(description: str, **schema: Any) -> Meta:
    """A description (if any) and what the schema says beyond the type."""
    return Meta(description=description or None, extra_json_schema=schema)


Id = Annotated[str, Meta(extra_json_schema={"format": "uuid"})]
Time = Annotated[
    str,
    Meta(description="UTC, RFC 3339 with milliseconds.", extra_json_schema={"format": "date-time"}),
]
MaybeTime = Annotated[
    str | None,
    Meta(description="UTC, RFC 3339 with milliseconds.", extra_json_schema={"format": "date-time"}),
]
Count = Annotated[int, Meta(ge=0)]
Kind = Annotated[str, _(KIND_HELP, enum=list(KINDS))]
PollStatus = Annotated[str, _("", enum=list(POLL_STATUSES))]
Correct = Annotated[
    bool,
    Meta(
        description="Quiz only: this option is a right answer. Shown to the host always, to "
        "everyone else once the quiz is closed."
    ),
]


class Option(TypedDict):
    id: Id
    label: str
    correct: NotRequired[Correct]


class Poll(TypedDict):
    """A poll, as the host sees it. `draft` polls are shown to the host only."""

    id: Id
    room_id: Id
    position: Annotated[
        int,
        Meta(
            ge=0,
            description="The poll's place in its room, from 0 (PUT "
            "/api/v1/rooms/{room_id}/order changes it).",
        ),
    ]
    question: str
    kind: Kind
    status: PollStatus
    allow_change: Annotated[
        bool, Meta(description="A later vote by the same voter replaces the earlier one.")
    ]
    hide_results: Annotated[
        bool, Meta(description="Results are shown to attendees only once the poll is closed.")
    ]
    options: Annotated[
        list[Option],
        Meta(
            description='In order. A rating\'s are its scale\'s values, labelled "1" to "5" (or '
            '"10"); `text` and `qa` polls have none.'
        ),
    ]
    total_votes: Annotated[
        int,
        Meta(
            ge=0,
            description="Voters counted (not options chosen); on a `qa` poll, its `visible` "
            "questions (pending and hidden ones are not counted).",
        ),
    ]
    scale: Annotated[
        int | None, _("A rating's scale; null for the other kinds.", enum=[*SCALES, None])
    ]
    blocked_words: Annotated[
        list[str],
        Meta(
            description="A word cloud's blocked words, lowercased and sorted; empty for the "
            "other kinds."
        ),
    ]
    moderated: Annotated[
        bool,
        Meta(
            description="A Q&A whose questions wait for the host's approval; false for the "
            "other kinds."
        ),
    ]
    time_limit_s: Annotated[
        int | None,
        _(
            "A quiz's seconds to answer; null for the other kinds, or no limit.",
            minimum=TIME_LIMIT_RANGE[0],
            maximum=TIME_LIMIT_RANGE[1],
        ),
    ]
    deadline: Annotated[
        str | None,
        _(
            "While a quiz with a time limit is open: opened_at + time_limit_s (answers still "
            f"count for {QUIZ_GRACE_S:g} s more). RFC 3339, UTC. Null otherwise.",
            format="date-time",
        ),
    ]
    created_at: Time
    opened_at: MaybeTime
    closed_at: MaybeTime


class RoomFields(TypedDict):
    id: Id
    code: Annotated[
        str,
        _(
            "The join code attendees type (any case, dash optional).",
            pattern=f"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$",
        ),
    ]
    code_display: Annotated[str, Meta(description="The code as shown on the screen: ABCD-EFGH.")]
    title: str
    created_at: Time
    passcode_required: Annotated[bool, Meta(description="Joining needs the room's passcode.")]
    passcode: NotRequired[
        Annotated[str | None, Meta(description="The host always sees it; others when shown.")]
    ]
    show_passcode: NotRequired[
        Annotated[bool, Meta(description="The projector screen shows the passcode.")]
    ]
    pace: Annotated[
        Literal["presenter", "self"],
        Meta(
            description="`presenter`: the host shows one poll at a time, and the screen and "
            "every phone follow it; `self`: every open poll is on every phone."
        ),
    ]
    shown_poll_id: Annotated[
        str | None,
        Meta(description="The poll the host shows now (presenter mode); null: none yet."),
    ]
    language: Annotated[
        str | None,
        Meta(
            description="The language of the screen, and of phones that chose none; null: "
            "each browser's own."
        ),
    ]
    theme: Annotated[
        Literal["auto", "light", "dark"],
        Meta(description="The projector's and the phones' colours (`auto`: each page's own)."),
    ]
    accent: Annotated[
        str,
        _("The colour of buttons and highlights, #rrggbb.", pattern="^#[0-9a-f]{6}$"),
    ]


class Room(RoomFields):
    polls: Annotated[
        list[Poll],
        Meta(
            description="In the host's order (`position`): creation order unless reordered. "
            "Attendees do not see `draft` polls."
        ),
    ]


class OptionResult(TypedDict):
    id: Id
    label: str
    votes: Annotated[
        int | None,
        _(
            "Null in an open quiz's results for anyone but the host: how the hall answers "
            "would hint at the right answer.",
            minimum=0,
        ),
    ]
    percent: Annotated[
        float | None,
        _(
            "votes / total_votes * 100, one decimal; 0 with no votes. On `multiple` polls the "
            "options add up to over 100. Null where `votes` is.",
            minimum=0,
        ),
    ]
    correct: NotRequired[Correct]


class Word(TypedDict):
    word: Annotated[str, Meta(description="Lowercased.")]
    count: Annotated[int, Meta(ge=0, description="Answers that contain the word.")]


class Question(TypedDict):
    id: Annotated[str, _("The event_id of the vote that asked it.", format="uuid")]
    text: str
    upvotes: Count
    pinned: bool
    answered: bool
    status: Annotated[
        str,
        _(
            "`pending`: waiting for the host's approval (moderated polls); only `visible` "
            "ones reach attendees and screens.",
            enum=list(QUESTION_STATUSES),
        ),
    ]
    created_at: Time


class LeaderboardRow(TypedDict):
    name: Annotated[str, Meta(description="The voter's pseudonym (join's `name`).")]
    points: Annotated[
        int,
        Meta(
            ge=0,
            description="Over the room's closed quizzes. A right answer scores 500 + round(500 "
            "* max(0, 1 - t / time_limit_s)), t the seconds from the opening to the answer "
            "(1000 without a time limit); a wrong one 0.",
        ),
    ]
    correct: Annotated[int, Meta(ge=0, description="Right answers.")]


class Results(TypedDict):
    """Every kind has the first five fields; `average` (rating), `words` (text), `questions`
    (qa) and `leaderboard` (quiz) come with their kind only. Attendees and screens see a
    Q&A's `visible` questions only and a quiz's `correct` once it is closed; the host (admin
    token, host sockets) sees everything."""

    poll_id: Id
    kind: Annotated[str, _("", enum=list(KINDS))]
    status: PollStatus
    total_votes: Annotated[
        int,
        Meta(
            ge=0,
            description="Voters counted; on a `qa` poll, its `visible` questions, for every "
            "reader: what the audience sees (the host finds the others in `question_count`).",
        ),
    ]
    options: Annotated[
        list[OptionResult],
        Meta(description="In the poll's order; empty for `text` and `qa` polls."),
    ]
    average: NotRequired[
        Annotated[
            float | None,
            Meta(description="Rating only: the mean value, 2 decimals; null with no votes."),
        ]
    ]
    words: NotRequired[
        Annotated[
            list[Word],
            Meta(
                max_length=MAX_WORDS,
                description=f"Text only: the {MAX_WORDS} most frequent words, by count then "
                "alphabetically, without the poll's blocked words (applied as the results are "
                "read, so a word blocked later disappears at once).",
            ),
        ]
    ]
    questions: NotRequired[
        Annotated[
            list[Question],
            Meta(
                max_length=QUESTIONS_SHOWN,
                description=f"Q&A only: the top {QUESTIONS_SHOWN}, pinned first, then the "
                "most upvoted, then the oldest.",
            ),
        ]
    ]
    question_count: NotRequired[
        Annotated[
            int,
            Meta(
                ge=0,
                description="Q&A only: every question the reader may see (attendees: the "
                "visible ones; the host: pending and hidden ones too), including those beyond "
                "`questions`.",
            ),
        ]
    ]
    leaderboard: NotRequired[
        Annotated[
            list[LeaderboardRow],
            Meta(
                max_length=LEADERBOARD_SIZE,
                description=f"Quiz only: the room's top {LEADERBOARD_SIZE} over its closed "
                "quizzes (an open quiz is not counted yet).",
            ),
        ]
    ]


class Joined(TypedDict):
    voter_id: Id
    voter_token: Annotated[
        str,
        Meta(
            description="Send as `Authorization: Bearer <voter_token>`; also set as the "
            "`opus_voter` cookie (HttpOnly, 7 days)."
        ),
    ]
    room_id: Id
    name: Annotated[
        str,
        Meta(
            description="The voter's pseudonym on quiz leaderboards (an adjective, an animal, "
            "a number), derived from voter_id: stable, nothing stored."
        ),
    ]


class VoteAccepted(TypedDict):
    event_id: Annotated[str, _("Lower case, with dashes.", format="uuid")]
    status: Literal["accepted"]


class Receipt(TypedDict):
    event_id: Id
    status: Annotated[
        str,
        _(
            "`queued`: durable, not yet counted; `counted`: in the results; `rejected`: not "
            "(or no longer) in the results, see `reason`.",
            enum=list(RECEIPT_STATUSES),
        ),
    ]
    reason: NotRequired[
        Annotated[
            str,
            _(
                "Only with `rejected`. `replaced`: a later vote by the same voter took its "
                "place; `superseded`: a later vote was counted first; `question_hidden`: an "
                "upvote of a pending or hidden question; `time_up`: a quiz answer after the "
                "time limit; `poll_closed`: taken at a box of a venue after the poll had "
                "closed at another.",
                enum=list(RECEIPT_REASONS),
            ),
        ]
    ]


class CountedVote(TypedDict):
    """`option_ids` on the option kinds (a quiz's with its `points`); `text` on a word cloud;
    on a Q&A one per question, oldest first (`event_id` is the question's id) with `text`,
    `upvotes` and `status`."""

    event_id: Id
    voter_id: Id
    option_ids: NotRequired[list[Id]]
    points: NotRequired[Annotated[int, Meta(ge=0, description="Quiz only.")]]
    text: NotRequired[str]
    upvotes: NotRequired[Count]
    status: NotRequired[Annotated[str, _("", enum=list(QUESTION_STATUSES))]]
    counted_at: Time


class PollExport(TypedDict):
    poll: Poll
    results: Results
    votes: list[CountedVote]


class RoomExport(TypedDict):
    """Every poll of a room, drafts included, in the room's order."""

    room: Annotated[RoomFields, Meta(description="The room, as in getRoom, without its polls.")]
    exported_at: Time
    polls: list[PollExport]


class Notification(TypedDict):
    """A message for one attendee. `poll_created`: the host prepared a poll (its question is
    not shown); `poll_opened`: a poll opened in the room; `poll_closed`: a poll the attendee
    voted in closed (`data` holds its final results)."""

    id: Annotated[int, Meta(ge=1)]
    title: Annotated[str, Meta(description="A heading for a person.")]
    message: Annotated[str, Meta(description="A sentence for a person.")]
    type: Annotated[str, _("", enum=list(NOTIFICATION_TYPES))]
    source_id: Annotated[str, _("The poll's id.", format="uuid")]
    is_read: bool
    created_at: Time
    data: NotRequired[
        Annotated[Results, Meta(description="Only on `poll_closed`: the final results.")]
    ]


class Inbox(TypedDict):
    notifications: Annotated[
        list[Notification],
        Meta(max_length=INBOX_SIZE, description=f"The newest {INBOX_SIZE}, newest first."),
    ]
    unread: Annotated[int, Meta(ge=0, description="Unread notifications, of all of them.")]


class NotificationRead(TypedDict):
    id: int
    is_read: Literal[True]


class MarkedRead(TypedDict):
    marked_read: Annotated[int, Meta(ge=0, description="How many were unread until now.")]


class Questions(TypedDict):
    poll_id: Id
    questions: list[Question]
    total: Annotated[int, Meta(ge=0, description="Every question of the poll.")]
    limit: Count
    offset: Count


class Leaderboard(TypedDict):
    room_id: Id
    leaderboard: Annotated[
        list[LeaderboardRow],
        Meta(
            max_length=LEADERBOARD_SIZE,
            description="Most points first; on a tie, whoever answered first.",
        ),
    ]


class RoomSummary(TypedDict):
    id: Id
    code: str
    code_display: str
    title: str
    created_at: Time
    poll_count: Count


class RoomList(TypedDict):
    rooms: Annotated[list[RoomSummary], Meta(description="Newest first.")]


class Deleted(TypedDict):
    id: Id
    deleted: Literal[True]


class Health(TypedDict):
    status: Literal["ok"]
    version: str
    node_id: Annotated[str, _("This server's stable id.", format="uuid")]


class PeerStatus(TypedDict):
    box: str
    reachable: Annotated[bool, Meta(description="This box reaches the peer's NATS server.")]
    behind: Annotated[
        int,
        Meta(
            ge=0,
            description="The peer's events this box knows of and has not applied yet (as of "
            "the last contact).",
        ),
    ]
    clock_ahead_s: Annotated[
        float,
        Meta(
            description="How far ahead of this box's clock the peer stamps its events; 0 "
            "within 2 s. Set the clocks right: the boxes still agree, but the box ahead wins "
            "every tie of changes."
        ),
    ]


class VenueStatus(TypedDict):
    box: Annotated[str, Meta(description="This box's name in the venue file.")]
    peers: list[PeerStatus]


class ErrorDetail(TypedDict):
    code: Annotated[str, Meta(description="A stable slug to branch on, e.g. `poll_not_open`.")]
    message: Annotated[str, Meta(description="A sentence for a person.")]


class Error(TypedDict):
    error: ErrorDetail


ANSWERS: tuple[Any, ...] = (
    Error,
    Option,
    Poll,
    Room,
    Results,
    Joined,
    VoteAccepted,
    Receipt,
    CountedVote,
    PollExport,
    RoomExport,
    Notification,
    Inbox,
    NotificationRead,
    MarkedRead,
    Word,
    Question,
    Questions,
    LeaderboardRow,
    Leaderboard,
    RoomSummary,
    RoomList,
    Deleted,
    Health,
    VenueStatus,
)
