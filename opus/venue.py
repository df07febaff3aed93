"""A venue: several boxes (halls, overflow rooms, Wi-Fi zones) that count every vote cast at
any of them. `opus venue init` writes one file, `venue.toml`, that every box gets a copy of:

    # An Opus venue. Copy this file to every box, then on each box run:
    #   opus serve --venue venue.toml --box NAME
    secret = "..."

    [boxes.a]
    host = "10.0.0.11"
    http_port = 8080
    nats_port = 4222

The secret makes the boxes one venue: the admin token, the key that signs voter tokens and the
NATS password are derived from it, so a token made at one box is valid at every box. The file
is a secret: it is written readable by its owner only.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from opus import files
from opus.config import read_toml

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class VenueError(ValueError):
    """A venue file or a --box that cannot be used; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Box:
    name: str
    host: str
    http_port: int
    nats_port: int

    @property
    def monitor_port(self) -> int:
        """NATS's monitoring port (on loopback only): the next one."""
        return self.nats_port + 1

    def nats_url(self) -> str:
        return f"nats://{self._host()}:{self.nats_port}"

    def http_url(self) -> str:
        return f"http://{self._host()}:{self.http_port}"

    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


@dataclass(frozen=True, slots=True)
class Venue:
    path: Path | None
    secret: str
    boxes: dict[str, Box]

    def box(self, name: str | None) -> Box:
        if not name:
            raise VenueError(
                f"Name this box: --box {' or --box '.join(self.boxes)} (see {self.path})."
            )
        if name not in self.boxes:
            raise VenueError(
                f"{self.path} has no box '{name}'; its boxes are {', '.join(self.boxes)}."
            )
        return self.boxes[name]

    def peers(self, name: str) -> list[Box]:
        return [box for box in self.boxes.values() if box.name != name]

    def derive(self, purpose: str) -> bytes:
        """A key for one purpose, the same at every box of the venue."""
        return hmac.digest(self.secret.encode(), f"opus venue {purpose}".encode(), "sha256")

    @property
    def admin_token(self) -> str:
        return base64.urlsafe_b64encode(self.derive("admin token")[:24]).decode()

    @property
    def signing_secret(self) -> bytes:
        return self.derive("voter tokens").hex().encode()

    @property
    def log_token(self) -> str:
        """What one box shows another to read its log (GET /api/v1/venue/log)."""
        return base64.urlsafe_b64encode(self.derive("log token")[:24]).decode()

    @property
    def nats_password(self) -> str:
        return base64.urlsafe_b64encode(self.derive("nats password")[:24]).decode()

    NATS_USER = "opus"


def parse_box(spec: str) -> Box:
    """`NAME=HOST:HTTP_PORT:NATS_PORT` (an IPv6 host in brackets: `a=[fd00::1]:8080:4222`)."""
    name, sep, rest = spec.partition("=")
    match = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+):(\d+):(\d+)", rest)
    if not sep or match is None:
        raise VenueError(f"'{spec}': write a box as NAME=HOST:HTTP_PORT:NATS_PORT.")
    host, http, nats = match.group(1).strip("[]"), int(match.group(2)), int(match.group(3))
    return _box(name, host, http, nats, where=f"'{spec}'")


def _box(name: str, host: str, http: int, nats: int, *, where: str) -> Box:
    if not NAME.fullmatch(name):
        raise VenueError(f"{where}: a box's name is 1 to 32 lower-case letters, digits or dashes.")
    if not host or any(c.isspace() for c in host):
        raise VenueError(f"{where}: the host is an address or a name.")
    for port, what in ((http, "HTTP"), (nats, "NATS")):
        if not 0 < port < 65535:
            raise VenueError(f"{where}: the {what} port is between 1 and 65534.")
    if http in (nats, nats + 1):
        raise VenueError(
            f"{where}: the NATS server takes NATS_PORT and the next port: choose another."
        )
    return Box(name, host, http, nats)


def create(boxes: list[Box]) -> Venue:
    names = [b.name for b in boxes]
    if len(boxes) < 2:
        raise VenueError("A venue has at least two boxes (one --box for each).")
    if len(set(names)) != len(names):
        raise VenueError("Two boxes have the same name.")
    _check_ports(boxes)
    return Venue(None, secrets.token_urlsafe(32), {b.name: b for b in boxes})


def _check_ports(boxes: list[Box]) -> None:
    taken: dict[tuple[str, int], str] = {}
    for box in boxes:
        for port in (box.http_port, box.nats_port, box.monitor_port):
            if (box.host, port) in taken and taken[(box.host, port)] != box.name:
                raise VenueError(
                    f"Boxes {taken[(box.host, port)]} and {box.name} both use {box.host}:{port}."
                )
            taken[(box.host, port)] = box.name


def render(venue: Venue) -> str:
    lines = [
        "# An Opus venue. Copy this file to every box, then on each box run:",
        "#   opus serve --venue venue.toml --box NAME",
        "# It holds the venue's secret: the admin token and voter tokens come from it.",
        f'secret = "{venue.secret}"',
    ]
    for box in venue.boxes.values():
        lines += [
            "",
            f"[boxes.{box.name}]",
            f'host = "{box.host}"',
            f"http_port = {box.http_port}",
            f"nats_port = {box.nats_port}",
        ]
    return "\n".join(lines) + "\n"


def write(venue: Venue, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "venue.toml"
    files.write_whole(path, render(venue).encode(), mode=0o600)
    return path


def load(path: Path) -> Venue:
    data = read_toml(path, VenueError, "no such venue file (opus venue init writes one).")
    secret, boxes = data.get("secret"), data.get("boxes")
    if not isinstance(secret, str) or len(secret) < 32:
        raise VenueError(f"{path}: 'secret' is missing or too short; copy the file again.")
    if not isinstance(boxes, dict) or len(boxes) < 2:
        raise VenueError(f"{path}: a venue lists at least two [boxes.NAME].")
    parsed = []
    for name, fields in boxes.items():
        where = f"{path} [boxes.{name}]"
        if not isinstance(fields, dict):
            raise VenueError(f"{where}: host, http_port and nats_port.")
        host, http, nats = fields.get("host"), fields.get("http_port"), fields.get("nats_port")
        if not isinstance(host, str) or not isinstance(http, int) or not isinstance(nats, int):
            raise VenueError(f"{where}: host (text), http_port and nats_port (numbers).")
        parsed.append(_box(name, host, http, nats, where=where))
    _check_ports(parsed)
    return Venue(path, secret, {b.name: b for b in parsed})
