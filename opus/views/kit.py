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
from typing import Any

import segno
import segno.helpers
from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from opus import auth, callers, i18n
from opus.callers import identify, origin_matches, sign
from opus.i18n import N_
from opus.keys import (
    PAGE_SECRET,
    SETTINGS,
    TEMPLATES,
)
from opus.network import attendee_urls  # the same guess the start banner prints
from opus.resources import static_dir
from opus.views import assets
from opus.views.templates import Templates

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
    picked = request.query.get("lang")
    room = context.get("room")
    room_language = room.get("language") if isinstance(room, dict) else None
    lang = context.pop("lang", None) or page_language(request, room_language)
    html = (
        request.app[TEMPLATES]
        .get(lang)
        .get_template(template)
        .render(
            csrf=csrf,
            flash=flash,
            host_session=is_host(request),
            language_url=_language_url(request, context.get("here")),
            **context,
        )
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
    if picked in i18n.LANGUAGES:  # the language links: this phone's choice, kept a year
        response.set_cookie(
            i18n.COOKIE, picked, max_age=365 * 86400, httponly=True, samesite="Lax", path="/"
        )
    return response


def _language_url(request: web.Request, here: str | None) -> Callable[[str], str]:
    """A language link's address: this page (or `here`, the page a form shown again belongs
    to) with its query kept, `?next=` on the login page included, and `lang` set."""
    base = URL(here) if here else request.rel_url

    def url(code: str) -> str:
        return str(base.update_query(lang=code))

    return url


def page_language(
    request: web.Request, room_language: str | None = None, *, phone: bool = True
) -> str:
    """The language this request's page speaks (i18n.choose): `?lang=` (a language link),
    the phone's cookie, the room's language, the browser's."""
    picked = request.query.get("lang")
    cookie = picked if picked in i18n.LANGUAGES else request.cookies.get(i18n.COOKIE)
    accept = request.headers.get("Accept-Language", "")
    return i18n.choose(cookie, room_language, accept, phone=phone)


def gettext(request: web.Request, message: str, **values: Any) -> str:
    """A message of the server's (a flash message, an error page) in the page's language."""
    text = i18n.translations(page_language(request)).gettext(message)
    return text % values if values else text


def refused(request: web.Request) -> web.Response:
    return render(
        request,
        "error.html",
        status=403,
        title=gettext(request, N_("Form expired")),
        message=gettext(
            request,
            N_(
                "This form has expired or did not come from this site. Go back, reload the page"
                " and try again."
            ),
        ),
    )


def not_found(request: web.Request, message: str) -> web.Response:
    """A 404 page; `message` is said in the page's language already (`gettext`)."""
    title = gettext(request, N_("Not found"))
    return render(request, "error.html", status=404, title=title, message=message)


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


def setup(app: web.Application) -> None:
    """The pages' key, templates, the host session's revocations and the static files."""
    secret = auth.load_secret(app[SETTINGS].data_dir)
    app[PAGE_SECRET] = hmac.digest(secret, b"opus pages", "sha256")
    files = assets.StaticFiles(static_dir())
    app[TEMPLATES] = Templates(files.version)
    callers.setup(app)
    assets.setup(app, files)
