"""The event envelope shared by the outbox, the hub and (later) the cluster, and UUIDv7 ids."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, TypedDict

ROOM_CREATED = "ROOM.CREATED"
POLL_CREATED = "POLL.CREATED"
POLL_OPENED = "POLL.OPENED"
POLL_VOTE_CAST = "POLL.VOTE_CAST"
POLL_CLOSED = "POLL.CLOSED"

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 v7), monotonic within this process.

    Python 3.14 has uuid.uuid7; until then, 48 bits of milliseconds, a 12-bit counter that
    keeps ids ordered within one millisecond, and 62 random bits.
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, int.from_bytes(os.urandom(1)) & 0x3F
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
            ms = _last_ms
        counter = _counter
    rand = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Envelope(TypedDict):
    event_id: str
    event_type: str
    timestamp: str
    source: str
    actor: str
    data: dict[str, Any]


def envelope(
    event_type: str, data: dict[str, Any], *, source: str, actor: str, event_id: str | None = None
) -> Envelope:
    return {
        "event_id": event_id or uuid7(),
        "event_type": event_type,
        "timestamp": now_iso(),
        "source": source,
        "actor": actor,
        "data": data,
    }
