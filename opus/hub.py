"""In-process publish/subscribe for committed events.

The outbox relay publishes; subscribers (WebSockets, notifications, the cluster) react. Events
can arrive twice (a relay that crashed after publishing and before marking them sent), so the
hub drops an event id it has seen recently, and subscribers stay idempotent anyway.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from opus.events import Envelope

log = logging.getLogger(__name__)

Subscriber = Callable[[Envelope], Awaitable[None]]


class Hub:
    def __init__(self, remember: int = 50_000) -> None:
        self._subscribers: list[Subscriber] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def publish(self, event: Envelope) -> bool:
        """Deliver an event to every subscriber; False when it was a duplicate."""
        event_id = event["event_id"]
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        for subscriber in list(self._subscribers):
            try:
                await subscriber(event)
            except Exception:
                # One broken subscriber must not stop the others or the relay.
                log.exception("subscriber failed on %s %s", event["event_type"], event_id)
        return True
