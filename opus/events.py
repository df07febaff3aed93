"""The event envelope shared by the outbox, the hub and (later) the cluster, and UUIDv7 ids."""

from __future__ import annotations

import json
import os
import threading
import time
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from opus.answers import Results
from opus.kinds import Choice
from opus.look import DEFAULT_ACCENT, DEFAULT_THEME

ROOM_CREATED = "ROOM.CREATED"
POLL_CREATED = "POLL.CREATED"
POLL_OPENED = "POLL.OPENED"
POLL_VOTE_CAST = "POLL.VOTE_CAST"
POLL_CLOSED = "POLL.CLOSED"
ROOM_UPDATED = "ROOM.UPDATED"
ROOM_DELETED = "ROOM.DELETED"
POLL_UPDATED = "POLL.UPDATED"
POLL_DELETED = "POLL.DELETED"
QUESTION_UPDATED = "QUESTION.UPDATED"
VOTER_JOINED = "VOTER.JOINED"
NOTIFICATIONS_READ = "NOTIFICATIONS.READ"

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_POOL_BYTES = 4096  # random bytes drawn from the OS at once: 512 ids per system call
_pool = b""
_taken = _POOL_BYTES


def _random_bits() -> int:
    """62 bits from the OS's cryptographic generator (os.urandom), drawn 4 KB at a time:
    ids must not be predictable, and one system call per id would cost the event loop."""
    global _pool, _taken
    if _taken >= len(_pool):
        _pool, _taken = os.urandom(_POOL_BYTES), 0
    chunk = _pool[_taken : _taken + 8]
    _taken += 8
    return int.from_bytes(chunk) >> 2


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 v7), monotonic within this process.

    Python 3.14 has uuid.uuid7; until then, 48 bits of milliseconds, a 12-bit counter that
    keeps ids ordered within one millisecond, and 62 random bits from the OS's
    cryptographic generator (see _random_bits).
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, _random_bits() & 0x3F
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
            ms = _last_ms
        counter, bits = _counter, _random_bits()
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | bits
    hexed = f"{value:032x}"
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def never_before(earlier: str) -> None:
    """Make every later uuid7() of this process sort after `earlier`: an id made before a
    restart (the wall clock may have gone back since: a laptop's clock set right by NTP), or
    another box's clock stamp (the hybrid logical clock's receive rule)."""
    global _last_ms, _counter
    value = int(earlier.replace("-", ""), 16)
    ms, counter = value >> 80, (value >> 64) & 0xFFF
    with _lock:
        if (ms, counter) > (_last_ms, _counter):
            _last_ms, _counter = ms, counter


# How far ahead of this box's clock another box's stamp may pull it (the hybrid logical
# clock's receive rule); a box whose clock is further ahead still merges the same way
# everywhere, but does not drag every other box's clock with it.
OBSERVE_AHEAD_MS = 2_000


def observe(stamp: str) -> None:
    """Another box's clock stamp (an event's `hlc`): later stamps of this box sort after it."""
    if stamp_ms(stamp) <= time.time_ns() // 1_000_000 + OBSERVE_AHEAD_MS:
        never_before(stamp)


def stamp_ms(stamp: str) -> int:
    """The milliseconds since the epoch that a uuid7 stamp carries."""
    return int(stamp.replace("-", "")[:12], 16)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_after(seconds: float) -> str:
    """`now_iso()`, `seconds` from now."""
    later = datetime.now(UTC) + timedelta(seconds=seconds)
    return later.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(iso: str | None) -> float | None:
    """Seconds since the epoch of a `now_iso()` time (None stays None)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


# -- events ------------------------------------------------------------------------------
#
# Every change is an event: written to the outbox in the transaction that makes it, handed to
# the hub (the sockets, the notifications) and, in a venue, to the other boxes. Each kind of
# event is a type with the same envelope; its `data` is typed too. Encoded once, as
# MessagePack (`encode`/`decode`); JSON only where a person reads it (the log).

SCHEMA = 1  # the envelope's version: a reader refuses what a newer box wrote


class Event(msgspec.Struct, kw_only=True, frozen=True, tag_field="type"):
    """The envelope. `type` is the kind of event (its tag on the wire, e.g. "POLL.OPENED")."""

    event_id: str
    timestamp: str
    source: str  # the box where it happened: its venue name, or its node id
    actor: str  # "host", or the voter's id
    v: int = SCHEMA
    # The hybrid logical clock (a uuid7 from `uuid7()`, which never goes back and moves past
    # every stamp this box has seen from others, see `observe`): in a venue the latest change
    # wins, and every box orders the same changes the same way.
    hlc: str = ""
    data: Any = None  # each kind of event declares its own

    @property
    def type(self) -> str:
        return str(self.__struct_config__.tag)


class RoomRef(msgspec.Struct, frozen=True):
    room_id: str


class RoomData(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    title: str
    created_at: str
    code: str
    passcode: str | None = None
    show_passcode: bool = False
    pace: str = "self"
    language: str | None = None
    theme: str = DEFAULT_THEME  # absent from a box that predates them
    accent: str = DEFAULT_ACCENT


class RoomChange(msgspec.Struct, frozen=True, omit_defaults=True):
    """What changed: the fields sent (UNSET ones did not)."""

    room_id: str
    title: str | msgspec.UnsetType = msgspec.UNSET
    passcode: str | msgspec.UnsetType | None = msgspec.UNSET
    show_passcode: bool | msgspec.UnsetType = msgspec.UNSET
    pace: str | msgspec.UnsetType = msgspec.UNSET
    shown_poll_id: str | msgspec.UnsetType | None = msgspec.UNSET  # the poll shown now
    language: str | msgspec.UnsetType | None = msgspec.UNSET
    theme: str | msgspec.UnsetType = msgspec.UNSET
    accent: str | msgspec.UnsetType = msgspec.UNSET
    order: list[str] | msgspec.UnsetType = msgspec.UNSET  # its polls' new order


class PollRef(msgspec.Struct, frozen=True):
    poll_id: str
    room_id: str


class OptionData(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    label: str
    correct: bool = False


class PollData(msgspec.Struct, frozen=True):
    """A new poll, as its row was written."""

    id: str
    room_id: str
    position: int
    question: str
    kind: str
    status: str
    allow_change: int
    hide_results: int
    scale: int | None
    blocked_words: str  # JSON list, as the row holds it
    moderated: int
    time_limit_s: int | None
    opened_at: str | None
    created_at: str
    options: list[OptionData]

    @property
    def poll_id(self) -> str:
        return self.id


class PollChange(msgspec.Struct, frozen=True):
    poll_id: str
    room_id: str
    changed: list[str]  # the fields the host sent
    poll: PollData | None = None  # the poll after the change (its options, if rebuilt)


class StatusChange(msgspec.Struct, frozen=True, omit_defaults=True):
    poll_id: str
    room_id: str
    status: str
    at: str = ""  # the opened_at or closed_at it wrote
    results: Results | None = None  # a closed poll's final results
    reopened: bool = False  # a closed poll opened again


class VoteData(msgspec.Struct, frozen=True, omit_defaults=True):
    """A vote a box accepted (each box decides the same way whether it counts)."""

    poll_id: str
    room_id: str
    voter_id: str
    option_ids: list[str]
    question_id: str | None = None  # the question asked or upvoted
    choice: Choice | None = None
    taken_ns: int = 0  # when the box took it (a quiz answer's time)


class QuestionChange(msgspec.Struct, frozen=True, omit_defaults=True):
    question_id: str
    poll_id: str
    room_id: str
    status: str | None = None
    pinned: int | None = None
    answered: int | None = None


class VoterData(msgspec.Struct, frozen=True, omit_defaults=True):
    voter_id: str
    room_id: str
    created_at: str
    address: str | None = None  # the client's (identity limits count it at every box)


class ReadData(msgspec.Struct, frozen=True, omit_defaults=True):
    """A voter read one notification (`id`), or every one up to `before`."""

    voter_id: str
    id: int | None = None
    before: str = ""


class RoomCreated(Event, tag=ROOM_CREATED, frozen=True):
    data: RoomData


class RoomUpdated(Event, tag=ROOM_UPDATED, frozen=True):
    data: RoomChange


class RoomDeleted(Event, tag=ROOM_DELETED, frozen=True):
    data: RoomRef


class PollCreated(Event, tag=POLL_CREATED, frozen=True):
    data: PollData


class PollUpdated(Event, tag=POLL_UPDATED, frozen=True):
    data: PollChange


class PollDeleted(Event, tag=POLL_DELETED, frozen=True):
    data: PollRef


class PollOpened(Event, tag=POLL_OPENED, frozen=True):
    data: StatusChange


class PollClosed(Event, tag=POLL_CLOSED, frozen=True):
    data: StatusChange


class VoteCast(Event, tag=POLL_VOTE_CAST, frozen=True):
    data: VoteData


class QuestionUpdated(Event, tag=QUESTION_UPDATED, frozen=True):
    data: QuestionChange


class VoterJoined(Event, tag=VOTER_JOINED, frozen=True):
    data: VoterData


class NotificationsRead(Event, tag=NOTIFICATIONS_READ, frozen=True):
    data: ReadData


AnyEvent = (
    RoomCreated
    | RoomUpdated
    | RoomDeleted
    | PollCreated
    | PollUpdated
    | PollDeleted
    | PollOpened
    | PollClosed
    | VoteCast
    | QuestionUpdated
    | VoterJoined
    | NotificationsRead
)
_BY_TYPE: dict[str, type[Event]] = {
    str(t.__struct_config__.tag): t for t in typing.get_args(AnyEvent)
}
_DATA: dict[str, Any] = {
    name: next(f.type for f in msgspec.structs.fields(cls) if f.name == "data")
    for name, cls in _BY_TYPE.items()
}
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyEvent)


def make(
    event_type: str,
    data: Any,
    *,
    source: str,
    actor: str,
    event_id: str | None = None,
    timestamp: str | None = None,
    hlc: str | None = None,
) -> Event:
    """A new event of this type; `data` is its data struct, or a dict of its fields."""
    cls = _BY_TYPE[event_type]
    if isinstance(data, dict):
        data = msgspec.convert(data, _DATA[event_type])
    stamp = hlc or uuid7()
    return cls(
        event_id=event_id or stamp,
        timestamp=timestamp or now_iso(),
        source=source,
        actor=actor,
        hlc=stamp,
        data=data,
    )


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(raw: bytes | str) -> Event:
    """An event as the outbox (or another box) holds it. Rows written before events were
    typed hold the JSON envelope, with its kind under `event_type`: still read."""
    if isinstance(raw, str):
        legacy = json.loads(raw)
        legacy["type"] = legacy.pop("event_type")
        event: Event = msgspec.convert(legacy, AnyEvent)
    else:
        event = _decoder.decode(raw)
    if event.v > SCHEMA:
        raise ValueError(f"event {event.event_id} has schema {event.v}; this box reads {SCHEMA}")
    return event


def as_json(event: Event) -> bytes:
    return msgspec.json.encode(event)
