"""Schemathesis against a real `opus serve`: requests generated from the served
/api/openapi.json (valid ones and invalid ones) never get a 5xx, and every answer has a
documented status, content type and body.

The server holds a room with a poll of each kind, a voter, a vote, a question and
notifications, and the document the generator reads names their ids as well as random ones,
so the calls reach real objects as well as unknown ids. Host calls carry the admin token,
attendee calls the voter's token: the checks see answers past the 401s.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ADMIN, ServerProcess
from opus.views import openapi

METHODS = ("get", "put", "post", "delete", "patch")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Calls that would remove or close the seeded objects get only the ids that are meant for it
# (a draft poll and a spare room), so the calls after them still meet live polls.
SPARING = {
    "deleteRoom": "spare_room",
    "deletePoll": "spare_poll",
    "closePoll": "closable",
    "duplicateRoom": "room_id",
}


class Seeded:
    """What the server holds before schemathesis starts, and the tokens to use."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.http = requests.Session()
        self.ids: dict[str, list[Any]] = {}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, self.base + path, timeout=10, **kw)
        assert response.status_code < 300, (method, path, response.text)
        return response.json()

    def seed(self) -> None:
        room = self.call("POST", "/api/v1/rooms", json={"title": "Fuzz"}, headers=self.admin)
        spare = self.call("POST", "/api/v1/rooms", json={"title": "Spare"}, headers=self.admin)
        joined = self.call("POST", "/api/v1/join", json={"code": room["code"]})
        self.http.cookies.clear()
        self.voter = {"Authorization": f"Bearer {joined['voter_token']}"}
        shapes: list[dict[str, Any]] = [
            # First: the document's example ids stand for this poll and its options, and a
            # poll that takes a changed vote answers 202 again and again.
            {"kind": "multiple", "options": ["A", "B", "C"], "allow_change": True},
            {"kind": "single", "options": ["A", "B", "C"]},
            {"kind": "rating", "scale": 5},
            {"kind": "text", "blocked_words": ["spam"]},
            {"kind": "qa", "moderated": False},
            {"kind": "quiz", "options": ["A", "B"], "correct": [1], "time_limit_s": None},
        ]
        polls = []
        for n, shape in enumerate(shapes):
            poll = self.call(
                "POST",
                f"/api/v1/rooms/{room['id']}/polls",
                json={"question": f"Question {n}", **shape},
                headers=self.admin,
            )
            self.call("POST", f"/api/v1/polls/{poll['id']}/open", headers=self.admin)
            polls.append(poll)
        draft = self.call(
            "POST",
            f"/api/v1/rooms/{room['id']}/polls",
            json={"question": "Draft", "kind": "single", "options": ["X", "Y"]},
            headers=self.admin,
        )
        closable = self.call(
            "POST",
            f"/api/v1/rooms/{room['id']}/polls",
            json={"question": "Closable", "kind": "single", "options": ["X", "Y"]},
            headers=self.admin,
        )
        self.call("POST", f"/api/v1/polls/{closable['id']}/open", headers=self.admin)
        vote = self.call(
            "POST",
            f"/api/v1/polls/{polls[1]['id']}/votes",
            json={"option_ids": [polls[1]["options"][0]["id"]]},
            headers=self.voter,
        )
        asked = self.call(
            "POST",
            f"/api/v1/polls/{polls[4]['id']}/votes",
            json={"text": "Why is the sky blue?"},
            headers=self.voter,
        )
        inbox = self.call("GET", "/api/v1/notifications", headers=self.voter)
        self.ids = {
            "room_id": [room["id"]],
            "spare_room": [spare["id"]],
            "poll_id": [p["id"] for p in [*polls, draft, closable]],
            "spare_poll": [draft["id"]],
            "closable": [closable["id"], draft["id"]],
            "question_id": [asked["event_id"]],
            "event_id": [vote["event_id"], asked["event_id"]],
            "notification_id": [n["id"] for n in inbox["notifications"]][:3],
            "option_id": [o["id"] for p in polls for o in p["options"]],
            "code": [room["code"], room["code_display"].lower()],
        }

    def real(self, value: Any, instead: str | None = None) -> Any:
        """`value` with every stand-in in it replaced by the seeded object it stands for."""
        if isinstance(value, dict):
            return {k: self.real(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.real(v) for v in value]
        if isinstance(value, str | int) and not isinstance(value, bool) and value in STANDS_FOR:
            name, i = STANDS_FOR[value]
            real = self.ids[instead or name]
            return real[i % len(real)]
        return value

    def headers_for(self, operation: dict[str, Any]) -> dict[str, str]:
        """The admin token where the host may call, else the voter's where a voter may."""
        schemes = {name for requirement in operation.get("security", []) for name in requirement}
        if "adminToken" in schemes:
            return self.admin
        if "voterToken" in schemes:
            return self.voter
        return {}


# Stand-ins for the seeded ids, which exist only once the server runs: the generator picks
# among them (and random values), and the test puts the real id in their place.
STAND_INS: dict[str, list[Any]] = {
    name: [str(uuid.UUID(int=(n << 64) + i)) for i in range(8)]
    for n, name in enumerate(
        ("room_id", "poll_id", "question_id", "event_id", "option_id"), start=1
    )
}
STAND_INS["notification_id"] = [10**15 + i for i in range(3)]
STAND_INS["code"] = [f"STAND-IN{i}" for i in range(3)]
# Stand-in -> (what it stands for, which one). The document's own examples stand in too.
STANDS_FOR: dict[Any, tuple[str, int]] = {
    value: (name, i) for name, values in STAND_INS.items() for i, value in enumerate(values)
}
STANDS_FOR |= {
    openapi.EXAMPLE_ROOM_ID: ("room_id", 0),
    openapi.EXAMPLE_POLL_ID: ("poll_id", 0),
    openapi.EXAMPLE_QUESTION_ID: ("question_id", 0),
}
STANDS_FOR |= {o["id"]: ("option_id", i) for i, o in enumerate(openapi.EXAMPLE_OPTIONS)}
# Where the bodies name objects: (schema, property, stand-ins, inside an array?)
BODY_IDS = [
    ("CastVote", "option_ids", "option_id", True),
    ("CastVote", "upvote", "question_id", False),
    ("PollOrder", "poll_ids", "poll_id", True),
    ("Join", "code", "code", False),
]


def with_stand_ins(document: dict[str, Any]) -> dict[str, Any]:
    """The document, with the stand-ins offered for its path parameters (each operation gets
    its own copy of the path's shared parameters)."""
    document = copy.deepcopy(document)
    for item in document["paths"].values():
        shared = item.pop("parameters", [])
        for method in (m for m in METHODS if m in item):
            operation = item[method]
            own = operation.get("parameters", [])
            names = {p["name"] for p in own}
            params = [*own, *(copy.deepcopy(p) for p in shared if p["name"] not in names)]
            for param in params:
                if param["in"] == "path" and param["name"] in STAND_INS:
                    param["schema"] = {
                        "anyOf": [{"enum": STAND_INS[param["name"]]}, param["schema"]]
                    }
            if params:
                operation["parameters"] = params
    schemas = document["components"]["schemas"]
    for schema, prop, name, array in BODY_IDS:
        node = schemas[schema]["properties"][prop]
        if array:
            node = node["items"]
        original = dict(node)
        node.clear()
        node["anyOf"] = [{"enum": STAND_INS[name]}, original]
    return document


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    server = ServerProcess(Path(tmp_path_factory.mktemp("schema")) / "data")
    server.start()
    try:
        hall = Seeded(server.base)
        assert hall.call("GET", "/api/openapi.json") == openapi.document()
        hall.seed()
        yield hall
        assert server.proc is not None and server.proc.poll() is None, "the server died"
    finally:
        server.stop()


# The document is built in code (the server serves the same bytes: checked by the fixture),
# because schemathesis' lazy loader from a fixture does not work with pytest 9.
schema = schemathesis.openapi.from_dict(with_stand_ins(openapi.document()))


def test_the_seeded_ids_are_real(seeded: Seeded) -> None:
    """The ids offered to the generator name live objects (else it only meets 404s)."""
    room_id = seeded.ids["room_id"][0]
    room = seeded.call("GET", f"/api/v1/rooms/{room_id}", headers=seeded.admin)
    assert {p["id"] for p in room["polls"]} == set(seeded.ids["poll_id"])
    receipt = seeded.call("GET", f"/api/v1/votes/{seeded.ids['event_id'][0]}", headers=seeded.voter)
    assert receipt["event_id"] == seeded.ids["event_id"][0]
    assert seeded.ids["notification_id"], "the voter has no notifications to mark read"
    assert str(uuid.UUID(seeded.ids["question_id"][0])) == seeded.ids["question_id"][0]


@schema.exclude(path="/ws").parametrize()  # an upgrade: tests/test_live.py covers it
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_documented_answers_and_no_5xx(
    case: schemathesis.Case, seeded: Seeded
) -> None:
    sparing = SPARING.get(case.operation.definition.raw["operationId"])
    for name, value in list((case.path_parameters or {}).items()):
        case.path_parameters[name] = seeded.real(value, sparing)
    case.body = seeded.real(case.body)
    headers = seeded.headers_for(case.operation.definition.raw)
    case.call_and_validate(
        base_url=seeded.base, headers=headers, checks=CHECKS, session=seeded.http, timeout=10
    )
    seeded.http.cookies.clear()  # a join's cookie would change who the next call is


# -- what the generator does not send: text no client library makes ----------------------


def test_a_lone_surrogate_escape_is_refused_before_it_reaches_storage(seeded: Seeded) -> None:
    """JSON may spell half a surrogate pair; such text cannot be stored or sent back, so it
    is a 400 at the door, not a 500 (a room) or a vote acknowledged and never counted (a Q&A
    question, dead-lettered by the worker)."""
    poll_ids = seeded.ids["poll_id"]
    text_poll, qa_poll = poll_ids[3], poll_ids[4]
    for path, headers, raw in [
        ("/api/v1/rooms", seeded.admin, b'{"title": "Caf\\ud800"}'),
        (f"/api/v1/polls/{text_poll}/votes", seeded.voter, b'{"text": "nice \\uDFFF talk"}'),
        (f"/api/v1/polls/{qa_poll}/votes", seeded.voter, b'{"text": "why \\ud83d?"}'),
    ]:
        response = seeded.http.post(seeded.base + path, data=raw, headers=headers, timeout=10)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_json"
    # A whole pair is a character like any other, and an escaped backslash is not an escape.
    response = seeded.http.post(
        seeded.base + "/api/v1/rooms",
        headers=seeded.admin,
        data=b'{"title": "Party \\ud83c\\udf89 \\\\ud800"}',
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "Party \U0001f389 \\ud800"


def test_a_token_with_bytes_no_token_has_is_refused_with_401(seeded: Seeded) -> None:
    """Tokens are ASCII; one with other bytes is a wrong token (401), never a 500."""
    room_id = seeded.ids["room_id"][0]
    for token in (b"\xff", b"v1.abc.\xc3\xa9", "v1.é".encode()):
        bearer = {"Authorization": b"Bearer " + token}
        host = seeded.http.get(f"{seeded.base}/api/v1/rooms", headers=bearer, timeout=10)
        voter = seeded.http.get(f"{seeded.base}/api/v1/notifications", headers=bearer, timeout=10)
        either = seeded.http.get(
            f"{seeded.base}/api/v1/rooms/{room_id}", headers=bearer, timeout=10
        )
        for response in (host, voter, either):
            assert response.status_code == 401, (token, response.text)
            assert response.json()["error"]["code"] == "bad_token"
        cookie = {"Cookie": b"opus_voter=" + token}
        response = seeded.http.get(
            f"{seeded.base}/api/v1/notifications", headers=cookie, timeout=10
        )
        assert response.status_code == 401, (token, response.text)
        # Results are public: a bad token there is simply not the host's, as if none were sent.
        results = f"{seeded.base}/api/v1/polls/{seeded.ids['poll_id'][0]}/results"
        response = seeded.http.get(results, headers=bearer, timeout=10)
        anonymous = seeded.http.get(results, timeout=10)
        assert (response.status_code, response.json()) == (anonymous.status_code, anonymous.json())
        seeded.http.cookies.clear()
        # The same tokens on the live socket and the attendee page: refused or ignored, no 500.
        for query, headers in (
            (f"room={room_id}", bearer),
            (f"room={room_id}&token=v1.abc.%C3%A9", {}),
        ):
            response = seeded.http.get(f"{seeded.base}/ws?{query}", headers=headers, timeout=10)
            assert response.status_code < 500, (token, query, response.text)
        response = seeded.http.get(
            f"{seeded.base}/j/{seeded.ids['code'][0]}", headers=cookie, timeout=10
        )
        assert response.status_code == 200, (token, response.text)
