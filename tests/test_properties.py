"""Property tests of the vote rules and the tally arithmetic.

Hypothesis makes sequences of what a hall does (votes by several voters on polls of every
kind but the word cloud, retries of an event_id with the same or a different body, two copies
of a request racing, polls opening and closing, and the server killed with SIGKILL and
restarted on the same data dir) and plays them against a real `opus serve` process. A small
pure-Python model of docs/api.md says what each answer must be; once the queue has drained,
the server's results, receipts and leaderboard must equal the model's exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ADMIN, ServerProcess
from opus import kinds
from opus.auth import pseudonym
from opus.errors import Unprocessable

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
VOTERS = 3
EVENT_POOL = 4  # event ids an example draws from, so that retries and clashes happen often
MAX_CRASHES = 2  # each one is a kill -9 and a restart: about a second
# Poll index -> kind. Option positions: 0..2 are the poll's options (0..4 for the rating's
# scale), the next one is an option of another poll.
KINDS = ("single", "multiple", "rating", "quiz", "qa", "text")
OPTION_COUNT = {"single": 3, "multiple": 3, "rating": 5, "quiz": 3}
ASKS = ("Why?", "  How  come? ", "   ")  # the last is empty once trimmed
SAYS = ("Great talk", "great  TALK, great!", "Don't stop", " ")


# -- what happens, as data hypothesis can make and shrink ---------------------------------


@dataclass(frozen=True)
class Vote:
    voter: int
    poll: int
    # ("options", positions) | ("value", n) | ("ask", text) | ("upvote", k) | ("say", text)
    body: tuple[Any, ...]
    slot: int | None  # an event id from the pool, or None: the server makes one


@dataclass(frozen=True)
class Retry:
    """The k-th vote request sent so far (modulo), sent again as it was."""

    k: int


@dataclass(frozen=True)
class Race:
    """Two requests with one event id at once: the same body twice, or two bodies."""

    first: Vote
    second: Vote | None  # None: an exact copy of the first


@dataclass(frozen=True)
class Status:
    poll: int
    action: str  # "open" | "close"


@dataclass(frozen=True)
class Crash:
    pass


@dataclass(frozen=True)
class Scenario:
    allow_change: tuple[bool, ...]  # per poll
    quiz_correct: tuple[int, ...]
    ops: tuple[Vote | Retry | Race | Status | Crash, ...]


def _body(kind: str) -> st.SearchStrategy[tuple[Any, ...]]:
    if kind == "text":
        return st.tuples(st.just("say"), st.sampled_from(SAYS))
    if kind == "qa":
        return st.one_of(
            st.tuples(st.just("ask"), st.sampled_from(ASKS)),
            st.tuples(st.just("upvote"), st.integers(-1, 3)),
        )
    n = OPTION_COUNT[kind]
    positions = st.lists(st.integers(0, n), max_size=3 if kind == "multiple" else 2).map(tuple)
    options = st.tuples(st.just("options"), positions)
    if kind == "rating":
        return st.one_of(st.tuples(st.just("value"), st.integers(0, n + 1)), options)
    # Mostly one valid option: the interesting rules are about who votes when.
    one = st.tuples(st.just("options"), st.integers(0, n - 1).map(lambda i: (i,)))
    return st.one_of(one, one, options)


@st.composite
def votes(draw: st.DrawFn) -> Vote:
    poll = draw(st.integers(0, len(KINDS) - 1))
    return Vote(
        voter=draw(st.integers(0, VOTERS - 1)),
        poll=poll,
        body=draw(_body(KINDS[poll])),
        slot=draw(st.one_of(st.none(), st.integers(0, EVENT_POOL - 1))),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    # Most polls start open, so that most votes meet the rules that matter more than 404.
    opens = tuple(Status(p, "open") for p in range(len(KINDS)) if draw(st.integers(0, 4)) > 0)
    op = st.one_of(
        votes(),
        votes(),
        votes(),
        votes(),
        st.builds(Retry, st.integers(0, 50)),
        st.builds(Race, votes(), st.one_of(st.none(), votes())),
        st.builds(Status, st.integers(0, len(KINDS) - 1), st.sampled_from(["open", "close"])),
        st.just(Crash()),
    )
    ops = draw(st.lists(op, min_size=1, max_size=25))
    crashes = 0
    kept: list[Vote | Retry | Race | Status | Crash] = []
    for o in ops:
        crashes += isinstance(o, Crash)
        if not isinstance(o, Crash) or crashes <= MAX_CRASHES:
            kept.append(o)
    return Scenario(
        allow_change=tuple(draw(st.booleans()) for _ in KINDS),
        quiz_correct=tuple(draw(st.sets(st.integers(0, 2), min_size=1))),
        ops=opens + tuple(kept),
    )


# -- the model: docs/api.md's vote rules, in the order the server checks them -------------


@dataclass(frozen=True)
class Entry:
    poll: int
    voter: int
    choice: tuple[Any, ...]  # sorted option ids, ("q", text), ("u", question id), ("t", text)

    @property
    def key(self) -> tuple[int, Any] | None:
        if self.choice[:1] == ("q",):
            return None
        if self.choice[:1] == ("u",):
            return (self.poll, (self.voter, self.choice[1]))
        return (self.poll, self.voter)


@dataclass
class Model:
    polls: list[dict[str, Any]]  # the server's poll bodies at creation
    allow_change: tuple[bool, ...]
    status: list[str] = field(default_factory=list)
    events: dict[str, Entry] = field(default_factory=dict)  # every accepted vote
    by_key: dict[tuple[int, Any], str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # accepted event ids, in order

    def copy(self) -> Model:
        return Model(
            self.polls,
            self.allow_change,
            list(self.status),
            dict(self.events),
            dict(self.by_key),
            list(self.order),
        )

    def option_ids(self, poll: int) -> list[str]:
        return [o["id"] for o in self.polls[poll]["options"]]

    def vote(self, v: Vote, body: dict[str, Any], event_id: str | None) -> tuple[int, str | None]:
        """The answer (status, error code) to this vote, and its effect on the model."""
        kind = KINDS[v.poll]
        if self.status[v.poll] == "draft":
            return 404, "poll_not_found"
        if kind in ("qa", "text"):
            if kind == "qa" and "upvote" in body:
                choice: tuple[Any, ...] = ("u", body["upvote"])
            else:
                text = " ".join(body["text"].split())
                if not text:
                    return 422, "empty_text"
                choice = ("q" if kind == "qa" else "t", text)
        elif "value" in body:
            if not 1 <= body["value"] <= len(self.option_ids(v.poll)):
                return 422, "invalid_value"
            choice = (self.option_ids(v.poll)[body["value"] - 1],)
        else:
            chosen = sorted(set(body["option_ids"]))
            if not chosen:
                return 422, "no_option"
            if kind != "multiple" and len(chosen) != 1:
                return 422, "too_many_options"
            if not set(chosen) <= set(self.option_ids(v.poll)):
                return 422, "invalid_option"
            choice = tuple(chosen)
        entry = Entry(v.poll, v.voter, choice)
        known = self.events.get(event_id) if event_id else None
        if known is None and self.status[v.poll] != "open":
            return 409, "poll_not_open"
        if known is not None:
            return (202, None) if known == entry else (409, "event_id_conflict")
        key = entry.key
        if key is not None and key in self.by_key:
            if choice[0] == "u" or not self.allow_change[v.poll]:
                return 409, "already_voted"
        if choice[0] == "u":
            asked = self.events.get(choice[1])
            if asked is None or asked.poll != v.poll or asked.choice[0] != "q":
                return 404, "question_not_found"
        return 202, None

    def accept(self, event_id: str, v: Vote, body: dict[str, Any]) -> None:
        """Record a vote the model answered 202 for (a new one, or a retry)."""
        if event_id in self.events:
            return
        if KINDS[v.poll] in ("qa", "text"):
            tag = "q" if KINDS[v.poll] == "qa" else "t"
            choice: tuple[Any, ...] = (
                ("u", body["upvote"]) if "upvote" in body else (tag, " ".join(body["text"].split()))
            )
        elif "value" in body:
            choice = (self.option_ids(v.poll)[body["value"] - 1],)
        else:
            choice = tuple(sorted(set(body["option_ids"])))
        entry = Entry(v.poll, v.voter, choice)
        self.events[event_id] = entry
        self.order.append(event_id)
        if entry.key is not None:
            self.by_key[entry.key] = event_id

    def set_status(self, poll: int, action: str) -> tuple[int, str | None]:
        target = {"open": "open", "close": "closed"}[action]
        current = self.status[poll]
        allowed = {"open": ("draft", "open"), "closed": ("open", "closed")}[target]
        if current not in allowed:
            return 409, "invalid_transition"
        self.status[poll] = target
        return 200, None

    def questions(self) -> list[str]:
        return [e for e in self.order if self.events[e].choice[0] == "q"]

    def counted(self, event_id: str) -> bool:
        entry = self.events[event_id]
        return entry.key is None or self.by_key[entry.key] == event_id

    def results(self, poll: int) -> dict[str, Any]:
        """What GET /results must say (for the host) once every vote is counted."""
        kind = KINDS[poll]
        current = [
            self.events[e] for e in self.order if self.events[e].poll == poll and self.counted(e)
        ]
        if kind == "qa":
            asks = [
                e
                for e in self.order
                if self.events[e] in current and self.events[e].choice[0] == "q"
            ]
            return {
                "total_votes": len(asks),
                "questions": sorted(
                    (e, self.events[e].choice[1], sum(1 for x in current if x.choice == ("u", e)))
                    for e in asks
                ),
            }
        total = len(current)
        if kind == "text":
            words: dict[str, int] = {}
            for x in current:
                for word in kinds.words(x.choice[1]):
                    words[word] = words.get(word, 0) + 1
            return {"total_votes": total, "words": words}
        counts = {o: sum(1 for x in current if o in x.choice) for o in self.option_ids(poll)}
        body: dict[str, Any] = {
            "total_votes": total,
            "options": [
                {"id": o, "votes": n, "percent": round(100 * n / total, 1) if total else 0.0}
                for o, n in counts.items()
            ],
        }
        if kind == "rating":
            body["average"] = (
                round(sum((i + 1) * n for i, n in enumerate(counts.values())) / total, 2)
                if total
                else None
            )
        return body

    def leaderboard(self, correct: dict[int, set[str]]) -> list[tuple[str, int, int]]:
        """Points over closed quizzes: 1000 for a right answer (no time limit)."""
        points: dict[int, list[int]] = {}
        for e in self.order:
            entry = self.events[e]
            if (
                KINDS[entry.poll] == "quiz"
                and self.status[entry.poll] == "closed"
                and self.counted(e)
            ):
                right = set(entry.choice) <= correct[entry.poll]
                points.setdefault(entry.voter, []).append(1000 if right else 0)
        return sorted((str(voter), sum(p), sum(1 for x in p if x)) for voter, p in points.items())


# -- playing a scenario against the real server -------------------------------------------


class Hall:
    """One example: a room with a poll of each kind, its voters, and the model beside them."""

    def __init__(self, server: ServerProcess, scenario: Scenario) -> None:
        self.server = server
        self.scenario = scenario
        self.pool = [str(uuid.uuid4()) for _ in range(EVENT_POOL)]
        self.foreign = str(uuid.uuid4())  # an option id that is no poll's
        self.sent: list[tuple[Vote, dict[str, Any], str | None]] = []
        self.session: aiohttp.ClientSession

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.server.base + path, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def setup(self) -> None:
        status, room = await self.call(
            "POST", "/api/v1/rooms", json={"title": "Props"}, headers=ADMIN_HEADERS
        )
        assert status == 201, room
        self.room = room
        polls = []
        for i, kind in enumerate(KINDS):
            payload: dict[str, Any] = {
                "question": f"Q{i}",
                "kind": kind,
                "allow_change": self.scenario.allow_change[i],
            }
            if kind in ("single", "multiple", "quiz"):
                payload["options"] = ["A", "B", "C"]
            if kind == "quiz":
                payload["correct"] = list(self.scenario.quiz_correct)
                payload["time_limit_s"] = None  # points and acceptance do not hang on timing
            status, poll = await self.call(
                "POST", f"/api/v1/rooms/{room['id']}/polls", json=payload, headers=ADMIN_HEADERS
            )
            assert status == 201, poll
            polls.append(poll)
        self.model = Model(polls, self.scenario.allow_change, ["draft"] * len(KINDS))
        self.correct = {
            i: {p["options"][c]["id"] for c in self.scenario.quiz_correct}
            for i, p in enumerate(polls)
            if p["kind"] == "quiz"
        }
        self.voters = []
        for _ in range(VOTERS):
            self.session.cookie_jar.clear()
            status, joined = await self.call("POST", "/api/v1/join", json={"code": room["code"]})
            assert status == 201, joined
            self.voters.append(
                {
                    "id": joined["voter_id"],
                    "headers": {"Authorization": f"Bearer {joined['voter_token']}"},
                }
            )
        self.session.cookie_jar.clear()

    def request(self, v: Vote, event_id: str | None) -> dict[str, Any]:
        """The JSON body of a vote, given the model's state now (upvotes name a question)."""
        kind, arg = v.body
        body: dict[str, Any]
        if kind == "options":
            ids = self.model.option_ids(v.poll)
            body = {"option_ids": [ids[i] if i < len(ids) else self.foreign for i in arg]}
        elif kind == "value":
            body = {"value": arg}
        elif kind in ("ask", "say"):
            body = {"text": arg}
        else:
            asked = self.model.questions()
            body = {"upvote": asked[arg % len(asked)] if asked and arg >= 0 else self.foreign}
        if event_id is not None:
            body["event_id"] = event_id
        return body

    async def send(self, v: Vote, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.call(
            "POST",
            f"/api/v1/polls/{self.model.polls[v.poll]['id']}/votes",
            json=body,
            headers=self.voters[v.voter]["headers"],
        )

    def check(
        self, status: int, answer: Any, expected: tuple[int, str | None], what: object
    ) -> None:
        code = answer["error"]["code"] if status >= 400 else None
        assert (status, code) == expected, f"{what}: server {status} {answer}, model {expected}"

    async def vote(self, v: Vote, event_id: str | None) -> None:
        body = self.request(v, event_id)
        expected = self.model.vote(v, body, event_id)
        status, answer = await self.send(v, body)
        self.check(status, answer, expected, v)
        if status == 202:
            assert event_id is None or answer["event_id"] == event_id
            event_id = answer["event_id"]
            self.model.accept(event_id, v, body)
        self.sent.append((v, {k: x for k, x in body.items() if k != "event_id"}, event_id))

    async def retry(self, r: Retry) -> None:
        if not self.sent:
            return
        v, body, event_id = self.sent[r.k % len(self.sent)]
        full = {**body, **({"event_id": event_id} if event_id else {})}
        expected = self.model.vote(v, full, event_id)
        status, answer = await self.send(v, full)
        self.check(status, answer, expected, r)
        if status == 202:
            self.model.accept(answer["event_id"], v, full)

    async def race(self, r: Race) -> None:
        event_id = self.pool[r.first.slot] if r.first.slot is not None else str(uuid.uuid4())
        second = r.second or r.first
        pair = [
            (r.first, self.request(r.first, event_id)),
            (second, self.request(second, event_id)),
        ]
        answers = await asyncio.gather(*(self.send(v, body) for v, body in pair))
        observed = [(s, a["error"]["code"] if s >= 400 else None) for s, a in answers]
        # The server settles a race in some order: the answers must be those of one order.
        for order in itertools.permutations(range(2)):
            model = self.model.copy()
            outcome: list[tuple[int, str | None]] = [(0, None), (0, None)]
            for i in order:
                v, body = pair[i]
                outcome[i] = model.vote(v, body, event_id)
                if outcome[i][0] == 202:
                    model.accept(event_id, v, body)
            if outcome == observed:
                self.model = model
                return
        raise AssertionError(f"{r}: answers {answers} fit no order of the two requests")

    async def status(self, s: Status) -> None:
        expected = self.model.set_status(s.poll, s.action)
        status, answer = await self.call(
            "POST",
            f"/api/v1/polls/{self.model.polls[s.poll]['id']}/{s.action}",
            headers=ADMIN_HEADERS,
        )
        self.check(status, answer, expected, s)

    async def settle(self) -> None:
        """Wait until no accepted vote is queued, then compare receipts with the model."""
        deadline = time.monotonic() + 30
        by_voter = {i: self.voters[e.voter] for i, e in self.model.events.items()}

        async def receipt(event_id: str) -> dict[str, Any]:
            status, body = await self.call(
                "GET", f"/api/v1/votes/{event_id}", headers=by_voter[event_id]["headers"]
            )
            assert status == 200, body
            return body  # type: ignore[no-any-return]

        # All of them first: a vote reads "counted" until the voter's later vote, still
        # queued, is applied and replaces it.
        for event_id in self.model.order:
            while (await receipt(event_id))["status"] == "queued":
                assert time.monotonic() < deadline, f"{event_id} still queued"
                await asyncio.sleep(0.02)
        for event_id in self.model.order:
            got = await receipt(event_id)
            if self.model.counted(event_id):
                assert got["status"] == "counted", (event_id, got)
            else:  # replaced by the voter's later vote
                assert got["status"] == "rejected", (event_id, got)
                assert got["reason"] in ("replaced", "superseded"), got

    async def compare(self) -> None:
        for i, poll in enumerate(self.model.polls):
            status, got = await self.call(
                "GET", f"/api/v1/polls/{poll['id']}/results", headers=ADMIN_HEADERS
            )
            assert status == 200, got
            want = self.model.results(i)
            assert got["status"] == self.model.status[i]
            if KINDS[i] == "qa":
                questions = sorted((q["id"], q["text"], q["upvotes"]) for q in got["questions"])
                assert {"total_votes": got["total_votes"], "questions": questions} == want
                continue
            if KINDS[i] == "text":
                words = {w["word"]: w["count"] for w in got["words"]}
                assert {"total_votes": got["total_votes"], "words": words} == want
                continue
            shown = {
                "total_votes": got["total_votes"],
                "options": [{k: o[k] for k in ("id", "votes", "percent")} for o in got["options"]],
            }
            if KINDS[i] == "rating":
                shown["average"] = got["average"]
            assert shown == want, f"poll {i} ({KINDS[i]})"
            if KINDS[i] == "quiz":
                names = {pseudonym(v["id"]): str(n) for n, v in enumerate(self.voters)}
                board = sorted(
                    (names[r["name"]], r["points"], r["correct"]) for r in got["leaderboard"]
                )
                want_board = self.model.leaderboard(self.correct)
                if len(names) < VOTERS:  # two voters drew the same pseudonym
                    board = [("?", *row[1:]) for row in board]
                    want_board = [("?", *row[1:]) for row in want_board]
                assert sorted(board) == sorted(want_board)

    async def play(self) -> None:
        self.session = aiohttp.ClientSession()
        try:
            await self.setup()
            for op in self.scenario.ops:
                if isinstance(op, Vote):
                    await self.vote(op, self.pool[op.slot] if op.slot is not None else None)
                elif isinstance(op, Retry):
                    await self.retry(op)
                elif isinstance(op, Race):
                    await self.race(op)
                elif isinstance(op, Status):
                    await self.status(op)
                else:
                    # kill -9 right after the last answer: its vote may not be counted yet
                    await self.session.close()
                    self.server.kill()
                    self.server.start()
                    self.session = aiohttp.ClientSession()
            await self.settle()
            await self.compare()
        finally:
            await self.session.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(Path(tmp_path_factory.mktemp("props")) / "data")
    server.start()
    yield server
    server.stop()


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_any_interleaving_of_votes_retries_and_crashes_tallies_like_the_model(
    shared_server: ServerProcess, scenario: Scenario
) -> None:
    if shared_server.proc is None or shared_server.proc.poll() is not None:
        shared_server.start()  # an earlier example failed between a kill and its restart
    asyncio.run(Hall(shared_server, scenario).play())


# -- the tally arithmetic, no server ------------------------------------------------------

option_ids = st.lists(st.uuids().map(str), min_size=1, max_size=6, unique=True)


@settings(max_examples=200, deadline=None, database=None, print_blob=True)
@given(ids=option_ids, data=st.data())
def test_a_vote_has_one_canonical_choice_whatever_the_order_and_repeats(
    ids: list[str], data: st.DataObject
) -> None:
    """A retry that lists the same options in another order, or twice, is the same vote."""
    picked = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=8))
    shuffled = data.draw(st.permutations(picked))
    allowed = frozenset(ids)
    first = kinds.option_choice("multiple", tuple(ids), allowed, option_ids=picked)
    again = kinds.option_choice("multiple", tuple(ids), allowed, option_ids=[*shuffled, *shuffled])
    assert first == again
    assert first == kinds.Options(tuple(sorted(set(picked))))


@settings(max_examples=200, deadline=None, database=None, print_blob=True)
@given(value=st.integers(1, 10), scale=st.sampled_from(kinds.SCALES))
def test_a_rating_value_and_its_option_are_the_same_vote(value: int, scale: int) -> None:
    options = tuple(str(uuid.UUID(int=n)) for n in range(scale))
    allowed = frozenset(options)
    if value > scale:
        with pytest.raises(Unprocessable):
            kinds.option_choice("rating", options, allowed, option_ids=None, value=value)
        return
    assert kinds.option_choice(
        "rating", options, allowed, option_ids=None, value=value
    ) == kinds.option_choice("rating", options, allowed, option_ids=[options[value - 1]])


@settings(max_examples=300, deadline=None, database=None, print_blob=True)
@given(
    limit=st.one_of(st.none(), st.integers(*kinds.TIME_LIMIT_RANGE)),
    a=st.floats(-5, 700, allow_nan=False),
    b=st.floats(-5, 700, allow_nan=False),
)
def test_quiz_points_reward_speed_and_stay_in_range(limit: int | None, a: float, b: float) -> None:
    fast, slow = sorted((a, b))
    assert kinds.quiz_points(False, fast, limit) == 0
    assert (
        500 <= kinds.quiz_points(True, slow, limit) <= kinds.quiz_points(True, fast, limit) <= 1000
    )


@settings(max_examples=300, deadline=None, database=None, print_blob=True)
@given(answer=st.text(max_size=kinds.MAX_ANSWER))
def test_a_word_cloud_answer_counts_each_word_once(answer: str) -> None:
    found = kinds.words(answer)
    assert len(found) == len(set(found))
    lowered = answer.lower()
    for entry in found:
        assert entry and entry == entry.lower()
        assert all(part in lowered for part in entry.split(" "))
        assert kinds.words(entry) == [entry]  # counting a counted entry changes nothing
    if len(found) > 1:  # a long answer: each of its words and emoji
        assert all(" " not in entry for entry in found)
