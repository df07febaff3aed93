"""Talking to systemd when it runs Opus as a `Type=notify` service: READY=1 once the server
answers, WATCHDOG=1 pings while the event loop is alive, STOPPING=1 when SIGTERM starts the
drain, STATUS= lines for `systemctl status`. The protocol is one datagram per message to the
unix socket named in $NOTIFY_SOCKET (sd_notify(3)); without that variable nothing is sent."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

log = logging.getLogger(__name__)


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `fields` ("READY=1", "STATUS=...") as one message; False when not under systemd.

    It never blocks the caller, the event loop: a datagram socket whose reader is behind
    (systemd busy, or stopped) makes a blocking send wait until the reader catches up. A
    watchdog ping that finds the queue full is dropped (the next comes soon); any other
    message is handed to a thread that waits for room."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    if address.startswith("@"):  # an abstract socket: its name starts with a NUL byte
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("ignoring NOTIFY_SOCKET=%r: not a unix socket path", address)
        return False
    message = "\n".join(fields).encode()
    try:
        _send(message, address, wait=False)
    except BlockingIOError:
        _behind(environ["NOTIFY_SOCKET"])
        if fields != ("WATCHDOG=1",):
            threading.Thread(
                target=_send_later, args=(message, address), name="opus-notify", daemon=True
            ).start()
        return False
    except OSError as exc:
        # systemd may be restarting or gone: serving matters more than telling it so.
        log.warning("could not notify systemd at %s: %s", environ["NOTIFY_SOCKET"], exc)
        return False
    _caught_up()
    return True


_SEND_LATER_TIMEOUT_S = 30.0
_lagging = False


def _send(message: bytes, address: str, *, wait: bool) -> None:
    """One datagram; `wait`: for room in a full queue (up to 30 s), else BlockingIOError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        if wait:
            sock.settimeout(_SEND_LATER_TIMEOUT_S)
        sock.sendto(message, 0 if wait else socket.MSG_DONTWAIT, address)


def _send_later(message: bytes, address: str) -> None:
    try:
        _send(message, address, wait=True)
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)


def _behind(name: str) -> None:
    """Said once per stretch: a full queue drops a ping every few seconds."""
    global _lagging
    if not _lagging:
        _lagging = True
        log.warning("systemd is not reading %s: watchdog pings are dropped meanwhile", name)


def _caught_up() -> None:
    global _lagging
    if _lagging:
        _lagging = False
        log.info("systemd reads its notify socket again")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when no watchdog
    is asked for, or when it is meant for another process."""
    environ = os.environ if environ is None else environ
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    # systemd names its main process. In the single binary that is PyInstaller's bootloader,
    # which runs Opus as its one child: the child pings on the bootloader's behalf (the unit
    # says NotifyAccess=all so that systemd takes the child's messages).
    if pid and pid not in (str(os.getpid()), str(os.getppid())):
        return None
    return usec / 1_000_000 / 2


async def _watchdog(interval: float) -> None:
    """A ping from the event loop itself: a stalled or hung loop stops the pings, and systemd
    restarts the service."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def attach(app: web.Application) -> None:
    """Watchdog pings for the application's whole life (recovery at start and the drain at
    stop included), STOPPING=1 as soon as shutdown starts. READY=1 is `ready()`, sent by whoever
    knows the sockets are listening."""

    async def pinging(_: web.Application) -> AsyncIterator[None]:
        interval = watchdog_interval()
        task = None
        if interval is not None:
            task = asyncio.create_task(_watchdog(interval), name="opus-systemd-watchdog")
        notify("STATUS=Starting: recovering queued votes")
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stopping(_: web.Application) -> None:
        notify("STOPPING=1", "STATUS=Stopping: finishing requests and votes in flight")

    app.cleanup_ctx.insert(0, pinging)  # first in, last out: pings cover every other resource
    app.on_shutdown.insert(0, stopping)


def ready(status: str) -> None:
    """READY=1 with a status line: send once the server answers requests."""
    notify("READY=1", f"STATUS={status}")
