"""In-process publish/subscribe for committed events.

The outbox relay publishes; subscribers (live results, notifications, later the venue's other
boxes) react. Each subscriber names the event types it handles and gets its own queue and task:
publishing only hands the event over, so a slow subscriber (one that reads SQLite, or writes a
notification per voter) delays neither the relay nor the other subscribers. Events reach each
subscriber in the order they were published.

Events can arrive twice (a relay that crashed after publishing and before marking them sent), so
the hub drops an event id it has seen recently, and subscribers stay idempotent anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from opus.events import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[object]]


@dataclass(eq=False)
class _Subscription:
    name: str
    handler: Handler
    types: frozenset[str]
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.handler(event)
            except Exception:
                # One broken event must not stop this subscriber, the others or the relay.
                log.exception("%s failed on %s %s", self.name, event.type, event.event_id)
            finally:
                self.queue.task_done()


class Hub:
    # Only the relay publishes, and it never publishes an outbox row twice in one process (a
    # restart starts with an empty memory anyway): a few of its batches are enough. 50,000
    # ids, with every vote an event, held about 9 MB once a box had taken that many votes.
    def __init__(self, remember: int = 5_000) -> None:
        self._subscriptions: list[_Subscription] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def subscribe(self, name: str, handler: Handler, types: Iterable[str]) -> None:
        """Call `handler` with every event of these types, in its own task (call it with the
        event loop running)."""
        sub = _Subscription(name, handler, frozenset(types))
        sub.task = asyncio.get_running_loop().create_task(sub.run(), name=f"opus-hub-{name}")
        self._subscriptions.append(sub)

    def publish(self, event: Event) -> bool:
        """Hand an event to every subscriber of its type; False when it was a duplicate."""
        event_id = event.event_id
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        for sub in self._subscriptions:
            if event.type in sub.types:
                sub.queue.put_nowait(event)
        return True

    def backlog(self) -> int:
        """Events handed over and not yet handled, all subscribers together."""
        return sum(sub.queue.qsize() for sub in self._subscriptions)

    async def close(self, drain_s: float = 5.0) -> None:
        """Let the subscribers finish what they were handed (at most `drain_s`), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                await asyncio.gather(*(sub.queue.join() for sub in self._subscriptions))
        tasks = [sub.task for sub in self._subscriptions if sub.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._subscriptions.clear()
