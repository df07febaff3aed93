"""The `opus` command: serve, and the operator's tools."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import logging
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import click

from opus import __version__
from opus.config import Settings, env_name, from_env, settings_fields

log = logging.getLogger("opus")


# -- logging ------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(
        logging.INFO if settings.access_log else logging.WARNING
    )


# -- where attendees can reach us ---------------------------------------------------------


def lan_addresses() -> list[str]:
    """IPv4 addresses of this machine's network interfaces, loopback last."""
    found: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(
                    sock.fileno(), 0x8915,  # SIOCGIFADDR: the interface's IPv4 address
                    struct.pack("256s", name.encode()[:15]),
                )
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if address not in found:
                found.append(address)
    except (OSError, AttributeError):
        pass
    finally:
        sock.close()
    return sorted(found, key=lambda a: (a.startswith("127."), a))


def attendee_urls(settings: Settings) -> list[str]:
    if settings.public_url:
        return [settings.public_url.rstrip("/") + "/"]
    if settings.host not in ("0.0.0.0", "::", ""):
        return [f"http://{settings.host}:{settings.port}/"]
    addresses = lan_addresses() or ["127.0.0.1"]
    return [f"http://{a}:{settings.port}/" for a in addresses]


# -- commands -----------------------------------------------------------------------------


def _settings_options(fn: Any) -> Any:
    """One click option per setting, each also read from its OPUS_* variable."""
    for f in reversed(settings_fields()):
        kind = f.type if isinstance(f.type, str) else str(f.type)
        flag = "--" + f.name.replace("_", "-")
        if kind.startswith("bool"):
            decl = f"{flag}/--no-{f.name.replace('_', '-')}"
            fn = click.option(decl, f.name, default=None, envvar=env_name(f.name),
                              help=f.metadata["help"], show_envvar=True)(fn)
            continue
        param_type: Any = {
            "int": int, "float": float, "Path": click.Path(path_type=Path)
        }.get(kind.split(" ")[0], str)
        fn = click.option(flag, f.name, type=param_type, default=None, envvar=env_name(f.name),
                          show_envvar=True,
                          help=f"{f.metadata['help']} [default: {f.default}]")(fn)
    return fn


def _settings(options: dict[str, Any]) -> Settings:
    try:
        return from_env({}, **{k: v for k, v in options.items() if v is not None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="opus")
def main() -> None:
    """Opus: live polls for a room full of phones, from one program."""


@main.command()
@_settings_options
def serve(**options: Any) -> None:
    """Serve the API (and, later, the pages) until SIGTERM or Ctrl-C."""
    from aiohttp import web

    from opus import systemd
    from opus.app import create_app
    from opus.auth import load_admin_token

    settings = _settings(options)
    setup_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _, token_path = load_admin_token(settings.data_dir, settings.admin_token)
    app = create_app(settings)
    systemd.attach(app)

    async def announce(_: web.Application) -> None:
        lines = [f"Opus {__version__} is ready on http://{settings.host}:{settings.port}"]
        if token_path is not None:
            lines.append(
                f"Admin token: in {token_path.resolve()}  (cat it, or set OPUS_ADMIN_TOKEN)"
            )
        else:
            lines.append("Admin token: the one set in OPUS_ADMIN_TOKEN / --admin-token")
        lines.append("Attendees reach this box at: " + "  ".join(attendee_urls(settings)))
        lines.append("  (they join with POST /api/v1/join; the attendee pages come in a later"
                     " release)")
        lines.append(f"Data: {settings.data_dir.resolve()}")
        if settings.log_format == "json":
            for line in lines:  # a JSON log stays one JSON object per line
                log.info("%s", line.strip())
        else:
            click.echo("\n".join(lines), err=True)

    app.on_startup.append(announce)
    # The queue and database threads hand results back through the GIL; with the default
    # 5 ms switch interval each hand-back can wait that long behind a busy event loop.
    sys.setswitchinterval(0.001)
    # Every request allocates; with the default thresholds the collector runs every few
    # hundred requests and its full passes over a large ledger stall the loop.
    gc.set_threshold(50_000, 20, 100)
    loop = _new_loop()
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        shutdown_timeout=settings.shutdown_timeout_s,
        backlog=4096,  # a hall joining at once overflows the default 128
        # run_app calls `print` once every socket listens: the moment to tell systemd.
        print=lambda _: systemd.ready(f"Serving on port {settings.port}"),
        loop=loop,
    )
    log.info("stopped cleanly")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# -- the queue ----------------------------------------------------------------------------


@main.group()
def queue() -> None:
    """Look at the vote queue: counts, failed votes, retries."""


def _data_dir_option(fn: Any) -> Any:
    return click.option(
        "--data-dir", type=click.Path(path_type=Path), envvar="OPUS_DATA_DIR",
        default=Path("opus-data"), show_default=True, show_envvar=True,
        help="The server's data folder.",
    )(fn)


def _open_queue(data_dir: Path) -> Any:
    from opus.queue import VoteQueue

    if not (data_dir / "queue.db").exists():
        raise click.ClickException(f"No queue in {data_dir}: is this the server's data dir?")
    return VoteQueue(data_dir / "queue.db")


@queue.command("stats")
@_data_dir_option
def queue_stats(data_dir: Path) -> None:
    """Messages ready, claimed, done and failed."""
    q = _open_queue(data_dir)
    try:
        for name, count in q.stats().items():
            click.echo(f"{name:8} {count}")
    finally:
        q.close()


@queue.command("failed")
@_data_dir_option
def queue_failed(data_dir: Path) -> None:
    """List votes that kept failing (the dead-letter state), with their attempts."""
    from opus.db import Database

    async def attempts() -> dict[str, Any]:
        db = Database(data_dir / "opus.db")
        await db.open()
        try:
            rows = await db.fetchall("SELECT * FROM delivery_failures WHERE dead = 1")
        finally:
            await db.close()
        return {r["message_id"]: r for r in rows}

    q = _open_queue(data_dir)
    try:
        failed = q.failed()
    finally:
        q.close()
    info = asyncio.run(attempts())
    if not failed:
        click.echo("No failed messages.")
        return
    for m in failed:
        row = info.get(m.message_id)
        detail = f"attempts={row['attempts']} error={row['last_error']}" if row else ""
        click.echo(f"{m.message_id} event={m.idempotency_key} {detail}")


@queue.command("retry")
@click.argument("message_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed message.")
@_data_dir_option
def queue_retry(message_id: str | None, retry_all: bool, data_dir: Path) -> None:
    """Put a failed message (or --all) back in the queue; a running server picks it up."""
    from opus.db import Database

    if not message_id and not retry_all:
        raise click.UsageError("Name a MESSAGE_ID (see 'opus queue failed') or pass --all.")
    q = _open_queue(data_dir)
    try:
        moved = q.retry_failed(None if retry_all else message_id)
    finally:
        q.close()

    async def reset() -> None:
        db = Database(data_dir / "opus.db")
        await db.open()
        try:
            with db.write() as conn:
                conn.executemany(
                    "UPDATE delivery_failures SET dead = 0, attempts = 0 WHERE message_id = ?",
                    [(m,) for m in moved],
                )
        finally:
            await db.close()

    if moved:
        asyncio.run(reset())
    click.echo(f"Returned {len(moved)} message(s) to the queue.")
    if message_id and not moved:
        raise click.ClickException(f"No failed message has the id {message_id}.")
