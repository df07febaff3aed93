"""Every Prometheus metric, defined once, on a registry of the app's own."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.votes_accepted = Counter(
            "opus_votes_accepted", "Votes answered 202 (durable in the queue).", registry=r
        )
        self.socket_votes_accepted = Counter(
            "opus_socket_votes_accepted",
            "Of the votes accepted, those that came over an attendee's socket.",
            registry=r,
        )
        self.votes_rejected = Counter(
            "opus_votes_rejected", "Votes refused, by reason.", ["reason"], registry=r
        )
        self.votes_counted = Counter(
            "opus_votes_counted", "Votes applied to the database by workers.", registry=r
        )
        self.votes_worker_rejected = Counter(
            "opus_votes_worker_rejected",
            "Votes the workers settled as rejected, by reason.",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "opus_queue_depth", "Votes accepted and not yet applied by a worker.", registry=r
        )
        self.queue_failed = Gauge(
            "opus_queue_failed", "Queue messages in the failed (dead-letter) state.", registry=r
        )
        self.group_commit_size = Histogram(
            "opus_group_commit_size", "Votes per durable queue commit.", buckets=_SIZES, registry=r
        )
        self.group_commit_seconds = Histogram(
            "opus_group_commit_seconds",
            "Time of one durable queue commit.",
            buckets=_FAST,
            registry=r,
        )
        self.worker_batch_size = Histogram(
            "opus_worker_batch_size", "Votes per worker batch.", buckets=_SIZES, registry=r
        )
        self.worker_apply_seconds = Histogram(
            "opus_worker_apply_seconds",
            "Time to apply one batch to SQLite.",
            buckets=_FAST,
            registry=r,
        )
        self.worker_retries = Counter(
            "opus_worker_retries", "Queue messages returned for another try.", registry=r
        )
        self.accept_to_counted = Histogram(
            "opus_accept_to_counted_seconds",
            "From a vote's durable commit to its count in the database.",
            buckets=_LATENCY,
            registry=r,
        )
        self.http_latency = Histogram(
            "opus_http_request_seconds",
            "HTTP request latency by route.",
            ["method", "route", "status"],
            buckets=_FAST,
            registry=r,
        )
        # (method, route, status) -> its series: prometheus_client's labels() takes a lock
        # and checks its arguments on every call, a few microseconds of every request.
        self._http_series: dict[tuple[str, str, int], Any] = {}
        self.loop_lag = Histogram(
            "opus_event_loop_lag_seconds",
            "How late a 50 ms timer fires: how long the event loop was held by one piece of work.",
            buckets=_FAST,
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "opus_event_loop_lag_max_seconds",
            "The latest the 50 ms timer has fired since the server started: the longest the event"
            " loop was held by one piece of work (at least that long).",
            registry=r,
        )
        self.recent_latency = LatencyWindow()
        self.outbox_published = Counter(
            "opus_outbox_published", "Events relayed from the outbox to the hub.", registry=r
        )
        # A venue of several boxes: one series per peer (replication.py sets them).
        self.venue_peer_reachable = Gauge(
            "opus_venue_peer_reachable",
            "1 while this box reaches the peer's NATS server, else 0.",
            ["peer"],
            registry=r,
        )
        self.venue_peer_behind = Gauge(
            "opus_venue_peer_behind_events",
            "The peer's events this box knows of and has not applied.",
            ["peer"],
            registry=r,
        )
        self.venue_peer_last_contact = Gauge(
            "opus_venue_peer_last_contact_timestamp_seconds",
            "When this box last heard from the peer (Unix time; 0: never).",
            ["peer"],
            registry=r,
        )
        self.venue_peer_replication = Gauge(
            "opus_venue_peer_replication_seconds",
            "How old the newest event from the peer was when this box applied it.",
            ["peer"],
            registry=r,
        )
        self.venue_peer_clock_ahead = Gauge(
            "opus_venue_peer_clock_ahead_seconds",
            "How far ahead of this box's clock the peer stamps its events (0: within 2 s).",
            ["peer"],
            registry=r,
        )
        self.venue_unpublished = Gauge(
            "opus_venue_unpublished_events",
            "Events of this box not yet in its own NATS stream.",
            registry=r,
        )

    def watch_depth(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def observe_request(self, method: str, route: str, status: int, started: float) -> None:
        """One request's time (`started`: its perf_counter at the start), by route."""
        key = (method, route, status)
        series = self._http_series.get(key)
        if series is None:
            series = self._http_series[key] = self.http_latency.labels(method, route, str(status))
        series.observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LatencyWindow:
    """Recent accept-to-counted latencies, for the host's live p99 (Prometheus keeps the
    all-time histogram)."""

    def __init__(self, span_s: float = 60.0, keep: int = 5000) -> None:
        self._span = span_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=keep)

    def add(self, seconds: float) -> None:
        self._samples.append((time.monotonic(), seconds))

    def p99(self) -> float:
        cutoff = time.monotonic() - self._span
        recent = sorted(s for t, s in self._samples if t >= cutoff)
        if not recent:
            return 0.0
        return recent[min(len(recent) - 1, int(len(recent) * 0.99))]
