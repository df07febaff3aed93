"""What every page shares: templates, answers (a page, a redirect with a one-time message, a
refusal), CSRF tokens, and the join address. The attendee's pages are in `attendee.py`, the
projector's in `screen.py`, the host console's in `host.py`; who is calling is `callers.py`.

The pages call the domain layer directly. Every form works without JavaScript: it POSTs, the
server answers with a redirect (Post/Redirect/Get) and a one-time flash message. Every POST
carries a CSRF token: an HMAC of a random per-browser cookie, which a page on another site can
neither read nor compute.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import jinja2
import segno
import segno.helpers
from aiohttp import web
from multidict import MultiDictProxy

from opus import __version__, auth, callers, look
from opus.callers import identify, origin_matches, sign
from opus.keys import (
    PAGE_SECRET,
    SETTINGS,
    TEMPLATES,
)
from opus.network import attendee_urls  # the same guess the start banner prints
from opus.resources import static_dir, templates_dir
from opus.views import assets

CSRF_COOKIE = "opus_csrf"
FLASH_COOKIE = "opus_flash"

# Scripts only from this server, nothing from outside: the venue may have no internet, and
# a page that loads nothing foreign cannot leak a vote or the host's session to it.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none';"
    " form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_PAGE_MAX_BYTES = 1 << 16  # gzipped on the event loop up to this size (see render)

Form = MultiDictProxy[Any]


def is_host(request: web.Request) -> bool:
    """Whether this browser holds a live host session (callers.py)."""
    return identify(request, session=True).host


# A CSRF cookie made while rendering this request, for the response to set.
_NEW_CSRF = web.RequestKey("new_csrf_cookie", str)


def csrf_token(request: web.Request) -> str:
    """The token every form carries; the page that renders it sets the cookie it rests on."""
    cookie = request.cookies.get(CSRF_COOKIE) or request.get(_NEW_CSRF)
    if not cookie:
        cookie = request[_NEW_CSRF] = secrets.token_urlsafe(18)
    return sign(request, "csrf", cookie)


def same_origin(request: web.Request) -> bool:
    """False for a request a browser says comes from another site's page."""
    # Old browsers and some privacy settings send no Origin: then the CSRF token decides.
    return origin_matches(request) is not False


async def read_form(request: web.Request) -> Form | None:
    """The POSTed form when its CSRF token is right, else None."""
    form = await request.post()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get("csrf")
    if not cookie or not isinstance(given, str) or not same_origin(request):
        return None
    if not hmac.compare_digest(given, sign(request, "csrf", cookie)):
        return None
    return form


def field(form: Form, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


# -- answers ------------------------------------------------------------------------------


def redirect(location: str, message: str | None = None, *, error: bool = False) -> web.Response:
    """303 to a page, with a message it shows once."""
    response = web.Response(status=303, headers={"Location": location})
    if message:
        raw = json.dumps({"m": message[:300], "e": error}).encode()
        response.set_cookie(
            FLASH_COOKIE,
            base64.urlsafe_b64encode(raw).decode(),
            max_age=120,
            httponly=True,
            samesite="Lax",
            path="/",
        )
    return response


def _flash(request: web.Request) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return {"message": str(value["m"]), "error": bool(value["e"])}
    except (ValueError, KeyError, TypeError):
        return None


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """A page from its template, with the CSRF token, the flash message and security headers."""
    flash = _flash(request)
    csrf = csrf_token(request)
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(csrf=csrf, flash=flash, host_session=is_host(request), **context)
    )
    # A page is gzipped on the event loop (about 0.1 ms for the attendee page, a tenth of its
    # rendering), not in a thread as aiohttp does past 4 KB: the hand-off costs more CPU than
    # the compression (bench/pages.py).
    response = web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers=_HEADERS,
        zlib_executor_size=_PAGE_MAX_BYTES,
    )
    if _NEW_CSRF in request:
        response.set_cookie(
            CSRF_COOKIE, request[_NEW_CSRF], httponly=True, samesite="Lax", path="/"
        )
    if flash is not None:
        response.del_cookie(FLASH_COOKIE, path="/")
    return response


def refused(request: web.Request) -> web.Response:
    return render(
        request,
        "error.html",
        status=403,
        title="Form expired",
        message="This form has expired or did not come from this site. Go back, "
        "reload the page and try again.",
    )


def not_found(request: web.Request, message: str) -> web.Response:
    return render(request, "error.html", status=404, title="Not found", message=message)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- shared by the pages --------------------------------------------------------------------


def join_base(request: web.Request) -> str:
    """Where phones reach this server: the configured public URL, else the address this page
    was opened at, unless that is the laptop's own loopback (then the first LAN address)."""
    settings = request.app[SETTINGS]
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = request.url.host or ""
    if host != "localhost" and not host.startswith("127.") and host != "::1":
        return f"{request.scheme}://{request.host}"
    return attendee_urls(settings)[0].rstrip("/")


def qr_svg(content: str, *, error: str = "m") -> str:
    """An inline SVG QR code that scales with its box (made here: no service on the internet)."""
    qr = segno.make(content, error=error)
    return str(qr.svg_inline(omitsize=True, dark="#000", light="#fff", border=2))


def wifi_svg(request: web.Request) -> str | None:
    settings = request.app[SETTINGS]
    if not settings.wifi_ssid:
        return None
    security = None if settings.wifi_security.lower() == "nopass" else settings.wifi_security
    qr = segno.helpers.make_wifi(
        ssid=settings.wifi_ssid, password=settings.wifi_password, security=security
    )
    return str(qr.svg_inline(omitsize=True, dark="#000", light="#fff", border=2))


def now_ms() -> int:
    return int(time.time() * 1000)


# -- setup ----------------------------------------------------------------------------------


def _fmt_time(iso: str | None) -> str:
    if not iso:
        return ""
    stamp = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    today = datetime.now(UTC).astimezone().date()
    return stamp.strftime("%H:%M" if stamp.date() == today else "%d %b %H:%M")


# The words of a date, together: what a later translation of the pages replaces.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATE = "{day} {month} {year}, {time}"
_TODAY = "today, {time}"


def fmt_date(iso: str | None, today: date | None = None) -> str:
    """A date and time as a person writes it, "30 Nov 2026, 14:05" ("today, 14:05"), in the
    box's time zone: the host's laptop, whose clock the host reads too."""
    if not iso:
        return ""
    stamp = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    time_of_day = stamp.strftime("%H:%M")
    if stamp.date() == (today or datetime.now(UTC).astimezone().date()):
        return _TODAY.format(time=time_of_day)
    month = _MONTHS[stamp.month - 1]
    return _DATE.format(day=stamp.day, month=month, year=stamp.year, time=time_of_day)


def environment(static_version: str) -> jinja2.Environment:
    """The templates; `static` makes a static file's URL, with the version that lets browsers
    keep it (assets.py)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = lambda path: f"/static/{path}?v={static_version}"
    env.globals["version"] = __version__
    env.filters["time"] = _fmt_time
    env.filters["date"] = fmt_date
    env.globals["look"] = look.for_page
    return env


def setup(app: web.Application) -> None:
    """The pages' key, templates, the host session's revocations and the static files."""
    secret = auth.load_secret(app[SETTINGS].data_dir)
    app[PAGE_SECRET] = hmac.digest(secret, b"opus pages", "sha256")
    files = assets.StaticFiles(static_dir())
    app[TEMPLATES] = environment(files.version)
    callers.setup(app)
    assets.setup(app, files)
