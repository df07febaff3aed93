"""Timed quizzes close themselves when their time is up (after the grace that lets answers
sent at the last second count), at every box: screens and phones stop showing a form that no
longer takes answers, and show the right answer and the leaderboard.

In a venue every box's clock closes the quiz, each with the same event id (made from the poll
and the time it opened): a box that hears another's close has made that event already, so the
room gets one close and its attendees one notification, not one per box."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from opus.catalog import Catalog
from opus.errors import Conflict, NotFound
from opus.rooms import Rooms

log = logging.getLogger(__name__)

_TICK_S = 0.5
_NAMESPACE = uuid.UUID("6f1d3c1e-6a55-4c8e-9a53-4f2b0c7d9e21")  # time-up events' ids


async def close_when_due(rooms: Rooms, catalog: Catalog) -> None:
    while True:
        await asyncio.sleep(_TICK_S)
        now = time.time()
        due = [
            (view.id, view.opened_at)
            for view in catalog.polls.values()
            if view.kind == "quiz" and view.status == "open" and view.past_deadline(now)
        ]
        for poll_id, opened_at in due:
            event_id = str(uuid.uuid5(_NAMESPACE, f"{poll_id} {opened_at} time up"))
            try:
                await rooms.set_status(poll_id, "closed", actor="timer", event_id=event_id)
            except (NotFound, Conflict):
                continue  # deleted, or closed meanwhile
            except Exception:
                log.exception("closing quiz %s at its time limit failed; trying again", poll_id)
