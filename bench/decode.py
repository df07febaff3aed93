"""Decode-and-check cost of one vote body, outside the server: the bytes of a POST /votes body
to the typed choice (bodies.decode: msgspec decodes and type-checks the CastVote declaration;
then the kind's rules in kinds.py), per kind, and the same plus the queue message it becomes
(MessagePack). Each figure is a ratio against a bare json.loads of the same bytes, measured in
the same run. Before the bodies were declared (hand decoding: json.loads and isinstance
checks) the same scope cost 8-17 µs, 3-5x json.loads (docs/benchmarks.md).

Usage (from the repository root):

    .venv/bin/python bench/decode.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from opus import bodies
from opus.catalog import PollView
from opus.ingest import _choice
from opus.ledger import Entry

OPTIONS = tuple(str(uuid.uuid4()) for _ in range(4))


def _poll(kind: str) -> PollView:
    options = tuple(str(i) for i in range(1, 6)) if kind == "rating" else OPTIONS
    return PollView(
        id=str(uuid.uuid4()),
        room_id=str(uuid.uuid4()),
        kind=kind,
        status="open",
        options=options,
        option_ids=frozenset(options),
        allow_change=False,
        hide_results=False,
        time_limit_s=None,
        opened_at=None,
    )


BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "single": ("single", {"option_ids": [OPTIONS[1]]}),
    "multiple": ("multiple", {"option_ids": [OPTIONS[2], OPTIONS[0]]}),
    "rating": ("rating", {"value": 4}),
    "word cloud": ("text", {"text": "Great talk, thank you"}),
    "question": ("qa", {"text": "Will the slides be online after the talk?"}),
    "upvote": ("qa", {"upvote": str(uuid.uuid4())}),
}


def per_call_ns(fn: Callable[[], object], seconds: float) -> float:
    """The median of five rounds of nanoseconds per call."""
    rounds = []
    for _ in range(5):
        n, started = 0, time.perf_counter_ns()
        deadline = started + seconds * 1e9 / 5
        while time.perf_counter_ns() < deadline:
            for _ in range(100):
                fn()
            n += 100
        rounds.append((time.perf_counter_ns() - started) / n)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    print("| body | json.loads alone | decode and check | ratio | and its queue message | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (kind, fields) in BODIES.items():
        poll = _poll(kind)
        raw = json.dumps({**fields, "event_id": str(uuid.uuid4())}).encode()

        def decode_and_check(raw: bytes = raw, poll: PollView = poll) -> object:
            return _choice(poll, bodies.decode(raw, bodies.CastVote))

        def to_queue(raw: bytes = raw, poll: PollView = poll) -> bytes:
            body = bodies.decode(raw, bodies.CastVote)
            return Entry(poll.id, "voter", _choice(poll, body)).payload()

        assert decode_and_check() and to_queue()  # the body is valid for its kind
        bare = per_call_ns(lambda raw=raw: json.loads(raw), args.seconds)
        full = per_call_ns(decode_and_check, args.seconds)
        queued = per_call_ns(to_queue, args.seconds)
        print(
            f"| {name} | {bare / 1000:.2f} µs | {full / 1000:.2f} µs | {full / bare:.1f}"
            f" | {queued / 1000:.2f} µs | {queued / bare:.1f} |"
        )


if __name__ == "__main__":
    main()
