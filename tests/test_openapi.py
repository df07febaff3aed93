"""The OpenAPI document served at GET /api/openapi.json describes the API the server really
serves: every route under /api/ with its method, and nothing that is not served."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

OPENAPI = "/api/openapi.json"
Client = TestClient[web.Request, web.Application]
METHODS = ("get", "put", "post", "delete", "patch")  # what a path item may hold (no HEAD)


async def served_document(client: Client) -> dict[str, Any]:
    response = await client.get(OPENAPI)
    assert response.status == 200
    assert response.content_type == "application/json"
    document = json.loads(await response.text())  # the JSON itself, not aiohttp's lenient read
    assert isinstance(document, dict)
    return document


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers, as OpenAPI spells them."""
    routes = set()
    for route in app.router.routes():
        method = route.method.lower()
        path = route.resource.canonical if route.resource is not None else ""
        if method in METHODS and path:
            routes.add((method, path))
    return routes


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


async def test_every_api_route_is_in_the_openapi_document(client: Client) -> None:
    document = await served_document(client)
    served = {(m, p) for m, p in served_routes(client.app) if p.startswith("/api/")}
    assert len(served) > 20, served  # the walk found the API, not an empty router
    missing = sorted(served - documented(document))
    assert not missing, (
        "These routes are served but missing from the OpenAPI document; add each to paths() "
        "in opus/views/openapi.py (with its request and response schemas) and describe it in "
        "docs/api.md:\n" + "\n".join(f"  {method.upper()} {path}" for method, path in missing)
    )


async def test_the_document_describes_nothing_the_server_does_not_serve(client: Client) -> None:
    document = await served_document(client)
    stale = sorted(documented(document) - served_routes(client.app))
    assert not stale, (
        "The OpenAPI document (opus/views/openapi.py) describes routes the server does not "
        "serve; remove or fix them:\n"
        + "\n".join(f"  {method.upper()} {path}" for method, path in stale)
    )


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


async def test_the_document_is_openapi_3_1_and_holds_together(client: Client) -> None:
    document = await served_document(client)
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"]), document["openapi"]
    assert document["info"]["title"] == "Opus" and document["info"]["version"]

    unresolved = []
    for ref in sorted(set(_refs(document))):
        try:
            _resolve(document, ref)
        except (KeyError, TypeError):
            unresolved.append(ref)
    assert not unresolved, f"$ref to nothing in opus/views/openapi.py: {unresolved}"

    operations = [
        op
        for item in document["paths"].values()
        for method, op in item.items()
        if method in METHODS
    ]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    linked = {
        link["operationId"]
        for op in operations
        for response in op["responses"].values()
        for link in response.get("links", {}).values()
    }
    assert linked <= set(ids), f"links to unknown operations: {sorted(linked - set(ids))}"

    for path, item in document["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method in (m for m in item if m in METHODS):
            declared = {
                p["name"]
                for p in [*item.get("parameters", []), *item[method].get("parameters", [])]
                if p["in"] == "path"
            }
            assert declared == names, f"{method.upper()} {path}: path parameters {declared}"
            assert item[method]["responses"], f"{method.upper()} {path} has no responses"


async def test_every_poll_kind_and_vote_shape_is_described(client: Client) -> None:
    """What a client generator needs for the poll kinds: each kind's fields when creating a
    poll, each vote shape, and each kind's extras in the results."""
    schemas = (await served_document(client))["components"]["schemas"]
    assert set(schemas["Poll"]["properties"]["kind"]["enum"]) == {
        "single",
        "multiple",
        "rating",
        "text",
        "qa",
        "quiz",
    }
    assert {"correct", "time_limit_s", "scale", "blocked_words", "moderated"} <= set(
        schemas["CreatePoll"]["properties"]
    )
    shapes = [shape["required"] for shape in schemas["CastVote"]["anyOf"]]
    assert shapes == [["option_ids"], ["value"], ["text"], ["upvote"]]
    assert {"option_ids", "value", "text", "upvote", "event_id"} == set(
        schemas["CastVote"]["properties"]
    )
    assert {"average", "words", "questions", "leaderboard"} <= set(schemas["Results"]["properties"])


async def test_each_request_body_is_the_one_its_route_declares(client: Client) -> None:
    """A route that reads a body declares it (`api.accepts`); the document's request body for
    that route is the declaration's schema, generated from opus/bodies.py, and every declared
    body is used by a route."""
    from opus import bodies
    from opus.views import api

    document = await served_document(client)
    declared = {
        (route.method.lower(), route.path): api.BODIES[route.handler].__name__
        for route in api.routes
        if isinstance(route, web.RouteDef) and route.handler in api.BODIES
    }
    described = {
        (method, path): op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS and "requestBody" in op
    }
    assert {key: ref.rsplit("/", 1)[1] for key, ref in described.items()} == declared
    assert sorted(set(declared.values())) == sorted(cls.__name__ for cls in bodies.REQUESTS)
    for cls in bodies.REQUESTS:
        assert document["components"]["schemas"][cls.__name__]["properties"].keys() == set(
            cls.__struct_fields__
        )
