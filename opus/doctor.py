"""`opus doctor`: what to check on the box before the audience arrives. Each check gives one
line, OK, WARN or FAIL; a FAIL is something that stops Opus from serving or loses votes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opus import db, lock, natsbox, network, venue
from opus.config import Settings
from opus.events import OBSERVE_AHEAD_MS
from opus.network import attendee_urls
from opus.queue import VoteQueue

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MIN_YEAR = 2024
FAIL_FREE_MB = 50  # below this SQLite soon answers "database or disk is full"
CLOCK_SLACK_S = 60
BIG_WAL_MB = 256  # a WAL this large means checkpoints are being starved
# A hall that votes in the same second opens this many connections at once; each one, and each
# WebSocket, is an open file of the server's.


@dataclass(frozen=True, slots=True)
class Check:
    status: str
    name: str
    message: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<10} {self.message}"


def run(settings: Settings, min_free_mb: int = 500) -> list[Check]:
    """Every check, in the order an operator would fix things."""
    data_dir = settings.data_dir
    running = lock.holder(data_dir) if data_dir.is_dir() else None
    return [
        check_data_dir(data_dir),
        check_disk(data_dir, min_free_mb),
        check_port(settings, running),
        check_network(settings),
        check_limits(),
        *check_clock_and_database(settings.db_path),
        check_queue(settings.queue_path, running),
        *check_venue(settings),
    ]


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_data_dir(data_dir: Path) -> Check:
    name = "data dir"
    if data_dir.exists() and not data_dir.is_dir():
        return Check(FAIL, name, f"{data_dir} is a file, not a folder")
    if not data_dir.exists():
        parent = _existing_ancestor(data_dir)
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Check(OK, name, f"{data_dir} does not exist yet; the server creates it")
        return Check(FAIL, name, f"{data_dir} does not exist and {parent} is not writable")
    probe = data_dir / f".opus-doctor-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        return Check(FAIL, name, f"{data_dir} is not writable ({exc.strerror})")
    return Check(OK, name, f"{data_dir.absolute()} is writable")


def check_disk(data_dir: Path, min_free_mb: int) -> Check:
    where = _existing_ancestor(data_dir)
    usage = shutil.disk_usage(where)
    free_mb = usage.free // 2**20
    message = f"{free_mb:,} MB free on the data dir's filesystem"
    if free_mb < FAIL_FREE_MB:
        return Check(FAIL, "disk", message + "; votes will be refused (503 storage_full)")
    if free_mb < min_free_mb:
        return Check(WARN, "disk", message + f" (less than {min_free_mb} MB)")
    return Check(OK, "disk", message)


def _healthz(host: str, port: int) -> dict[str, object] | None:
    """The answer of an Opus on this port, or None when what listens there is not Opus."""
    probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        with urllib.request.urlopen(f"http://{probe}:{port}/healthz", timeout=2) as answer:
            body = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("status") == "ok" else None


def check_port(settings: Settings, running: lock.Holder | None) -> Check:
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
            return Check(OK, "port", f"{host}:{port} is free")
        except OSError as exc:
            problem = exc
    if problem.errno == errno.EACCES:
        return Check(FAIL, "port", f"port {port} needs root or CAP_NET_BIND_SERVICE")
    if problem.errno != errno.EADDRINUSE:
        return Check(FAIL, "port", f"cannot listen on {host}:{port} ({problem.strerror})")
    answer = _healthz(host, port)
    if answer is None:
        return Check(FAIL, "port", f"port {port} is taken by another program")
    if running is not None and running.port == port:
        return Check(
            OK,
            "port",
            f"port {port} is served by the Opus running on this data dir ({running.describe()})",
        )
    return Check(
        WARN,
        "port",
        f"port {port} is served by another Opus (node"
        f" {answer.get('node_id')}); this data dir's server cannot use it",
    )


def check_network(settings: Settings) -> Check:
    urls = attendee_urls(settings)
    reachable = [u for u in urls if "//127." not in u and "//localhost" not in u]
    if not reachable:
        return Check(
            WARN,
            "network",
            "no network address besides loopback: phones cannot"
            " reach this box (join the venue's Wi-Fi)",
        )
    return Check(OK, "network", "attendees join at " + "  ".join(reachable))


def check_limits() -> Check:
    """Enough open files for a hall of phones and their screens, and a kernel accept queue
    that does not drop the handshakes of a hall voting at once."""
    _, hard = network.open_files_limit()
    queue = network.somaxconn()
    message = (
        f"open files up to {hard:,} (serve raises its limit to this); accept queue"
        f" {queue:,} per listening socket (net.core.somaxconn)"
    )
    if hard < network.HALL:
        return Check(
            WARN,
            "limits",
            message + f": fewer than {network.HALL:,} connections at once;"
            " raise the hard limit (LimitNOFILE= in the service, or ulimit -Hn)",
        )
    if queue < 1024:
        return Check(
            WARN,
            "limits",
            message + ": a hall connecting at once overflows it;"
            f" sysctl -w net.core.somaxconn={network.BACKLOG}",
        )
    return Check(OK, "limits", message)


def check_clock_and_database(path: Path) -> list[Check]:
    now = datetime.now(UTC)
    if now.year < MIN_YEAR:
        clock = Check(
            FAIL,
            "clock",
            f"the clock says {now:%Y-%m-%d %H:%M}; set it (NTP, or date -s) before serving",
        )
    else:
        clock = Check(OK, "clock", f"{now:%Y-%m-%d %H:%M:%S} UTC")
    if not path.is_file():
        return [clock, Check(OK, "database", "none yet; the server creates it")]
    try:
        with db.open_read_only(path) as conn:
            facts = _database_facts(conn)
    except sqlite3.DatabaseError as exc:
        return [clock, Check(FAIL, "database", f"{path} cannot be read: {exc}")]
    newest = facts["newest"]
    if clock.status == OK and newest:
        behind = datetime.fromisoformat(str(newest)).timestamp() - now.timestamp()
        if behind > CLOCK_SLACK_S:
            clock = Check(
                FAIL,
                "clock",
                f"the clock ({now:%Y-%m-%d %H:%M:%S}) is behind the"
                f" newest record ({newest}): set it before serving",
            )
    return [clock, _database_check(path, facts)]


def _database_facts(conn: sqlite3.Connection) -> dict[str, object]:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
    newest = None
    if version >= 1:
        (newest,) = conn.execute(
            "SELECT MAX(t) FROM (SELECT MAX(created_at) AS t FROM rooms"
            " UNION ALL SELECT MAX(created_at) FROM polls"
            " UNION ALL SELECT MAX(counted_at) FROM votes"
            " UNION ALL SELECT MAX(created_at) FROM outbox)"
        ).fetchone()
    return {"version": version, "mode": mode, "verdict": verdict, "newest": newest}


def _database_check(path: Path, facts: dict[str, object]) -> Check:
    version, latest = int(str(facts["version"])), db.latest_version()
    wal = Path(f"{path}-wal")
    wal_mb = wal.stat().st_size / 2**20 if wal.exists() else 0.0
    message = (
        f"schema {version}, journal {facts['mode']}, WAL {wal_mb:.1f} MB,"
        f" integrity {facts['verdict']}"
    )
    if facts["verdict"] != "ok":
        return Check(FAIL, "database", message + " (restore a backup: opus restore FILE)")
    if version > latest:
        return Check(FAIL, "database", message + f"; newer than this Opus (schema {latest})")
    if wal_mb > BIG_WAL_MB:
        return Check(WARN, "database", message + "; the WAL is large (a reader held it?)")
    if version < latest:
        message += f"; migrated to {latest} on the next start"
    return Check(OK, "database", message)


def check_queue(path: Path, running: lock.Holder | None) -> Check:
    if not path.is_file():
        return Check(OK, "queue", "none yet; the server creates it")
    try:
        queue = VoteQueue(path)
    except sqlite3.DatabaseError as exc:
        return Check(FAIL, "queue", f"{path} cannot be opened: {exc}")
    try:
        stats = queue.stats()
    finally:
        queue.close()
    waiting = stats["ready"] + stats["claimed"]
    message = f"{waiting} waiting, {stats['done']} done, {stats['failed']} failed"
    if stats["failed"]:
        return Check(WARN, "queue", message + " (see: opus queue failed; opus queue retry)")
    if waiting and running is None:
        message += " (counted when the server starts)"
    return Check(OK, "queue", message)


NATS_MINIMUM = (2, 10)  # JetStream's per-message dedup and sync settings Opus relies on


def check_venue(settings: Settings) -> list[Check]:
    """In a venue: the venue file, the NATS server Opus runs (its version and sync setting),
    and each peer: its NATS port reachable, its clock close to this box's."""
    if settings.venue is None:
        return []
    try:
        made = venue.load(settings.venue)
        box = made.box(settings.box)
    except venue.VenueError as exc:
        return [Check(FAIL, "venue", str(exc))]
    checks = [Check(OK, "venue", f"box {box.name} of {len(made.boxes)} ({settings.venue})")]
    if settings.nats_url is None:
        checks.append(_check_nats_binary())
        conf = settings.data_dir / "nats" / "nats.conf"
        if conf.is_file():
            synced = json.loads(conf.read_text()).get("jetstream", {}).get("sync_interval")
            checks.append(
                Check(OK, "nats sync", "every message is on disk before it is acknowledged")
                if synced == "always"
                else Check(WARN, "nats sync", f"sync_interval is {synced!r}, not 'always'")
            )
    for peer in made.peers(box.name):
        checks.append(_check_peer(peer))
    return checks


def _check_nats_binary() -> Check:
    import subprocess

    try:
        path = natsbox.binary()
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10)
    except Exception as exc:
        return Check(FAIL, "nats", str(exc))
    text = out.stdout.strip()
    try:
        version = tuple(int(x) for x in text.rsplit("v", 1)[1].split(".")[:2])
    except (IndexError, ValueError):
        return Check(WARN, "nats", f"{path}: cannot tell its version ({text!r})")
    if version < NATS_MINIMUM:
        return Check(FAIL, "nats", f"{text} at {path} is too old (2.10 or newer is needed)")
    return Check(OK, "nats", f"{text} ({path})")


def _check_peer(peer: venue.Box) -> Check:
    name = f"peer {peer.name}"
    try:
        with socket.create_connection((peer.host, peer.nats_port), timeout=1.0):
            pass
    except OSError as exc:
        return Check(
            WARN,
            name,
            f"its NATS server {peer.host}:{peer.nats_port} does not answer"
            f" ({exc.strerror or exc}); its votes reach this box once it does",
        )
    try:
        request = urllib.request.Request(f"http://{peer.host}:{peer.http_port}/healthz")
        with urllib.request.urlopen(request, timeout=2) as answer:
            date = answer.headers.get("Date")
    except OSError:
        return Check(
            OK, name, f"NATS at {peer.host}:{peer.nats_port} answers (its web port does not)"
        )
    if date:
        from email.utils import parsedate_to_datetime

        skew = (parsedate_to_datetime(date) - datetime.now(UTC)).total_seconds()
        if abs(skew) * 1000 > OBSERVE_AHEAD_MS + 1000:
            return Check(
                WARN,
                name,
                f"its clock is {skew:+.0f} s from this box's: set both right (NTP); the boxes"
                " still agree on every result, but a late clock's changes lose to others'",
            )
    return Check(OK, name, f"reachable at {peer.host}, clock within a second or two")
