"""Votes that race each other: the same event many times, one voter twice, a crowd at once."""

from __future__ import annotations

import asyncio
import uuid

from conftest import Api


async def test_same_event_id_sent_many_times_at_once_counts_once(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    voter = await api.join(room["code"])
    event_id = str(uuid.uuid4())
    option = poll["options"][1]["id"]
    answers = await asyncio.gather(
        *(api.vote(voter, poll["id"], [option], event_id=event_id) for _ in range(50))
    )
    assert {status for status, _ in answers} == {202}
    assert {body["event_id"] for _, body in answers} == {event_id}
    assert (await api.settled(voter, event_id))["status"] == "counted"
    results = await api.results(poll["id"])
    assert results["total_votes"] == 1
    assert [o["votes"] for o in results["options"]] == [0, 1, 0]


async def test_two_different_votes_by_one_voter_at_once(api: Api) -> None:
    room = await api.room()
    poll = await api.poll(room["id"])
    for _ in range(5):
        voter = await api.join(room["code"])
        answers = await asyncio.gather(
            *(api.vote(voter, poll["id"], [o["id"]]) for o in poll["options"])
        )
        statuses = sorted(status for status, _ in answers)
        assert statuses == [202, 409, 409]
        assert {b["error"]["code"] for s, b in answers if s == 409} == {"already_voted"}
    results = await api.total_when(poll["id"], 5)
    assert results["total_votes"] == 5
    assert sum(o["votes"] for o in results["options"]) == 5


async def test_a_crowd_voting_at_once_is_counted_exactly(api: Api) -> None:
    room = await api.room()
    polls = [await api.poll(room["id"], ["Left", "Right"]) for _ in range(3)]
    voters = await asyncio.gather(*(api.join(room["code"]) for _ in range(150)))
    expected = {p["id"]: [0, 0] for p in polls}
    calls = []
    for i, voter in enumerate(voters):
        for poll in polls:
            side = (i + len(poll["id"])) % 2
            expected[poll["id"]][side] += 1
            calls.append(api.vote(voter, poll["id"], [poll["options"][side]["id"]]))
    answers = await asyncio.gather(*calls)
    assert {status for status, _ in answers} == {202}
    for poll in polls:
        results = await api.total_when(poll["id"], 150)
        assert results["total_votes"] == 150
        assert [o["votes"] for o in results["options"]] == expected[poll["id"]]
