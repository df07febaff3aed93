"""The `opus` command: serve, and the operator's tools."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from opus import __version__, doctor, files, lock, network
from opus.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    ConfigError,
    Resolved,
    Settings,
    config_file,
    env_name,
    resolve,
    settings_fields,
)

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


# -- commands -----------------------------------------------------------------------------


def _settings_options(fn: Any) -> Any:
    """One click option per setting, each also read from its OPUS_* variable."""
    for f in reversed(settings_fields()):
        kind = f.type if isinstance(f.type, str) else str(f.type)
        flag = "--" + f.name.replace("_", "-")
        if kind.startswith("bool"):
            decl = f"{flag}/--no-{f.name.replace('_', '-')}"
            fn = click.option(
                decl,
                f.name,
                default=None,
                envvar=env_name(f.name),
                help=f.metadata["help"],
                show_envvar=True,
            )(fn)
            continue
        param_type: Any = {"int": int, "float": float, "Path": click.Path(path_type=Path)}.get(
            kind.split(" ")[0], str
        )
        fn = click.option(
            flag,
            f.name,
            type=param_type,
            default=None,
            envvar=env_name(f.name),
            show_envvar=True,
            help=f"{f.metadata['help']} [default: {f.default}]",
        )(fn)
    return _config_option(fn)


def _config_option(fn: Any) -> Any:
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar=CONFIG_ENV,
        show_envvar=True,
        help=f"Settings file (TOML; keys are the setting names, as in opus config show)."
        f" [default: {DEFAULT_CONFIG_FILE} when it exists]",
    )(fn)


class SettingsError(click.ClickException):
    """A setting that cannot be used: one line, and exit status 2 like click's usage errors."""

    exit_code = 2


class _SettingsCommand(click.Command):
    """A command whose bad flag or OPUS_* value is reported in one line, like a bad file."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.BadParameter as exc:
            raise SettingsError(exc.format_message()) from None


def _resolve(options: dict[str, Any], ctx: click.Context | None = None) -> Resolved:
    """The effective settings: flags, then OPUS_* variables, then the settings file, then the
    defaults. Without a context every given option counts as a flag (click has already put
    an option's variable into it, so the order holds either way)."""
    options = dict(options)
    given = options.pop("config", None)
    flags = {
        name: value
        for name, value in options.items()
        if value is not None
        and (ctx is None or ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE)
    }
    try:
        return resolve(config_file(given), os.environ, flags)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None


def _settings(options: dict[str, Any], ctx: click.Context | None = None) -> Settings:
    return _resolve(options, ctx).settings


@click.group()
@click.version_option(__version__, prog_name="opus")
def main() -> None:
    """Opus: live polls for a room full of phones, from one program."""


@main.command(cls=_SettingsCommand)
@_settings_options
def serve(**options: Any) -> None:
    """Serve the API, the pages and the WebSockets until SIGTERM or Ctrl-C.

    Each setting comes from, strongest first: its command-line flag, its OPUS_* environment
    variable, the settings file (--config FILE or OPUS_CONFIG; /etc/opus/opus.toml when it
    exists), the default. 'opus config show' prints what is in effect and why.
    """
    from aiohttp import web

    from opus import systemd
    from opus.app import create_app
    from opus.auth import load_admin_token

    resolved = _resolve(options, click.get_current_context())
    settings = resolved.settings
    if settings.venue is not None:
        from opus import venue as venues

        try:
            box = venues.load(settings.venue).box(settings.box)
        except venues.VenueError as exc:
            raise click.ClickException(str(exc)) from None
        if resolved.sources["port"] == "default":  # the venue file's port for this box
            settings = settings.replace(port=box.http_port)
    setup_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    running = lock.holder(settings.data_dir)
    if running is not None:
        raise click.ClickException(
            f"{settings.data_dir} is already served by a running Opus"
            f" ({running.describe()}): stop it, or use another data dir."
        )
    # Each phone's connection, and each screen's and phone's socket, is an open file.
    limit = network.raise_open_files()
    if limit < network.HALL:
        log.warning(
            "open files are limited to %d: fewer connections than a hall may open at"
            " once (raise LimitNOFILE= or ulimit -Hn)",
            limit,
        )
    try:
        sockets = network.listening_sockets(settings.host, settings.port)  # a taken port: now
    except network.CannotListen as exc:
        raise click.ClickException(str(exc)) from None
    try:
        _, token_path = load_admin_token(settings.data_dir, settings.admin_token)
        app = create_app(settings)
    except files.DamagedFile as exc:
        raise click.ClickException(str(exc)) from None
    systemd.attach(app)

    async def announce(_: web.Application) -> None:
        lines = [f"Opus {__version__} is ready on http://{settings.host}:{settings.port}"]
        if token_path is not None:
            lines.append(
                f"Admin token: in {token_path.resolve()}  (cat it, or set OPUS_ADMIN_TOKEN)"
            )
        else:
            lines.append("Admin token: the one set in OPUS_ADMIN_TOKEN / --admin-token")
        lines.append("Attendees reach this box at: " + "  ".join(network.attendee_urls(settings)))
        lines.append(
            "  (they open it and type the room code; the projector page"
            " /screen/<code> shows the code and a QR code)"
        )
        lines.append(
            f"Host console: http://localhost:{settings.port}/host  (log in with the admin token)"
        )
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
        sock=sockets,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        shutdown_timeout=settings.shutdown_timeout_s,
        backlog=network.BACKLOG,  # a hall joining at once overflows the default 128
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
    """--data-dir and --config, resolved as `opus serve` does (so OPUS_DATA_DIR and the
    settings file name the same folder the server uses)."""
    fn = click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        envvar=env_name("data_dir"),
        default=None,
        show_envvar=True,
        help="The server's data folder. [default: the settings file's, else opus-data]",
    )(fn)
    return _config_option(fn)


def _operator(data_dir: Path | None, config: Path | None) -> Resolved:
    return _resolve({"data_dir": data_dir, "config": config}, click.get_current_context())


def _open_queue(data_dir: Path) -> Any:
    from opus.queue import VoteQueue

    if not (data_dir / "queue.db").exists():
        raise click.ClickException(f"No queue in {data_dir}: is this the server's data dir?")
    return VoteQueue(data_dir / "queue.db")


@queue.command("stats")
@_data_dir_option
def queue_stats(data_dir: Path | None, config: Path | None) -> None:
    """Messages ready, claimed, done and failed."""
    q = _open_queue(_operator(data_dir, config).settings.data_dir)
    try:
        for name, count in q.stats().items():
            click.echo(f"{name:8} {count}")
    finally:
        q.close()


@queue.command("failed")
@_data_dir_option
def queue_failed(data_dir: Path | None, config: Path | None) -> None:
    """List votes that kept failing (the dead-letter state), with their attempts."""
    from opus.db import Database

    data_dir = _operator(data_dir, config).settings.data_dir

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
def queue_retry(
    message_id: str | None, retry_all: bool, data_dir: Path | None, config: Path | None
) -> None:
    """Put a failed message (or --all) back in the queue; a running server picks it up."""
    from opus.db import Database

    data_dir = _operator(data_dir, config).settings.data_dir

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


@queue.command("prune")
@click.option(
    "--older-than",
    default="0s",
    show_default=True,
    help="Only votes applied longer ago than this: 90s, 30m, 12h or 7d.",
)
@_data_dir_option
def queue_prune(older_than: str, data_dir: Path | None, config: Path | None) -> None:
    """Delete applied (done) votes from the queue; the database keeps every vote. Failed votes
    stay. A running server also does this every --prune-interval-s."""
    seconds = _duration(older_than)
    q = _open_queue(_operator(data_dir, config).settings.data_dir)
    total = 0
    try:
        while pruned := q.prune(5000, seconds):
            total += pruned
    finally:
        q.close()
    click.echo(f"Pruned {total} applied message(s) from the queue.")


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a duration such as 90s, 30m, 12h or 7d", param_hint="--older-than"
        ) from None


# -- settings -----------------------------------------------------------------------------

_SECRET_SETTINGS = {"admin_token", "wifi_password"}


@main.group("config")
def config_group() -> None:
    """The settings in effect, and where each comes from."""


@config_group.command("show", cls=_SettingsCommand)
@_settings_options
def config_show(**options: Any) -> None:
    """Print every setting `opus serve` would use with these options, and where it came from:
    a flag, an OPUS_* variable, the settings file or the default. Secrets are masked."""
    resolved = _resolve(options, click.get_current_context())
    if resolved.config_file is not None:
        click.echo(f"Settings file: {resolved.config_file}")
    else:
        click.echo(
            f"Settings file: none (--config FILE or {CONFIG_ENV};"
            f" {DEFAULT_CONFIG_FILE} when it exists)"
        )
    width = max(len(f.name) for f in settings_fields())
    for f in settings_fields():
        value = getattr(resolved.settings, f.name)
        if value is None:
            shown = "(unset)"
        elif f.name in _SECRET_SETTINGS:
            shown = f"******** ({len(str(value))} characters)"
        else:
            shown = str(value)
        click.echo(f"{f.name:<{width}}  {shown:<28}  {resolved.sources[f.name]}")


# -- the operator's tools -----------------------------------------------------------------


@main.command("doctor", cls=_SettingsCommand)
@click.option(
    "--min-free-mb",
    type=int,
    default=500,
    show_default=True,
    help="Warn when the data dir's filesystem has less free space than this.",
)
@_settings_options
def doctor_command(min_free_mb: int, **options: Any) -> None:
    """Check this box before the audience arrives: the data dir, free disk, the port, the
    address attendees join at, the clock, the database and the queue. Takes the same options
    as `opus serve`. One line per check (OK, WARN or FAIL); exit status 1 when one FAILs."""
    settings = _settings(options, click.get_current_context())
    checks = doctor.run(settings, min_free_mb)
    for check in checks:
        click.echo(check.line())
    failed = sum(c.status == doctor.FAIL for c in checks)
    warned = sum(c.status == doctor.WARN for c in checks)
    click.echo(f"{failed} failed, {warned} warnings, {len(checks) - failed - warned} OK")
    if failed:
        raise click.exceptions.Exit(1)


@main.command("backup")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@_data_dir_option
def backup_command(file: Path, data_dir: Path | None, config: Path | None) -> None:
    """Copy the data dir (votes, queue, rooms, tokens) into FILE, a .tar.gz. Safe while the
    server is serving and votes are coming in: every vote acknowledged before it starts is
    in the copy."""
    from opus import backup

    settings = _operator(data_dir, config).settings
    try:
        summary = backup.create(settings.data_dir, file)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    size = file.stat().st_size / 2**20
    click.echo(f"Backed up {settings.data_dir} to {file} ({size:.1f} MB): {summary.describe()}.")


@main.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_data_dir_option
def restore_command(file: Path, data_dir: Path | None, config: Path | None) -> None:
    """Put a backup made by `opus backup` in place in the data dir. Refused while a server
    runs on that data dir. The files it replaces are moved into a pre-restore-<time> folder
    inside the data dir, never deleted."""
    from opus import backup

    settings = _operator(data_dir, config).settings
    try:
        summary, aside = backup.restore(file, settings.data_dir)
    except lock.DataDirLocked as exc:
        raise click.ClickException(
            f"{exc}: stop it first (systemctl stop opus, or Ctrl-C in its terminal), then restore."
        ) from None
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"Restored the backup of {summary.created_at} into {settings.data_dir}:"
        f" {summary.describe()}."
    )
    if aside is not None:
        click.echo(f"The files it replaced are in {aside}.")
    if summary.queued:
        click.echo(f"The server counts the {summary.queued} waiting votes when it starts.")


@main.command("export")
@click.argument("room")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="json", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file instead of printing.",
)
@_data_dir_option
def export_command(
    room: str, fmt: str, output: Path | None, data_dir: Path | None, config: Path | None
) -> None:
    """Export ROOM (its id or its join code): every poll with its results and counted
    votes, as JSON or CSV. Works while the server runs."""
    settings = _operator(data_dir, config).settings
    if not settings.db_path.is_file():
        raise click.ClickException(
            f"No database in {settings.data_dir}: is this the server's data dir?"
        )
    text = asyncio.run(_export_room(settings, room, fmt))
    if output is None:
        click.echo(text, nl=False)
        return
    files.write_whole(output, text.encode(), mode=0o644)
    click.echo(f"Wrote {output}", err=True)


async def _export_room(settings: Settings, room: str, fmt: str) -> str:
    from opus import export
    from opus.catalog import Catalog
    from opus.db import Database
    from opus.errors import NotFound
    from opus.rooms import Rooms

    db = Database(settings.db_path)
    await db.open()
    try:
        catalog = Catalog()
        await catalog.load(db)
        rooms = Rooms(db, catalog, "opus-cli", lambda: None)
        try:
            room_id = await export.find_room(rooms, room)
        except NotFound:
            raise click.ClickException(f"No room has the id or code {room!r}.") from None
        return export.render(await export.room_export(rooms, room_id), fmt)
    finally:
        await db.close()


@main.group()
def admin() -> None:
    """The host's admin token."""


@admin.command("token")
@click.option("--rotate", is_flag=True, help="Replace the token in the data dir with a new one.")
@_data_dir_option
def admin_token(rotate: bool, data_dir: Path | None, config: Path | None) -> None:
    """Print the admin token (on standard output; where it lives on standard error), or
    --rotate it. A running server keeps the token it started with: restart it after a
    rotation (nothing is lost; the old token stops working then)."""
    resolved = _operator(data_dir, config)
    settings = resolved.settings
    path = settings.data_dir / "admin_token"
    configured = settings.admin_token
    origin = resolved.sources["admin_token"]
    if not rotate:
        if configured:
            click.echo(f"The admin token comes from {origin}.", err=True)
            click.echo(configured)
        elif path.is_file():
            click.echo(f"Admin token file: {path.absolute()}", err=True)
            click.echo(path.read_text().strip())
        else:
            raise click.ClickException(
                f"No admin token yet: the server makes {path} on its"
                " first start (or run opus admin token --rotate)."
            )
        return
    token = secrets.token_urlsafe(24)
    files.write_whole(path, (token + "\n").encode())
    click.echo(
        f"Wrote a new admin token to {path.absolute()} (readable by its owner only).", err=True
    )
    if configured:
        click.echo(
            f"Note: the server takes its token from {origin}, so this file has no"
            " effect until that is removed.",
            err=True,
        )
    running = lock.holder(settings.data_dir)
    if running is not None:
        click.echo(
            f"The server running on this data dir ({running.describe()}) accepts the"
            " old token until it restarts: systemctl restart opus, or stop and start"
            " opus serve. Nothing is lost in a restart.",
            err=True,
        )
    click.echo(token)


@main.group()
def venue() -> None:
    """Several boxes, one venue: every vote cast at any box counts at every box."""


@venue.command("init")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder to write venue.toml in.",
)
@click.option(
    "--box",
    "boxes",
    multiple=True,
    required=True,
    metavar="NAME=HOST:HTTP_PORT:NATS_PORT",
    help="A box of the venue (one --box each; at least two). Its NATS server also takes"
    " NATS_PORT+1, on loopback, for monitoring.",
)
def venue_init(out: Path, boxes: tuple[str, ...]) -> None:
    """Write DIR/venue.toml: the boxes, their addresses and a fresh venue secret. Copy that
    one file to every box, and run `opus serve --venue venue.toml --box NAME` there."""
    from opus import venue as venues

    try:
        made = venues.create([venues.parse_box(spec) for spec in boxes])
    except venues.VenueError as exc:
        raise click.ClickException(str(exc)) from None
    path = out / "venue.toml"
    if path.exists():
        raise click.ClickException(
            f"{path} exists: a new one would make a new venue secret. Remove it first."
        )
    venues.write(made, out)
    click.echo(f"Wrote {path} (readable by its owner only: it holds the venue's secret).")
    click.echo("Copy it to every box, then start each one:")
    for box in made.boxes.values():
        click.echo(f"  on {box.host}:  opus serve --venue venue.toml --box {box.name}")
    click.echo(f"Admin token at every box: {made.admin_token}")


@venue.command("nats-config")
@click.option(
    "--venue",
    "venue_file",
    envvar="OPUS_VENUE",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The venue file (written by 'opus venue init').",
)
@click.option("--box", "box_name", envvar="OPUS_BOX", required=True, help="The box's name.")
@click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for the server's JetStream store.",
)
def venue_nats_config(venue_file: Path, box_name: str, store: Path) -> None:
    """Print the configuration of the NATS server that box NAME runs, for a server you run
    yourself (nats-server -c FILE; then opus serve ... --nats-url nats://127.0.0.1:PORT). It
    holds the password derived from the venue secret: keep it readable by its owner only."""
    from opus import natsbox
    from opus import venue as venues

    try:
        made = venues.load(venue_file)
        box = made.box(box_name)
    except venues.VenueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(natsbox.config(made, box, store.absolute(), "0.0.0.0"))


@venue.command("status", cls=_SettingsCommand)
@_settings_options
def venue_status(**options: Any) -> None:
    """Ask this box's running server which boxes it reaches, and how many of their events
    it has not applied yet."""
    import urllib.error
    import urllib.request

    settings = _settings(options, click.get_current_context())
    if settings.venue is None:
        raise click.ClickException("Name the venue: --venue FILE --box NAME (or OPUS_VENUE).")
    from opus import venue as venues

    try:
        made = venues.load(settings.venue)
        box = made.box(settings.box)
    except venues.VenueError as exc:
        raise click.ClickException(str(exc)) from None
    request = urllib.request.Request(
        f"http://127.0.0.1:{box.http_port}/api/v1/venue",
        headers={"Authorization": f"Bearer {settings.admin_token or made.admin_token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            status = json.loads(answer.read())
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(
            f"Box {box.name} does not answer on port {box.http_port} ({exc}): is it running?"
        ) from None
    click.echo(f"Box {status['box']}")
    for peer in status["peers"]:
        state = "reachable" if peer["reachable"] else "UNREACHABLE"
        click.echo(f"  {peer['box']}: {state}, {peer['behind']} of its events not applied yet")
