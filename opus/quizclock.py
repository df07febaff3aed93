"""Timed quizzes close themselves when their time is up (after the grace that lets answers
sent at the last second count), at every box: screens and phones stop showing a form that no
longer takes answers, and show the right answer and the leaderboard."""

from __future__ import annotations

import asyncio
import logging
import time

from opus.catalog import Catalog
from opus.errors import Conflict, NotFound
from opus.rooms import Rooms

log = logging.getLogger(__name__)

_TICK_S = 0.5


async def close_when_due(rooms: Rooms, catalog: Catalog) -> None:
    while True:
        await asyncio.sleep(_TICK_S)
        now = time.time()
        due = [
            view.id
            for view in catalog.polls.values()
            if view.kind == "quiz" and view.status == "open" and view.past_deadline(now)
        ]
        for poll_id in due:
            try:
                await rooms.set_status(poll_id, "closed", actor="timer")
            except (NotFound, Conflict):
                continue  # deleted, or closed meanwhile
            except Exception:
                log.exception("closing quiz %s at its time limit failed; trying again", poll_id)
