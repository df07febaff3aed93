"""Gzip for the answers worth it: text of 1 KB or more, to a client that says it takes gzip.

A phone on a crowded venue Wi-Fi waits for every byte of a page, its scripts and its CSS;
gzip makes them three to five times smaller (docs/benchmarks.md, "Pages"). A small answer,
such as a vote's 202, gains nothing a packet would notice and is sent as it is: the vote path
pays only the length check (bench/pages.py measures it). aiohttp compresses the body when the
response is prepared, after the handler; bodies over 4 KB in a thread, not on the event loop.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from opus.accept import weighted

MIN_BYTES = 1024
# Text only: images, msgpack and archives are compressed already or gain little.
_TEXT = frozenset(
    {
        "text/html",
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/json",
        "text/plain",
        "text/csv",
        "image/svg+xml",
    }
)


def compressible(content_type: str) -> bool:
    return content_type in _TEXT


def accepts_gzip(request: web.BaseRequest) -> bool:
    """Whether the client's Accept-Encoding takes gzip (by name or `*`, with a q above 0)."""
    header = request.headers.get(hdrs.ACCEPT_ENCODING)
    if not header:
        return False
    weights = dict(weighted(header))
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


def add_vary(response: web.StreamResponse) -> None:
    """Tell caches that this answer depends on Accept-Encoding."""
    vary = response.headers.get(hdrs.VARY)
    if not vary:
        response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    elif hdrs.ACCEPT_ENCODING.lower() not in vary.lower():
        response.headers[hdrs.VARY] = f"{vary}, {hdrs.ACCEPT_ENCODING}"


def compress(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Have aiohttp gzip this answer when it is sent, if it is worth it and the client takes it.

    Left alone: a response already sent (a WebSocket, a stream), one with an encoding already
    (the static files' precompressed bodies), a HEAD (no body goes out), and small bodies.
    """
    if not isinstance(response, web.Response) or response.prepared:
        return
    body = response.body
    if not isinstance(body, bytes) or len(body) < MIN_BYTES:
        return
    if (
        request.method == hdrs.METH_HEAD
        or hdrs.CONTENT_ENCODING in response.headers
        or not compressible(response.content_type)
    ):
        return
    add_vary(response)
    if accepts_gzip(request):
        response.enable_compression(web.ContentCoding.gzip)
