"""The event envelope shared by the outbox, the hub and (later) the cluster, and UUIDv7 ids."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any, TypedDict

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
    """Make every later uuid7() of this process sort after `earlier`, an id made before a
    restart: the wall clock may have gone back since (a laptop's clock set right by NTP)."""
    global _last_ms, _counter
    value = int(earlier.replace("-", ""), 16)
    ms, counter = value >> 80, (value >> 64) & 0xFFF
    with _lock:
        if (ms, counter) > (_last_ms, _counter):
            _last_ms, _counter = ms, counter


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(iso: str | None) -> float | None:
    """Seconds since the epoch of a `now_iso()` time (None stays None)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


class Envelope(TypedDict):
    event_id: str
    event_type: str
    timestamp: str
    source: str
    actor: str
    data: dict[str, Any]


def envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    source: str,
    actor: str,
    event_id: str | None = None,
    timestamp: str | None = None,
) -> Envelope:
    return {
        "event_id": event_id or uuid7(),
        "event_type": event_type,
        "timestamp": timestamp or now_iso(),
        "source": source,
        "actor": actor,
        "data": data,
    }
