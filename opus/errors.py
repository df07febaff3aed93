"""Domain errors: each carries its HTTP status and a stable code; one middleware answers them."""

from __future__ import annotations


class OpusError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class BadRequest(OpusError):
    status, code = 400, "bad_request"


class Unauthorized(OpusError):
    status, code = 401, "unauthorized"


class Forbidden(OpusError):
    status, code = 403, "forbidden"


class NotFound(OpusError):
    status, code = 404, "not_found"


class Conflict(OpusError):
    status, code = 409, "conflict"


class TooLarge(OpusError):
    status, code = 413, "body_too_large"


class Unprocessable(OpusError):
    status, code = 422, "invalid"


class TooManyRequests(OpusError):
    status, code = 429, "too_many_requests"


class Unavailable(OpusError):
    status, code = 503, "unavailable"


class StorageFull(Unavailable):
    """The disk is full: nothing can be saved until space returns, and then everything works
    again by itself."""

    code = "storage_full"

    def __init__(self) -> None:
        super().__init__(
            "The server's disk is full, so nothing was saved; try again shortly.", retry_after=5
        )
