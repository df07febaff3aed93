"""One middleware turns every error into the contract's JSON body, gzips the answers worth it
(compression.py) and times every request."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from opus.db import is_disk_full
from opus.errors import OpusError, StorageFull
from opus.keys import METRICS, SETTINGS
from opus.views.compression import compress

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    429: "too_many_requests",
}
# A vote is a few hundred bytes and the largest body 64 KiB: a phone on poor Wi-Fi sends it
# in seconds. A body still incomplete after this long holds a connection and a handler for
# nothing (a client that stalls, or vanished without closing), so it is cut off.
_BODY_TIMEOUT_S = 15.0


def error_response(
    status: int, code: str, message: str, retry_after: int | None = None
) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _api_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    message = {
        404: "There is no such API call; see docs/api.md.",
        405: f"{request.method} is not allowed here.",
        408: "The request body did not arrive in time.",
        413: "The request body is too large.",
    }.get(exc.status, exc.reason)
    response = error_response(exc.status, _HTTP_CODES.get(exc.status, "error"), message)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


async def _body_arrived(request: web.Request) -> bool:
    """Read the request's body (aiohttp keeps it for the handler) within `_BODY_TIMEOUT_S`.

    aiohttp bounds the wait for request headers (its keep-alive timeout) but not for a body:
    without this, a body that never fully arrives holds its handler forever. Bodies past the
    size limit, multipart and chunked ones are left to the handler as before.
    """
    limit = request.app[SETTINGS].max_body_bytes
    if (
        not request.body_exists
        or request.content.is_eof()
        or request.content_length is None
        or request.content_length > limit
        or request.content_type.startswith("multipart/")
    ):
        return True
    try:
        async with asyncio.timeout(_BODY_TIMEOUT_S):
            await request.read()
    except TimeoutError:
        return False
    return True


@web.middleware
async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into the contract's JSON body, gzip what is worth it, and time the
    request by route (one middleware, not three: each is a coroutine more on every request)."""
    started = time.perf_counter()
    status = 500
    try:
        try:
            if not await _body_arrived(request):
                raise web.HTTPRequestTimeout()
            response = await handler(request)
        except OpusError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.retry_after)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400 or not request.path.startswith("/api/"):
                raise
            response = _api_error(request, exc)
            if exc.status == 408:
                response.force_close()  # what is left of the body is not read
        except ConnectionResetError:
            # The client went away in the middle of its request: nobody to answer, no fault.
            log.debug("client left during %s %s", request.method, request.path)
            status = 499  # nginx's "client closed request", for the metrics only
            raise
        except Exception as exc:
            if is_disk_full(exc):  # a join or a host call while the disk is full
                log.error("disk full on %s %s", request.method, request.path)
                full = StorageFull()
                response = error_response(full.status, full.code, full.message, full.retry_after)
            else:
                log.exception("unexpected error on %s %s", request.method, request.path)
                response = error_response(
                    500,
                    "internal_error",
                    "Something went wrong on the server; nothing was lost, try again.",
                )
        status = response.status
        compress(request, response)
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].observe_request(request.method, route, status, started)
