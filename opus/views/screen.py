"""The projector screen: `/screen/{code}` (the join code, QR codes, the live results) and
`/screen`, the newest room's, for a kiosk on the box itself."""

from __future__ import annotations

from aiohttp import web

from opus.i18n import N_
from opus.identity import is_loopback
from opus.keys import (
    ADDRESSES,
    ROOMS,
    SETTINGS,
)
from opus.views.attendee import room_of
from opus.views.kit import (
    gettext,
    is_host,
    join_base,
    not_found,
    now_ms,
    page_language,
    qr_svg,
    render,
    wifi_svg,
)

routes = web.RouteTableDef()


# -- the projector screen -------------------------------------------------------------------


@routes.get("/screen")
async def newest_screen(request: web.Request) -> web.Response:
    """The newest room's screen: what a kiosk opens at boot, before anyone types a code. Only
    for the box itself (the kiosk) and the host: it would tell anyone on the Wi-Fi the newest
    room's code, passcode-protected or not."""
    if not (is_loopback(request.app[ADDRESSES].of(request)) or is_host(request)):
        return render(
            request,
            "error.html",
            status=403,
            title=gettext(request, N_("Screen")),
            message=gettext(
                request,
                N_(
                    "Open the screen from the host console, or type the room's code:"
                    " /screen/ROOM-CODE."
                ),
            ),
        )
    rooms = await request.app[ROOMS].list_rooms()
    if rooms:
        raise web.HTTPFound(f"/screen/{rooms[0]['code']}")
    page = render(
        request,
        "error.html",
        title=gettext(request, N_("Waiting for a room")),
        message=gettext(
            request, N_("This screen shows the newest room once the host creates one.")
        ),
    )
    page.headers["Refresh"] = "5"  # looks again by itself; no script needed
    return page


@routes.get("/screen/{code}")
async def screen(request: web.Request) -> web.Response:
    """Anyone may open it (it shows what attendees see); in a browser with the host's session
    it watches through the host's socket, so it can also reveal results hidden until close."""
    room = await room_of(request)
    if room is None:
        return not_found(request, gettext(request, N_("No room has this code.")))
    join_url = f"{join_base(request)}/j/{room['code']}"
    host = is_host(request)
    live = f"/host/live?room={room['id']}" if host else f"/ws?room={room['code']}"
    # The projector speaks the room's language, whatever the browser it runs in chose.
    lang = page_language(request, room.get("language"), phone=False)
    return render(
        request,
        "screen.html",
        lang=lang,
        title=room["title"],
        room=room,
        join_url=join_url,
        join_display=join_url.split("://", 1)[-1],
        qr=qr_svg(join_url),
        wifi=wifi_svg(request),
        wifi_ssid=request.app[SETTINGS].wifi_ssid,
        boot={
            "room": room["code"],
            "room_id": room["id"],
            "live": live,
            "server_now": now_ms(),
            "host": host,
            "look": [room["theme"], room["accent"]],
        },
    )


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
