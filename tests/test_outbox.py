"""The outbox's housekeeping: a box serving alone forgets relayed events after an hour; a box
of a venue keeps them all, as the log its peers catch up from (replication.py)."""

from __future__ import annotations

from pathlib import Path

from opus import events, outbox
from opus.db import Database
from opus.hub import Hub
from opus.metrics import Metrics


async def _two_hours_old_event(db: Database) -> None:
    event = events.make(events.ROOM_DELETED, {"room_id": "r"}, source="a", actor="host")
    with db.write() as conn:
        outbox.add(conn, [event])
        conn.execute(
            "UPDATE outbox SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 hours'),"
            " sent_at = created_at"
        )


async def test_a_box_alone_forgets_old_events_and_a_venue_box_keeps_its_log(
    tmp_path: Path,
) -> None:
    for keep_log, left in ((False, 0), (True, 1)):
        db = Database(tmp_path / f"opus-{keep_log}.db")
        await db.open()
        try:
            await _two_hours_old_event(db)
            relay = outbox.Relay(db, Hub(), Metrics(), keep_log=keep_log)
            relay.prune()
            rows = await outbox.log_page(db, 0, 10)
            assert len(rows) == left, keep_log
        finally:
            await db.close()
