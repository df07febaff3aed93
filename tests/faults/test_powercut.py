"""Power cuts, on a disk that forgets every write not fsync'd (powercut.py): whatever Opus
acknowledged before the power went is there after it, exactly once.

Each cut comes at a random moment while votes of every kind arrive (changed votes, Q&A
questions and upvotes among them) and the host creates rooms and polls, opens and closes them,
moderates, and attendees join and read their notifications. Then the server is killed, the
disk unmounted and mounted again with only what was durable, and the server started on it.
Every acknowledgement is then checked: each vote answered 202 is counted (or replaced by the
same voter's later vote), once; each room and poll answered 201 is there, in at least the state
acknowledged; each join's token still votes; each moderation and each notification marked read
holds. A vote that never got its answer may be counted or not, but never twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import Api, ServerProcess
from faults.conftest import Figures, Sizes
from faults.harness import session
from faults.powercut import PowerCutDisk, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

_KINDS = ("single", "change", "multiple", "rating", "text", "qa", "quiz")
_STATUS_ORDER = {"draft": 0, "open": 1, "closed": 2}


def _seed() -> int:
    return int(os.environ.get("OPUS_FAULTS_SEED") or random.randrange(1 << 32))


@dataclass
class Vote:
    voter: dict[str, Any]
    poll_id: str
    body: dict[str, Any]
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    acked: bool = False
    answered: bool = False


@dataclass
class Book:
    """Everything sent, and what of it was acknowledged."""

    votes: list[Vote] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)  # acknowledged room ids
    polls: dict[str, str] = field(default_factory=dict)  # poll id -> acknowledged status
    voters: list[dict[str, Any]] = field(default_factory=list)  # acknowledged joins
    moderated: dict[str, bool] = field(default_factory=dict)  # question id -> pinned
    # question id -> pinned values sent after its last acknowledged one, never answered (the
    # power went under them): the server may have kept one of them
    unanswered_pins: dict[str, set[bool]] = field(default_factory=dict)
    read: list[tuple[dict[str, Any], set[int]]] = field(default_factory=list)  # read by whom
    acks: Counter[str] = field(default_factory=Counter)


class Venue:
    """A room with a poll of every kind on a server whose disk can lose power."""

    def __init__(self, server: ServerProcess, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.book = Book()
        self.room: dict[str, Any] = {}
        self.polls: dict[str, dict[str, Any]] = {}  # kind -> poll
        self.questions: list[str] = []  # acknowledged question ids (the ask's event id)

    def api(self, http: aiohttp.ClientSession) -> Api:
        return Api(http, self.server.base)

    async def setup(self, voters: int) -> None:
        async with session() as http:
            api = self.api(http)
            self.room = await api.room("Power cuts")
            self.book.rooms.append(self.room["id"])
            for kind in _KINDS:
                fields: dict[str, Any] = {"kind": kind, "options": ["A", "B", "C"]}
                if kind == "change":
                    fields = {"kind": "single", "options": ["A", "B", "C"], "allow_change": True}
                elif kind == "rating":
                    fields = {"kind": "rating", "scale": 5}
                elif kind in ("text", "qa"):
                    fields = {"kind": kind}
                elif kind == "quiz":
                    fields["correct"] = [0]
                self.polls[kind] = await api.poll(self.room["id"], **fields)
                self.book.polls[self.polls[kind]["id"]] = "open"
            for _ in range(voters):
                self.book.voters.append(await api.join(self.room["code"]))

    def ballot(self) -> Vote:
        kind = self.rng.choice(_KINDS)
        poll = self.polls[kind]
        voter = self.rng.choice(self.book.voters)
        options = [o["id"] for o in poll["options"]]
        body: dict[str, Any]
        if kind in ("single", "change", "quiz"):
            body = {"option_ids": [self.rng.choice(options)]}
        elif kind == "multiple":
            body = {"option_ids": self.rng.sample(options, 2)}
        elif kind == "rating":
            body = {"value": self.rng.randint(1, 5)}
        elif kind == "text":
            body = {"text": self.rng.choice(["power cut", "lights out", "still here"])}
        elif self.questions and self.rng.random() < 0.5:
            body = {"upvote": self.rng.choice(self.questions)}
        else:
            body = {"text": f"Question {uuid.uuid4().hex[:8]}?"}
        return Vote(voter, poll["id"], body)

    async def send(self, http: aiohttp.ClientSession, vote: Vote) -> None:
        self.book.votes.append(vote)
        try:
            async with http.post(
                f"{self.server.base}/api/v1/polls/{vote.poll_id}/votes",
                json={**vote.body, "event_id": vote.event_id},
                headers=vote.voter["headers"],
            ) as answer:
                status = answer.status
                body = await answer.json()
        except (TimeoutError, aiohttp.ClientError):
            return  # no answer: the power went under it
        vote.answered = True
        if status == 202:
            vote.acked = True
            self.book.acks["vote"] += 1
            if vote.poll_id == self.polls["qa"]["id"] and "text" in vote.body:
                self.questions.append(vote.event_id)
        else:  # refused or a second vote: never acknowledged, never counted
            # 404: an upvote for a question still in the queue (or lost with the power);
            # 429: a voter asking more than a few questions a minute
            assert status in (404, 409, 429, 503), (status, body)

    async def host(self, http: aiohttp.ClientSession) -> None:
        """One of the host's or an attendee's acknowledged actions, at random."""
        api = self.api(http)
        action = self.rng.choice(["room", "poll", "join", "moderate", "read"])
        if action == "room":
            status, body = await api.call(
                "POST", "/api/v1/rooms", json={"title": "More"}, headers=api.admin
            )
            if status == 201:
                self.book.rooms.append(body["id"])
        elif action == "poll":
            status, body = await api.call(
                "POST",
                f"/api/v1/rooms/{self.room['id']}/polls",
                json={"question": "Now?", "kind": "single", "options": ["Yes", "No"]},
                headers=api.admin,
            )
            if status != 201:
                return
            self.book.polls[body["id"]] = "draft"
            for step in ("open", "close"):
                status, _ = await api.call(
                    "POST", f"/api/v1/polls/{body['id']}/{step}", headers=api.admin
                )
                if status != 200:
                    return
                self.book.polls[body["id"]] = {"open": "open", "close": "closed"}[step]
                self.book.acks[step] += 1
        elif action == "join":
            api.forget_cookies()
            status, body = await api.call("POST", "/api/v1/join", json={"code": self.room["code"]})
            if status == 201:
                body["headers"] = {"Authorization": f"Bearer {body['voter_token']}"}
                self.book.voters.append(body)
        elif action == "moderate" and self.questions:
            question = self.rng.choice(self.questions)
            pinned = self.rng.random() < 0.5
            self.book.unanswered_pins.setdefault(question, set()).add(pinned)
            status, _ = await api.call(
                "PATCH", f"/api/v1/questions/{question}", json={"pinned": pinned}, headers=api.admin
            )
            if status == 200:
                self.book.moderated[question] = pinned
                self.book.unanswered_pins[question].clear()
        elif action == "read":
            voter = self.rng.choice(self.book.voters)
            status, _ = await api.call(
                "POST", "/api/v1/notifications/read-all", headers=voter["headers"]
            )
            if status == 200:
                # Everything in the inbox was marked read when read-all was answered.
                inbox_status, inbox = await api.call(
                    "GET", "/api/v1/notifications", headers=voter["headers"]
                )
                if inbox_status == 200:
                    self.book.read.append(
                        (voter, {n["id"] for n in inbox["notifications"] if n["is_read"]})
                    )
        else:
            return
        if status in (200, 201):
            self.book.acks[action] += 1

    async def load(self, stop: asyncio.Event, concurrency: int) -> None:
        """Votes from `concurrency` phones and one host, until `stop` is set."""

        async def phone(http: aiohttp.ClientSession) -> None:
            while not stop.is_set():
                vote = self.ballot()
                await self.send(http, vote)
                if not vote.answered:  # the power went: this phone waits for the server
                    await stop.wait()

        async def host(http: aiohttp.ClientSession) -> None:
            while not stop.is_set():
                try:
                    await self.host(http)
                except (TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(0.01)

        async with session(concurrency + 1) as http:
            await asyncio.gather(host(http), *(phone(http) for _ in range(concurrency)))

    async def check(self) -> dict[str, int]:
        """Every acknowledgement against the restarted server. Returns lost and twice counts
        (asserted by the caller once the figures are printed)."""
        found: Counter[str] = Counter()
        async with session() as http:
            api = self.api(http)
            sem = asyncio.Semaphore(32)

            async def receipt(vote: Vote) -> str:
                async with sem:
                    deadline = time.monotonic() + 60
                    while True:
                        async with http.get(
                            f"{self.server.base}/api/v1/votes/{vote.event_id}",
                            headers=vote.voter["headers"],
                        ) as r:
                            body = await r.json()
                        if r.status == 404:
                            return "unknown"
                        if r.status == 401:  # the secret that signed the token was lost
                            return "token refused"
                        assert r.status == 200, body
                        if body["status"] != "queued" or time.monotonic() > deadline:
                            if body.get("reason") == "replaced":  # by the voter's later vote
                                return "replaced"
                            return str(body["status"])
                        await asyncio.sleep(0.1)

            statuses = await asyncio.gather(*(receipt(v) for v in self.book.votes))
            by_pair: dict[tuple[str, str], list[str]] = {}
            for vote, status in zip(self.book.votes, statuses, strict=True):
                if vote.acked and status not in ("counted", "replaced"):
                    found["lost votes"] += 1
                if status == "replaced" and vote.poll_id != self.polls["change"]["id"]:
                    found["replaced where votes cannot change"] += 1
                if status == "counted":
                    key = (vote.poll_id, vote.voter["voter_id"])
                    if vote.poll_id != self.polls["qa"]["id"]:  # many questions per voter
                        by_pair.setdefault(key, []).append(vote.event_id)
            found["counted twice"] = sum(len(ids) - 1 for ids in by_pair.values())
            # The counts agree with the receipts: one counted vote per voter and poll.
            for kind in ("single", "change", "multiple", "rating", "quiz"):
                pid = self.polls[kind]["id"]
                status, results = await api.call(
                    "GET", f"/api/v1/polls/{pid}/results", headers=api.admin
                )
                voters = sum(1 for (p, _) in by_pair if p == pid)
                if status != 200 or results["total_votes"] != voters:
                    found["results disagree"] += 1

            for room_id in self.book.rooms:
                status, _ = await api.call("GET", f"/api/v1/rooms/{room_id}", headers=api.admin)
                found["lost rooms"] += status != 200
            for poll_id, acked_status in self.book.polls.items():
                status, body = await api.call("GET", f"/api/v1/polls/{poll_id}", headers=api.admin)
                if status != 200 or _STATUS_ORDER[body["status"]] < _STATUS_ORDER[acked_status]:
                    found["lost polls or states"] += 1
            for voter in self.book.voters:
                status, body = await api.call(
                    "GET", "/api/v1/notifications", headers=voter["headers"]
                )
                found["lost tokens"] += status != 200
            pins: dict[str, bool] = {}
            while True:  # every page of the host's list
                status, page = await api.call(
                    "GET",
                    f"/api/v1/polls/{self.polls['qa']['id']}/questions?offset={len(pins)}",
                    headers=api.admin,
                )
                assert status == 200, page
                pins.update((q["id"], q["pinned"]) for q in page["questions"])
                if not page["questions"]:
                    break
            for question, pinned in self.book.moderated.items():
                allowed = {pinned} | self.book.unanswered_pins.get(question, set())
                found["lost moderation"] += pins.get(question) not in allowed
            for voter, read in self.book.read:
                status, inbox = await api.call(
                    "GET", "/api/v1/notifications", headers=voter["headers"]
                )
                # The inbox lists the newest 100: what it lists of those read must still be.
                unread_again = [
                    n for n in inbox["notifications"] if n["id"] in read and not n["is_read"]
                ]
                found["lost reads"] += status != 200 or bool(unread_again)
        return dict(found)


async def _start(server: ServerProcess) -> None:
    await asyncio.to_thread(server.start, 60.0)


def _power_cut(disk: PowerCutDisk, server: ServerProcess) -> None:
    """The power goes: the disk forgets and stops, the server dies with it."""
    disk.cut()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(30)
    disk.unmount()
    disk.mount()


async def test_power_cuts_under_load_lose_nothing_acknowledged(
    tmp_path: Path, sizes: Sizes, figures: Figures
) -> None:
    seed = _seed()
    rng = random.Random(seed)
    disk = PowerCutDisk(tmp_path)
    disk.mount()
    server = ServerProcess(disk.path / "data")
    server.log = tmp_path / "server.log"
    totals: Counter[str] = Counter()
    try:
        await _start(server)
        venue = Venue(server, rng)
        await venue.setup(voters=40)
        # Each check reads every receipt so far: after every cut in a short run, after every
        # few in a long one (and always after the last), so that 50 cuts stay minutes long.
        check_every = max(1, sizes.power_cuts // 10)
        for cut in range(1, sizes.power_cuts + 1):
            stop = asyncio.Event()
            load = asyncio.create_task(venue.load(stop, sizes.concurrency))
            await asyncio.sleep(rng.uniform(0.3, 1.5))  # a random moment under load
            await asyncio.to_thread(_power_cut, disk, server)
            stop.set()
            await load
            await _start(server)
            if cut % check_every and cut != sizes.power_cuts:
                continue
            found = await venue.check()
            for key, value in found.items():
                totals[key] = max(totals[key], value)  # each check covers every cut so far
        acks = sum(venue.book.acks.values())
        unanswered = sum(1 for v in venue.book.votes if not v.answered)
        figures.add(
            f"{disk.cuts} power cuts under load, seed {seed}",
            cuts=disk.cuts,
            acknowledgements=acks,
            votes_acked=venue.book.acks["vote"],
            unanswered=unanswered,
            lost=sum(v for k, v in totals.items() if k.startswith("lost")),
            counted_twice=totals["counted twice"],
            **{k.replace(" ", "_"): v for k, v in venue.book.acks.items()},
        )
        assert not {k: v for k, v in totals.items() if v}, totals
        assert venue.book.acks["vote"] > 0 and disk.cuts == sizes.power_cuts
    finally:
        server.stop()
        disk.unmount()


async def test_a_cut_in_the_first_seconds_leaves_a_server_that_starts(
    tmp_path: Path, sizes: Sizes, figures: Figures
) -> None:
    """The secret, the admin token and the node id are written whole, or not at all: after a
    cut at any moment of a first start the next start works, and an empty token opens
    nothing."""
    rng = random.Random(_seed())
    disk = PowerCutDisk(tmp_path)
    disk.mount()
    outcomes: Counter[str] = Counter()
    try:
        for n in range(sizes.first_start_cuts):
            # The admin token is the server's own (none configured), kept in the data dir.
            server = ServerProcess(disk.path / f"data{n}", OPUS_ADMIN_TOKEN="")
            server.log = tmp_path / f"server{n}.log"
            server.spawn()
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            kept = {
                name: (server.data_dir / name).is_file()
                for name in ("secret", "admin_token", "node_id")
            }
            await asyncio.to_thread(_power_cut, disk, server)
            outcomes["files written before the cut"] += sum(kept.values())
            await _start(server)
            for name, least in (("secret", 64), ("admin_token", 16), ("node_id", 36)):
                assert len((server.data_dir / name).read_text().strip()) >= least, name
            token = (server.data_dir / "admin_token").read_text().strip()
            async with aiohttp.ClientSession() as http:
                api = Api(http, server.base)
                api.admin = {"Authorization": f"Bearer {token}"}
                await api.room("After the cut")
                status, _ = await api.call(
                    "GET", "/api/v1/rooms", headers={"Authorization": "Bearer "}
                )
                assert status == 401
                async with http.post(
                    f"{server.base}/host/login", data={"token": ""}, allow_redirects=False
                ) as r:
                    assert r.status != 303, "the host console took an empty token"
            assert server.terminate() == 0
        figures.add(f"{sizes.first_start_cuts} cuts in a first start", **outcomes)
    finally:
        disk.unmount()


async def test_a_cut_during_a_backup_leaves_the_old_backup_or_a_whole_new_one(
    tmp_path: Path, sizes: Sizes, figures: Figures
) -> None:
    from opus import backup

    rng = random.Random(_seed())
    disk = PowerCutDisk(tmp_path)
    disk.mount()
    server = ServerProcess(disk.path / "data")
    server.log = tmp_path / "server.log"
    target = disk.path / "backups" / "opus.tar.gz"
    whole = 0
    try:
        await _start(server)
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base)
            room = await api.room()
            poll = await api.poll(room["id"])
            for _ in range(20):
                voter = await api.join(room["code"])
                await api.vote(voter, poll["id"], [poll["options"][0]["id"]])
        for _ in range(sizes.backup_cuts):
            made = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "opus",
                "backup",
                str(target),
                "--data-dir",
                str(server.data_dir),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                returned = await asyncio.wait_for(made.wait(), rng.uniform(0.05, 1.5))
            except TimeoutError:
                returned = None
            await asyncio.to_thread(_power_cut, disk, server)
            if made.returncode is None:
                made.kill()
            await made.wait()
            if returned == 0:  # acknowledged: the archive must be there, whole
                assert target.is_file()
            if target.is_file():
                summary = backup.read_summary(target)  # never a half archive
                assert summary.rooms >= 1
                whole += 1
            await _start(server)
        figures.add(f"{sizes.backup_cuts} cuts around a backup", whole_archives=whole)
    finally:
        server.stop()
        disk.unmount()
