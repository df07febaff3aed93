"""Who a request comes from: the host, a voter, or nobody. Decided here, once per request, for
the API, the sockets and the pages alike.

Where each credential may come from:
- `Authorization: Bearer <token>`: the admin token or a voter token (scripts, the page's
  fetches, the console's live socket).
- the `opus_voter` cookie: a voter, in a browser that joined.
- `?token=` on the WebSocket only: a voter token, for clients that cannot set headers. Never the
  admin token (a URL ends up in logs, proxies and browser history).
- the `opus_host` cookie: the host's console session in a browser (the pages and the console's
  live socket; the API itself wants the token).

A host session is `expires.nonce.mac`, signed with a key derived from the data dir's secret and
the admin token (a new admin token ends every session); logging out revokes its nonce, kept in
SQLite until the session would have expired.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

from opus.auth import Voter, same_token
from opus.errors import BadRequest
from opus.keys import ADMIN_TOKEN, DB, PAGE_SECRET, SIGNER

VOTER_COOKIE = "opus_voter"
VOTER_COOKIE_S = 7 * 24 * 3600
HOST_COOKIE = "opus_host"
SESSION_S = 12 * 3600  # one working day of events, then log in again
_REVOKED = web.AppKey("revoked_host_sessions", set[str])  # nonces of logged-out sessions


@dataclass(frozen=True, slots=True)
class Caller:
    """`via` says where the credential came from ("header", "query", "cookie", "session"),
    or "" when none came: a token that was sent but is neither the admin token nor a valid
    voter token has a `via` and is neither host nor voter."""

    via: str = ""
    host: bool = False
    voter: Voter | None = None

    @property
    def bad_token(self) -> bool:
        return bool(self.via) and not self.host and self.voter is None


def bearer(request: web.BaseRequest) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def identify(request: web.Request, *, query: bool = False, session: bool = False) -> Caller:
    """The request's caller. `query`: a voter token in `?token=` counts (the WebSocket);
    `session`: the host's console session counts (the pages, the console's socket)."""
    app = request.app
    in_url = request.query.get("token", "") if query else ""
    if in_url and same_token(in_url, app[ADMIN_TOKEN]):
        raise BadRequest(
            "The admin token goes in the Authorization header, never in a URL.", code="token_in_url"
        )
    for via, token in (("query", in_url), ("header", bearer(request))):
        if token:
            if via == "header" and same_token(token, app[ADMIN_TOKEN]):
                return Caller(via, host=True)
            return Caller(via, voter=app[SIGNER].voter(token))
    # The console's session before the voter cookie: a host who also voted from this browser
    # is the host on the console's pages and socket.
    if session and _session(request) is not None:
        return Caller("session", host=True)
    token = request.cookies.get(VOTER_COOKIE, "")
    if token:
        return Caller("cookie", voter=app[SIGNER].voter(token))
    return Caller()


def origin_matches(request: web.BaseRequest) -> bool | None:
    """Whether the page that sent this request is this server's (its Origin's scheme, host and
    port); None when the browser did not say (no Origin, or "null")."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return None
    try:
        given, here = URL(origin), request.url
        return (given.scheme, given.host, given.port) == (here.scheme, here.host, here.port)
    except ValueError:
        return False


# -- the host's console session -------------------------------------------------------------


def sign(request: web.Request, purpose: str, value: str) -> str:
    """An HMAC of `value` for `purpose` (a host session, a CSRF token) with the pages' key."""
    digest = hmac.digest(request.app[PAGE_SECRET], f"{purpose}:{value}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest[:18]).decode()


def _host_purpose(request: web.Request) -> str:
    # The admin token is part of what is signed: changing it ends every host session.
    return "host:" + request.app[ADMIN_TOKEN]


def new_session(request: web.Request) -> str:
    """A new host session's cookie value: `expires.nonce.mac`."""
    session = f"{int(time.time()) + SESSION_S}.{secrets.token_urlsafe(12)}"
    return f"{session}.{sign(request, _host_purpose(request), session)}"


def _session(request: web.Request) -> tuple[int, str] | None:
    """This browser's live host session (signed, not expired, not logged out): its expiry and
    nonce, or None."""
    expires, nonce, mac = [*request.cookies.get(HOST_COOKIE, "").split("."), "", ""][:3]
    if not expires.isdigit() or int(expires) < time.time() or not nonce:
        return None
    if not hmac.compare_digest(mac, sign(request, _host_purpose(request), f"{expires}.{nonce}")):
        return None
    if nonce in request.app[_REVOKED]:
        return None
    return int(expires), nonce


async def end_session(request: web.Request) -> None:
    """Log out for good: the session's cookie stops working on this server even if it was
    copied, and stays refused across restarts until it would have expired."""
    session = _session(request)
    if session is None:
        return
    expires, nonce = session
    with request.app[DB].write() as conn:
        conn.execute("DELETE FROM revoked_sessions WHERE expires < ?", (int(time.time()),))
        conn.execute(
            "INSERT OR IGNORE INTO revoked_sessions (nonce, expires) VALUES (?, ?)",
            (nonce, expires),
        )
    request.app[_REVOKED].add(nonce)


async def _load_revoked(app: web.Application) -> None:
    rows = await app[DB].fetchall(
        "SELECT nonce FROM revoked_sessions WHERE expires >= ?", (int(time.time()),)
    )
    app[_REVOKED].update(r["nonce"] for r in rows)


def setup(app: web.Application) -> None:
    app[_REVOKED] = set()
    app.on_startup.append(_load_revoked)
