"""A venue: three real Opus servers on loopback, each with the NATS server Opus ships, joined by
one venue.toml. A vote cast at any box counts at every box, with the same results and receipts.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import ADMIN, Api, ServerProcess, free_port, until

NAMES = ("a", "b", "c")


class Box(ServerProcess):
    """One box of the venue, in its own process group (so that a test can kill the group)."""

    new_session = True

    def __init__(self, folder: Path, venue: Path, name: str, port: int) -> None:
        super().__init__(folder / "data", OPUS_VENUE=str(venue), OPUS_BOX=name)
        self.name = name
        self.port = port
        self.env["OPUS_PORT"] = str(port)
        self.log = folder / "server.log"

    def signal_group(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def kill_group(self) -> None:
        """kill -9 of the box's whole process group: the server and its NATS server."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def init_venue(folder: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    ports: dict[str, tuple[int, int]] = {}
    taken: set[int] = set()
    for name in NAMES:  # every box's web port, NATS port and the one after: all different
        while True:
            http, nats = free_port(pair=True), free_port(pair=True)  # NATS: its port and the next
            wanted = {http, http + 1, nats, nats + 1}
            if len(wanted) == 4 and not wanted & taken:
                break
        taken |= wanted
        ports[name] = (http, nats)
    boxes = [f"--box={n}=127.0.0.1:{http}:{nats}" for n, (http, nats) in ports.items()]
    done = subprocess.run(
        [sys.executable, "-m", "opus", "venue", "init", "--out", str(folder), *boxes],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Admin token at every box:" in done.stdout
    path = folder / "venue.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    return path, ports


@contextlib.contextmanager
def running_venue(folder: Path, **env: dict[str, str]) -> Iterator[dict[str, Box]]:
    """Three boxes of a new venue, started; `env` adds variables per box name ("all": every
    box). Killed, with their NATS servers, at the end."""
    path, ports = init_venue(folder)
    boxes = {n: Box(folder / n, path, n, http) for n, (http, _) in ports.items()}
    for name, box in boxes.items():
        box.env.update(env.get("all", {}))
        box.env.update(env.get(name, {}))
    with running_boxes(boxes):
        yield boxes


@contextlib.contextmanager
def running_boxes(boxes: dict[str, Box]) -> Iterator[None]:
    """The boxes started and ready; killed, with their NATS servers, at the end."""
    try:
        for box in boxes.values():
            box.spawn()
        for box in boxes.values():
            box.wait_ready()
        yield
    finally:
        for box in boxes.values():
            if box.proc is not None and box.proc.poll() is None:
                box.kill_group()


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[dict[str, Box]]:
    with running_venue(tmp_path) as boxes:
        yield boxes


@pytest.fixture
async def apis(venue: dict[str, Box]) -> AsyncIterator[dict[str, Api]]:
    async with aiohttp.ClientSession() as session:
        yield {n: Api(session, base=box.base) for n, box in venue.items()}


async def _room_everywhere(apis: dict[str, Api], room_id: str) -> None:
    async def known() -> bool:
        for api in apis.values():
            status, _ = await api.call("GET", f"/api/v1/rooms/{room_id}", headers=api.admin)
            if status != 200:
                return False
        return True

    await until(known, what="the room at every box")


async def _poll_status(api: Api, poll_id: str) -> str | None:
    status, body = await api.call("GET", f"/api/v1/polls/{poll_id}", headers=api.admin)
    return body["status"] if status == 200 else None


async def test_a_vote_at_any_box_counts_at_every_box(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    a, b = apis["a"], apis["b"]
    room = await a.room("Main hall")
    await _room_everywhere(apis, room["id"])
    poll = await a.poll(room["id"], ["Mars", "Venus", "Jupiter"], open=False)

    async def draft_everywhere() -> bool:
        return all([await _poll_status(api, poll["id"]) == "draft" for api in apis.values()])

    await until(draft_everywhere, what="the poll at every box")
    status, _ = await b.call("POST", f"/api/v1/polls/{poll['id']}/open", headers=b.admin)
    assert status == 200

    async def open_everywhere() -> bool:
        return all([await _poll_status(api, poll["id"]) == "open" for api in apis.values()])

    await until(open_everywhere, what="opened at b, open everywhere")

    # Attendees join at the box their phone reaches (the room's code is the same everywhere)
    # and vote there; one who joined at a votes at c: a token is valid at every box.
    options = [o["id"] for o in poll["options"]]
    cast: list[tuple[str, dict[str, Any], str]] = []
    for i, name in enumerate(["a", "a", "a", "b", "b", "c", "c", "c", "c"]):
        voter = await apis[name].join(room["code"])
        at = "c" if i == 0 else name
        status, body = await apis[at].vote(voter, poll["id"], [options[i % 3]])
        assert status == 202, body
        cast.append((at, voter, body["event_id"]))
    expected = [3, 3, 3]

    async def same_results() -> list[list[int]] | None:
        seen = []
        for api in apis.values():
            results = await api.results(poll["id"])
            seen.append([o["votes"] for o in results["options"]])
        return seen if all(s == expected for s in seen) else None

    await until(same_results, what="the same results at every box")
    # Every vote's receipt reads the same at every box.
    for _, voter, event_id in cast:
        for api in apis.values():
            receipt = await api.settled(voter, event_id)
            assert receipt["status"] == "counted", (api.base, receipt)

    async def reaches_both() -> dict[str, Any] | None:
        status, seen = await a.call("GET", "/api/v1/venue", headers=a.admin)
        assert status == 200
        return seen if all(p["reachable"] for p in seen["peers"]) else None

    seen = await until(reaches_both, what="box a reaches b and c")
    assert seen["box"] == "a"
    assert {p["box"]: p["reachable"] for p in seen["peers"]} == {"b": True, "c": True}
    status, _ = await a.call("GET", "/api/v1/venue")
    assert status == 401
    # A box's log is for the venue's boxes: not for the admin token, nor anyone else.
    for headers in ({}, a.admin):
        status, body = await a.call("GET", "/api/v1/venue/log", headers=headers)
        assert (status, body["error"]["code"]) == (401, "bad_token")
    status, text = await a.call("GET", "/metrics")
    assert status == 200
    assert 'opus_venue_peer_reachable{peer="b"} 1.0' in text, text[-2000:]
    assert 'opus_venue_peer_behind_events{peer="c"} 0.0' in text
    # opus doctor checks the venue from box a: the NATS server it runs, and each peer.
    doctor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opus", "doctor", env=venue["a"].env, stdout=subprocess.PIPE
    )
    out = (await doctor.communicate())[0].decode()
    status_command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opus", "venue", "status", env=venue["a"].env, stdout=subprocess.PIPE
    )
    told = (await status_command.communicate())[0].decode()
    assert status_command.returncode == 0, told
    assert told.splitlines()[0] == "Box a" and "  b: reachable, 0 of its events" in told, told
    assert out.count("OK    peer ") == 2, out
    assert "OK    nats sync" in out and "OK    nats       nats-server: v2." in out, out
    assert ADMIN  # the same admin token at every box (set by the test's environment)


async def _open_poll(
    apis: dict[str, Api], at: str = "a", **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A room and an open poll made at one box, known (and open) at every box."""
    api = apis[at]
    room = await api.room()
    await _room_everywhere(apis, room["id"])
    poll = await api.poll(room["id"], ["Red", "Green", "Blue"], **extra)

    async def open_everywhere() -> bool:
        return all([await _poll_status(x, poll["id"]) == "open" for x in apis.values()])

    await until(open_everywhere, what="the poll open at every box")
    return room, poll


async def _converged(apis: dict[str, Api], poll_id: str, total: int | None = None) -> list[int]:
    """Wait until every box shows the same counts (and, given, this many votes)."""

    async def same() -> list[int] | None:
        seen = [
            [o["votes"] for o in (await api.results(poll_id))["options"]] for api in apis.values()
        ]
        if any(s != seen[0] for s in seen):
            return None
        if total is not None and sum(seen[0]) != total:
            return None
        return seen[0]

    counts: list[int] = await until(same, timeout=30, what="the same counts at every box")
    return counts


async def _receipts(apis: dict[str, Api], voter: dict[str, Any], event_id: str) -> list[Any]:
    return [
        (r["status"], r.get("reason"))
        for r in [await api.settled(voter, event_id) for api in apis.values()]
    ]


@pytest.mark.parametrize("allow_change", [False, True], ids=["first counts", "latest counts"])
async def test_one_voter_voting_at_two_boxes_counts_once_and_the_same_everywhere(
    apis: dict[str, Api], allow_change: bool
) -> None:
    """The same attendee's phone reaches box a, then box b (or both at once): where a vote may
    not change, the first vote counts at every box; where it may, the latest does. The boxes
    agree on which, and say the same in the other vote's receipt."""
    room, poll = await _open_poll(apis, allow_change=allow_change)
    red, green = poll["options"][0]["id"], poll["options"][1]["id"]
    for _ in range(3):  # a few voters, each voting at a and at b at the same moment
        voter = await apis["a"].join(room["code"])
        (s1, first), (s2, second) = await asyncio.gather(
            apis["a"].vote(voter, poll["id"], [red]), apis["b"].vote(voter, poll["id"], [green])
        )
        accepted = [body["event_id"] for s, body in ((s1, first), (s2, second)) if s == 202]
        assert accepted, (first, second)

        async def agreed(v: dict[str, Any] = voter, ids: list[str] = accepted) -> list[Any] | None:
            """Each vote's receipt, once it is the same at every box and one vote counts."""
            outcomes = []
            for event_id in ids:
                seen = await _settled_everywhere(apis, v, event_id)
                if seen is None:
                    return None
                outcomes.append(seen[0])
            return outcomes if [o[0] for o in outcomes].count("counted") == 1 else None

        outcomes = await until(agreed, 30, "the same receipts everywhere, one vote counted")
        if len(outcomes) == 2:  # the other one says why it does not count
            assert {o[1] for o in outcomes} == {
                None,
                "replaced" if allow_change else "already_voted",
            }
    await _converged(apis, poll["id"], total=3)


async def _settled_everywhere(
    apis: dict[str, Api], voter: dict[str, Any], event_id: str
) -> list[Any] | None:
    seen = []
    for api in apis.values():
        status, body = await api.call("GET", f"/api/v1/votes/{event_id}", headers=voter["headers"])
        if status != 200 or body["status"] == "queued":
            return None
        seen.append((body["status"], body.get("reason")))
    # Settled everywhere; wait for the other vote too before comparing reasons.
    return seen if len(set(seen)) == 1 else None


async def test_a_box_killed_mid_burst_counts_every_acknowledged_vote_everywhere(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """kill -9 of box b's whole process group (the server and its NATS server) while votes
    pour in at b; b starts again on the same data dir. Every vote b answered 202 counts
    exactly once at every box."""
    room, poll = await _open_poll(apis)
    options = [o["id"] for o in poll["options"]]
    voters = [await apis["a"].join(room["code"]) for _ in range(120)]
    acked: list[str] = []
    a_third_in = asyncio.Event()

    async def one(i: int, voter: dict[str, Any]) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            status, body = await apis["b"].vote(voter, poll["id"], [options[i % 3]])
            if status == 202:
                acked.append(body["event_id"])
                if len(acked) >= len(voters) // 3:
                    a_third_in.set()

    burst = [asyncio.create_task(one(i, v)) for i, v in enumerate(voters)]
    await asyncio.wait_for(a_third_in.wait(), 30)
    venue["b"].kill_group()
    await asyncio.gather(*burst)
    assert not _nats_servers_of(venue["b"]), "the box's NATS server outlived it"
    venue["b"].spawn()
    venue["b"].wait_ready()
    counts = await _converged(apis, poll["id"])
    # The same counted votes at every box, each once, the acknowledged ones among them (a vote
    # whose answer the kill cut off may have been kept too).
    exports = await _counted_ids(apis, poll["id"])
    assert exports[0] == exports[1] == exports[2]
    assert set(acked) <= set(exports[0])
    assert len(exports[0]) == len(set(exports[0])) == sum(counts)


async def _counted_ids(apis: dict[str, Api], poll_id: str) -> list[list[str]]:
    """Each box's counted votes in a poll: their event ids, sorted."""
    exports = []
    for api in apis.values():
        status, body = await api.call("GET", f"/api/v1/polls/{poll_id}/export", headers=api.admin)
        assert status == 200
        exports.append(sorted(v["event_id"] for v in body["votes"]))
    return exports


def _nats_servers_of(box: Box) -> list[int]:
    """Pids of NATS servers started for this box's data dir."""
    config = str(box.data_dir / "nats" / "nats.conf")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if any(part.decode(errors="replace") == config for part in cmdline):
                found.append(int(entry.name))
    return found


async def test_a_box_whose_nats_server_dies_catches_up(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """kill -9 of box a's NATS server alone: box a starts it again, keeps answering 202 for
    its votes meanwhile, and the other boxes get them once it is back."""
    room, poll = await _open_poll(apis)
    voters = [await apis["a"].join(room["code"]) for _ in range(10)]
    (pid,) = _nats_servers_of(venue["a"])
    os.kill(pid, signal.SIGKILL)
    for voter in voters:
        status, body = await apis["a"].vote(voter, poll["id"], [poll["options"][0]["id"]])
        assert status == 202, body
    await _converged(apis, poll["id"], total=10)
    assert _nats_servers_of(venue["a"]) not in ([], [pid])


async def test_an_attendee_reads_the_same_inbox_at_every_box(apis: dict[str, Api]) -> None:
    """Joined at a; the host opens a poll at b; the phone asks c. The notification has the same
    id at every box, and marking it read at c marks it read everywhere."""
    room = await apis["a"].room()
    await _room_everywhere(apis, room["id"])
    voter = await apis["a"].join(room["code"])
    poll = await apis["b"].poll(room["id"], ["Yes", "No"], open=False)

    async def inboxes() -> list[Any] | None:
        seen = []
        for api in apis.values():
            status, inbox = await api.call("GET", "/api/v1/notifications", headers=voter["headers"])
            assert status == 200, inbox
            seen.append([(n["id"], n["type"], n["is_read"]) for n in inbox["notifications"]])
        return seen if seen[0] and all(s == seen[0] for s in seen) else None

    status, _ = await apis["b"].call(
        "POST", f"/api/v1/polls/{poll['id']}/open", headers=apis["b"].admin
    )
    assert status == 200

    async def opened_everywhere() -> list[Any] | None:
        seen = await inboxes()
        return seen if seen and len(seen[0]) == 2 else None

    (first, *_) = await until(opened_everywhere, what="the same two notifications everywhere")
    assert [t for _, t, _ in first] == ["poll_opened", "poll_created"]
    opened_id = first[0][0]
    status, _ = await apis["c"].call(
        "POST", f"/api/v1/notifications/{opened_id}/read", headers=voter["headers"]
    )
    assert status == 200

    async def read_everywhere() -> list[Any] | None:
        seen = await inboxes()
        return seen if seen and seen[0][0][2] is True and seen[0][1][2] is False else None

    await until(read_everywhere, what="read at c, read everywhere")
    status, body = await apis["a"].call(
        "POST", "/api/v1/notifications/read-all", headers=voter["headers"]
    )
    assert (status, body["marked_read"]) == (200, 1)

    async def all_read_everywhere() -> list[Any] | None:
        seen = await inboxes()
        return seen if seen and all(r for _, _, r in seen[0]) else None

    await until(all_read_everywhere, what="all read at a, all read everywhere")


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (Debian package faketime; .ci/run installs it)")
    return found[0]


@pytest.fixture
def skewed_venue(tmp_path: Path) -> Iterator[dict[str, Box]]:
    """The venue, with box c's wall clock ten minutes ahead (libfaketime)."""
    skew = {"LD_PRELOAD": _libfaketime(), "FAKETIME": "+600", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    with running_venue(tmp_path, c=skew) as boxes:
        yield boxes


async def test_a_box_whose_clock_is_ten_minutes_ahead_is_flagged_and_still_agrees(
    skewed_venue: dict[str, Box],
) -> None:
    async with aiohttp.ClientSession() as session:
        apis = {n: Api(session, base=box.base) for n, box in skewed_venue.items()}
        room, poll = await _open_poll(apis, at="c", allow_change=True)
        red, green, blue = (o["id"] for o in poll["options"])
        voters = [await apis["a"].join(room["code"]) for _ in range(6)]
        for voter in voters:
            # Each voter votes at a, then changes the vote at c, then at b: the latest by the
            # clock stamps is c's (ten minutes ahead), at every box.
            for at, option in (("a", red), ("c", green), ("b", blue)):
                status, body = await apis[at].vote(voter, poll["id"], [option])
                assert status == 202, body

        async def green_everywhere() -> bool:
            return await _converged(apis, poll["id"], total=6) == [0, 6, 0]

        await until(green_everywhere, 30, "c's votes, stamped latest, count at every box")

        async def flagged() -> bool:
            _, seen = await apis["a"].call("GET", "/api/v1/venue", headers=apis["a"].admin)
            ahead = {p["box"]: p["clock_ahead_s"] for p in seen["peers"]}
            return ahead["c"] > 500 and ahead["b"] == 0

        await until(flagged, what="a flags c's clock, not b's")


async def test_conflicting_changes_at_two_boxes_end_the_same_everywhere(
    apis: dict[str, Api],
) -> None:
    """The host renames the room at a while a colleague renames it at b; a question is pinned
    at a and hidden at b at the same moment: every box ends with the same title, and the same
    question state (the change with the latest clock stamp wins)."""
    room, poll = await _open_poll(apis, kind="qa")  # (a Q&A ignores the options)
    voter = await apis["c"].join(room["code"])
    status, asked = await apis["c"].call(
        "POST",
        f"/api/v1/polls/{poll['id']}/votes",
        json={"text": "Will the slides be online?"},
        headers=voter["headers"],
    )
    assert status == 202, asked
    question = asked["event_id"]

    async def question_everywhere() -> bool:
        for api in apis.values():
            results = await api.results(poll["id"])
            if [q["id"] for q in results["questions"]] != [question]:
                return False
        return True

    await until(question_everywhere, what="the question at every box")
    a, b = apis["a"], apis["b"]
    await asyncio.gather(
        a.call("PATCH", f"/api/v1/rooms/{room['id']}", json={"title": "Hall A"}, headers=a.admin),
        b.call("PATCH", f"/api/v1/rooms/{room['id']}", json={"title": "Hall B"}, headers=b.admin),
        a.call("PATCH", f"/api/v1/questions/{question}", json={"pinned": True}, headers=a.admin),
        b.call(
            "PATCH", f"/api/v1/questions/{question}", json={"status": "hidden"}, headers=b.admin
        ),
    )

    async def same_everywhere() -> list[Any] | None:
        seen = []
        for api in apis.values():
            _, got = await api.call("GET", f"/api/v1/rooms/{room['id']}", headers=api.admin)
            _, page = await api.call(
                "GET", f"/api/v1/polls/{poll['id']}/questions", headers=api.admin
            )
            (q,) = page["questions"]
            seen.append((got["title"], q["status"], q["pinned"]))

        return seen if all(s == seen[0] for s in seen) else None

    seen = await until(same_everywhere, what="the same title and question state everywhere")
    assert seen[0][0] in ("Hall A", "Hall B")


async def test_a_rooms_look_is_the_same_at_every_box(apis: dict[str, Api]) -> None:
    """A room made with its look and language at a has them at every box; its theme changed at
    a while its accent changes at b and its language at c: every change holds everywhere (each
    field its own latest change)."""
    a, b, c = apis["a"], apis["b"], apis["c"]
    body = {"title": "Hall", "theme": "dark", "language": "de"}
    status, room = await a.call("POST", "/api/v1/rooms", json=body, headers=a.admin)
    assert status == 201, room
    await _room_everywhere(apis, room["id"])
    path = f"/api/v1/rooms/{room['id']}"
    await asyncio.gather(
        a.call("PATCH", path, json={"theme": "light"}, headers=a.admin),
        b.call("PATCH", path, json={"accent": "#0f766e"}, headers=b.admin),
        c.call("PATCH", path, json={"language": "ja"}, headers=c.admin),
    )

    async def same_everywhere() -> bool:
        for api in apis.values():
            _, got = await api.call("GET", path, headers=api.admin)
            if (got["theme"], got["accent"], got["language"]) != ("light", "#0f766e", "ja"):
                return False
        return True

    await until(same_everywhere, what="the light theme, teal accent and Japanese at every box")


async def test_screens_say_which_box_is_out_of_reach(venue: dict[str, Box]) -> None:
    """Box b freezes (its process group stopped, as behind a pulled cable): the screens at box
    a are told that b is out of reach, and told again once it is back."""
    async with aiohttp.ClientSession() as session:
        apis = {n: Api(session, base=box.base) for n, box in venue.items()}
        room = await apis["a"].room()
        await _room_everywhere(apis, room["id"])
        async with session.ws_connect(f"{venue['a'].base}/ws?room={room['code']}") as ws:
            snapshot = await ws.receive_json(timeout=10)
            assert snapshot["type"] == "snapshot"
            assert snapshot["venue"]["box"] == "a"

            async def venue_message(unreachable: list[str]) -> dict[str, Any]:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    msg = await ws.receive_json(timeout=20)
                    if msg["type"] == "venue" and msg["unreachable"] == unreachable:
                        return msg  # type: ignore[no-any-return]
                raise AssertionError(f"no venue message saying {unreachable} is out of reach")

            if snapshot["venue"]["unreachable"]:  # a busy machine: a has not reached them yet
                await venue_message([])
            venue["b"].signal_group(signal.SIGSTOP)
            try:
                await venue_message(["b"])
            finally:
                venue["b"].signal_group(signal.SIGCONT)
            await venue_message([])


def test_the_projector_says_when_a_box_is_out_of_reach(venue: dict[str, Box]) -> None:
    """What the hall sees: the projector page of box a, in Chromium, says that box b is out of
    reach while b is frozen, and stops saying it once b is back."""
    from browser import Host, launch
    from playwright.sync_api import expect, sync_playwright

    host = Host(venue["a"].base)
    room = host.room("Main hall")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{venue['a'].base}/screen/{room['code']}")
            expect(page.locator("[data-connection]")).to_have_text("Live")
            note = page.locator("[data-venue]")
            expect(note).to_be_hidden()
            venue["b"].signal_group(signal.SIGSTOP)
            try:
                expect(note).to_contain_text("Box b is out of reach", timeout=20_000)
            finally:
                venue["b"].signal_group(signal.SIGCONT)
            expect(note).to_be_hidden(timeout=20_000)
        finally:
            browser.close()


async def test_a_box_whose_nats_store_is_lost_is_read_again(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """Box a's NATS server dies and its store is wiped before it starts again (a new disk):
    a publishes what its outbox holds again, the other boxes read its new stream from the
    start, and votes at a keep reaching them, each counted once."""
    room, poll = await _open_poll(apis)
    voters = [await apis["a"].join(room["code"]) for _ in range(10)]
    for voter in voters[:5]:
        status, _ = await apis["a"].vote(voter, poll["id"], [poll["options"][0]["id"]])
        assert status == 202
    await _converged(apis, poll["id"], total=5)
    (pid,) = _nats_servers_of(venue["a"])
    os.kill(pid, signal.SIGKILL)
    shutil.rmtree(venue["a"].data_dir / "nats" / "jetstream", ignore_errors=True)
    for voter in voters[5:]:
        status, _ = await apis["a"].vote(voter, poll["id"], [poll["options"][1]["id"]])
        assert status == 202

    async def ten_everywhere() -> bool:
        return await _converged(apis, poll["id"], total=10) == [5, 5, 0]

    await until(ten_everywhere, 30, "the votes after the lost store at every box, once")


async def test_a_voter_learned_late_gets_the_notifications_made_before(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """An attendee joins at box c while c cannot publish (its NATS server frozen); meanwhile
    the host prepares and opens a poll at a. When c's events arrive, a and b learn the voter
    after they notified the room: they notify that voter then, with the same ids as c."""
    room = await apis["a"].room()
    await _room_everywhere(apis, room["id"])
    (nats_c,) = _nats_servers_of(venue["c"])
    os.kill(nats_c, signal.SIGSTOP)
    try:
        voter = await apis["c"].join(room["code"])
        poll = await apis["a"].poll(room["id"], ["Yes", "No"])

        async def opened_at_c() -> bool:
            return await _poll_status(apis["c"], poll["id"]) == "open"

        await until(opened_at_c, what="c learns the poll (it still pulls a's stream)")
    finally:
        os.kill(nats_c, signal.SIGCONT)

    async def same_inbox() -> list[Any] | None:
        seen = []
        for api in apis.values():
            _, inbox = await api.call("GET", "/api/v1/notifications", headers=voter["headers"])
            seen.append(sorted((n["id"], n["type"]) for n in inbox["notifications"]))
        return seen if len(seen[0]) == 2 and all(s == seen[0] for s in seen) else None

    await until(same_inbox, 30, "the voter's two notifications at every box")


def test_venue_mistakes_get_a_clear_sentence(tmp_path: Path) -> None:
    """A technician's typo is told in one line, never a traceback."""
    from click.testing import CliRunner

    from opus.cli import main

    runner = CliRunner()
    cases = [
        (["venue", "init", "--out", str(tmp_path), "--box", "a=10.0.0.1:8080"], "NAME=HOST"),
        (["venue", "init", "--out", str(tmp_path), "--box", "a=10.0.0.1:8080:4222"], "two boxes"),
        (
            ["venue", "init", "--out", str(tmp_path), "--box", "A!=h:1:2", "--box", "b=h:3:4"],
            "lower-case",
        ),
        (
            ["venue", "init", "--out", str(tmp_path), "--box=a=h:8080:4222", "--box=b=h:4223:5000"],
            "both use h:4223",
        ),
        (["serve", "--venue", str(tmp_path / "none.toml"), "--box", "a"], "no such venue file"),
    ]
    for args, said in cases:
        result = runner.invoke(main, args)
        assert result.exit_code != 0, (args, result.output)
        assert said in result.output, (args, result.output)
        assert "Traceback" not in result.output
    made = runner.invoke(
        main,
        ["venue", "init", "--out", str(tmp_path), "--box=a=h:8080:4222", "--box=b=i:8080:4222"],
    )
    assert made.exit_code == 0, made.output
    again = runner.invoke(
        main,
        ["venue", "init", "--out", str(tmp_path), "--box=a=h:8080:4222", "--box=b=i:8080:4222"],
    )
    assert again.exit_code != 0 and "new venue secret" in again.output
    wrong_box = runner.invoke(
        main, ["serve", "--venue", str(tmp_path / "venue.toml"), "--box", "z"]
    )
    assert "has no box 'z'" in wrong_box.output, wrong_box.output


async def test_identity_limits_count_the_joins_made_at_every_box(tmp_path: Path) -> None:
    """One phone (one client address) may become two voters in a room: joining twice at box a
    and once more at box b is refused at b, once b has heard of a's joins."""
    limits = {
        "OPUS_IDENTITIES_PER_ADDRESS": "2",
        "OPUS_TRUSTED_PROXIES": "127.0.0.1",  # the test's requests name their client below
    }
    phone = {"X-Forwarded-For": "10.20.30.40"}
    with running_venue(tmp_path, all=limits) as boxes:
        async with aiohttp.ClientSession() as session:
            apis = {n: Api(session, base=box.base) for n, box in boxes.items()}
            room = await apis["a"].room()
            await _room_everywhere(apis, room["id"])
            for _ in range(2):
                status, body = await apis["a"].call(
                    "POST", "/api/v1/join", json={"code": room["code"]}, headers=phone
                )
                assert status == 201, body

            # A poll made at a after the joins: once b has it, b has the joins (a's stream
            # keeps a's order).
            poll = await apis["a"].poll(room["id"], ["Yes", "No"], open=False)

            async def b_has_the_poll() -> bool:
                return await _poll_status(apis["b"], poll["id"]) == "draft"

            await until(b_has_the_poll, what="b learns the poll made after the joins")
            status, body = await apis["b"].call(
                "POST", "/api/v1/join", json={"code": room["code"]}, headers=phone
            )
            assert status == 429, body
            assert body["error"]["code"] == "too_many_identities"


async def test_a_draft_edited_at_another_box_is_the_same_everywhere(apis: dict[str, Api]) -> None:
    """A poll prepared at a, reworded and given other options at b, opened at c: every box
    shows the edited poll, with the same option ids, and counts a vote on it."""
    room = await apis["a"].room()
    await _room_everywhere(apis, room["id"])
    poll = await apis["a"].poll(room["id"], ["One", "Two"], open=False)

    async def known_everywhere() -> bool:
        return all([await _poll_status(api, poll["id"]) == "draft" for api in apis.values()])

    await until(known_everywhere, what="the draft at every box")
    status, edited = await apis["b"].call(
        "PATCH",
        f"/api/v1/polls/{poll['id']}",
        json={"question": "Which planet?", "options": ["Mars", "Venus", "Earth"]},
        headers=apis["b"].admin,
    )
    assert status == 200, edited

    async def edited_everywhere() -> bool:
        for api in apis.values():
            _, seen = await api.call("GET", f"/api/v1/polls/{poll['id']}", headers=api.admin)
            if (seen["question"], seen["options"]) != (edited["question"], edited["options"]):
                return False
        return True

    await until(edited_everywhere, what="the edit at every box")
    status, _ = await apis["c"].call(
        "POST", f"/api/v1/polls/{poll['id']}/open", headers=apis["c"].admin
    )
    assert status == 200

    async def open_everywhere() -> bool:
        return all([await _poll_status(api, poll["id"]) == "open" for api in apis.values()])

    await until(open_everywhere, what="open everywhere")
    voter = await apis["a"].join(room["code"])
    status, _ = await apis["a"].vote(voter, poll["id"], [edited["options"][2]["id"]])
    assert status == 202
    assert await _converged(apis, poll["id"], total=1) == [0, 0, 1]


async def test_a_box_behind_a_trimmed_stream_catches_up_from_that_boxs_log(
    tmp_path: Path, venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """Boxes b and c are off while a takes votes, and a's stream is trimmed meanwhile (its
    older messages purged, as a size or age limit would). c comes back first: the stream no
    longer has what c missed, and no other box has it either, so c reads it from a's log over
    HTTP; then b comes back. Every vote a acknowledged counts once at every box."""
    import nats

    from opus.venue import load

    room, poll = await _open_poll(apis)
    options = [o["id"] for o in poll["options"]]
    voters = [await apis["a"].join(room["code"]) for _ in range(30)]
    acked = []
    for voter in voters[:5]:
        status, body = await apis["a"].vote(voter, poll["id"], [options[0]])
        assert status == 202
        acked.append(body["event_id"])
    await _converged(apis, poll["id"], total=5)
    venue["b"].kill_group()
    venue["c"].kill_group()
    for voter in voters[5:25]:
        status, body = await apis["a"].vote(voter, poll["id"], [options[1]])
        assert status == 202
        acked.append(body["event_id"])

    async def published() -> bool:
        _, status = await apis["a"].call("GET", "/api/v1/venue", headers=apis["a"].admin)
        return status["box"] == "a" and (await apis["a"].results(poll["id"]))["total_votes"] == 25

    await until(published, what="a counts the 20 votes")
    config = load(tmp_path / "venue.toml")
    nc = await nats.connect(
        config.boxes["a"].nats_url(), user=config.NATS_USER, password=config.nats_password
    )
    try:
        js = nc.jetstream()

        async def all_in_stream() -> bool:
            info = await js.stream_info("opus-a")
            return info.state.messages >= 25

        await until(all_in_stream, what="a's votes in its stream")
        await js.purge_stream("opus-a", keep=1)
        info = await js.stream_info("opus-a")
        assert info.state.messages == 1 and info.state.first_seq > 25
    finally:
        await nc.close()
    venue["c"].spawn()
    venue["c"].wait_ready()
    for voter in voters[25:]:
        status, body = await apis["a"].vote(voter, poll["id"], [options[2]])
        assert status == 202
        acked.append(body["event_id"])
    live = {name: apis[name] for name in ("a", "c")}
    assert await _converged(live, poll["id"], total=30) == [5, 20, 5]
    assert "caught up from a's log" in venue["c"].log.read_text()
    venue["b"].spawn()
    venue["b"].wait_ready()
    assert await _converged(apis, poll["id"], total=30) == [5, 20, 5]
    exports = await _counted_ids(apis, poll["id"])
    assert exports[0] == exports[1] == exports[2] == sorted(acked)


async def test_a_box_whose_disk_is_lost_learns_everything_back(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """Box c's disk is lost (a new card, the same venue.toml): it starts empty and learns the
    venue back from the others, the votes it took itself before included."""
    room, poll = await _open_poll(apis)
    options = [o["id"] for o in poll["options"]]
    taken = []
    for at in ("a", "c"):
        for _ in range(5):
            voter = await apis[at].join(room["code"])
            status, body = await apis[at].vote(voter, poll["id"], [options[0 if at == "a" else 1]])
            assert status == 202
            taken.append((voter, body["event_id"]))
    await _converged(apis, poll["id"], total=10)
    venue["c"].kill_group()
    shutil.rmtree(venue["c"].data_dir)
    venue["c"].spawn()
    venue["c"].wait_ready()

    async def open_at_c() -> bool:
        return await _poll_status(apis["c"], poll["id"]) == "open"

    await until(open_at_c, what="the new c learns the poll")
    assert await _converged(apis, poll["id"], total=10) == [5, 5, 0]
    exports = await _counted_ids(apis, poll["id"])
    assert exports[0] == exports[1] == exports[2] == sorted(e for _, e in taken)
    for voter, event_id in taken:
        assert (await apis["c"].settled(voter, event_id))["status"] == "counted"


@pytest.fixture
def venue_with_own_nats(tmp_path: Path) -> Iterator[dict[str, Box]]:
    """Box c publishes to a NATS server run by hand from `opus venue nats-config` (and
    --nats-url) instead of one it starts."""
    from opus import natsbox

    path, ports = init_venue(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "opus", "venue", "nats-config", "--venue", str(path), "--box", "c",
         "--store", str(tmp_path / "own-nats")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = tmp_path / "nats.conf"
    config.write_text(done.stdout)
    with (tmp_path / "nats.log").open("wb") as out:
        server = subprocess.Popen(
            [str(natsbox.binary()), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    boxes = {n: Box(tmp_path / n, path, n, http) for n, (http, _) in ports.items()}
    boxes["c"].env["OPUS_NATS_URL"] = f"nats://127.0.0.1:{ports['c'][1]}"
    try:
        with running_boxes(boxes):
            yield boxes
    finally:
        server.kill()
        server.wait(10)


async def test_a_box_can_use_a_nats_server_the_technician_runs(
    venue_with_own_nats: dict[str, Box],
) -> None:
    """Box c's votes count at every box, and theirs at c, through the server it did not
    start."""
    boxes = venue_with_own_nats
    assert _nats_servers_of(boxes["c"]) == []
    async with aiohttp.ClientSession() as session:
        apis = {n: Api(session, base=box.base) for n, box in boxes.items()}
        room, poll = await _open_poll(apis, at="c")
        for at in ("a", "c"):
            voter = await apis[at].join(room["code"])
            status, _ = await apis[at].vote(voter, poll["id"], [poll["options"][0]["id"]])
            assert status == 202
        assert await _converged(apis, poll["id"], total=2) == [2, 0, 0]


async def _receipt(api: Api, voter: dict[str, Any], event_id: str) -> tuple[str, str | None] | None:
    """A vote's receipt at a box, None while that box has not heard of the vote."""
    status, body = await api.call("GET", f"/api/v1/votes/{event_id}", headers=voter["headers"])
    return (body["status"], body.get("reason")) if status == 200 else None


async def test_votes_refused_for_a_close_count_once_the_poll_is_reopened(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """The host closes a poll at box a while a's NATS server is frozen, so box c has not heard
    of it and takes three votes stamped after the close: once the close arrives they count at
    no box. The host reopens the poll at a: the close is void, and the three votes count at
    every box, their receipts alike."""
    room, poll = await _open_poll(apis)
    voters = [await apis["c"].join(room["code"]) for _ in range(3)]
    (nats_a,) = _nats_servers_of(venue["a"])
    os.kill(nats_a, signal.SIGSTOP)
    try:
        status, _ = await apis["a"].call(
            "POST", f"/api/v1/polls/{poll['id']}/close", headers=apis["a"].admin
        )
        assert status == 200
        cast = []
        for voter in voters:
            status, body = await apis["c"].vote(voter, poll["id"], [poll["options"][0]["id"]])
            assert status == 202, body
            cast.append((voter, body["event_id"]))
    finally:
        os.kill(nats_a, signal.SIGCONT)

    async def closed_without_them() -> bool:
        for api in apis.values():
            if await _poll_status(api, poll["id"]) != "closed":
                return False
            for voter, event_id in cast:
                if await _receipt(api, voter, event_id) != ("rejected", "poll_closed"):
                    return False
        return True

    await until(closed_without_them, 30, "the late votes refused at every box")
    assert await _converged(apis, poll["id"], total=0) == [0, 0, 0]
    status, body = await apis["a"].call(
        "POST", f"/api/v1/polls/{poll['id']}/reopen", headers=apis["a"].admin
    )
    assert status == 200 and body["status"] == "open", body

    async def counted_everywhere() -> bool:
        for api in apis.values():
            if await _poll_status(api, poll["id"]) != "open":
                return False
            for voter, event_id in cast:
                if await _receipt(api, voter, event_id) != ("counted", None):
                    return False
        return True

    await until(counted_everywhere, 30, "the votes counted at every box after the reopening")
    assert await _converged(apis, poll["id"], total=3) == [3, 0, 0]


async def test_a_timed_quiz_closes_once_at_every_box(
    venue: dict[str, Box], apis: dict[str, Api]
) -> None:
    """Every box's clock closes a timed quiz when its time is up, here each while cut off from
    the others (their NATS servers frozen): the closes are one event, so the attendee who
    answered is told once, wherever the phone reads its inbox."""
    room, quiz = await _open_poll(apis, kind="quiz", correct=[0], time_limit_s=5)
    voter = await apis["b"].join(room["code"])
    status, body = await apis["b"].vote(voter, quiz["id"], [quiz["options"][0]["id"]])
    assert status == 202, body
    await _converged(apis, quiz["id"], total=1)
    servers = [pid for box in venue.values() for pid in _nats_servers_of(box)]
    for pid in servers:
        os.kill(pid, signal.SIGSTOP)
    try:

        async def closed_everywhere() -> bool:
            statuses = [await _poll_status(api, quiz["id"]) for api in apis.values()]
            return statuses == ["closed"] * 3

        await until(closed_everywhere, 30, "each box's clock closes the quiz on its own")
    finally:
        for pid in servers:
            os.kill(pid, signal.SIGCONT)

    async def told_once_everywhere() -> list[Any] | None:
        seen = []
        for api in apis.values():
            _, inbox = await api.call("GET", "/api/v1/notifications", headers=voter["headers"])
            seen.append(
                sorted(n["id"] for n in inbox["notifications"] if n["type"] == "poll_closed")
            )
        return seen if all(s == seen[0] for s in seen) and len(seen[0]) == 1 else None

    await asyncio.sleep(3)  # every box's close reaches the others
    await until(told_once_everywhere, 30, "one and the same closing notification at every box")
