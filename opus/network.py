"""The box on its network: the addresses attendees can reach it at, and the sockets it listens
on (sized for a hall connecting at once). Used by `opus serve`, `opus doctor` and the pages
(the join address on the screen)."""

from __future__ import annotations

import fcntl
import logging
import resource
import socket
import struct
from pathlib import Path

from opus.config import Settings

log = logging.getLogger(__name__)

# A hall's worth of connections at once: the open-files limit and the accept queues are sized
# for it.
HALL = 16_384
BACKLOG = 4096  # the accept queue asked for on each listening socket


class CannotListen(Exception):
    """The port is taken, or the address is not this machine's."""


def somaxconn() -> int:
    """The kernel's cap on one listening socket's queue of connections not yet accepted."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return BACKLOG


def open_files_limit() -> tuple[int, int]:
    """(soft, hard) limit on open files; `opus serve` raises its soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    return (2**31 if soft == infinite else soft), (2**31 if hard == infinite else hard)


def raise_open_files() -> int:
    """Raise this process's soft open-files limit to the hard one; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return open_files_limit()[1]


def lan_addresses() -> list[str]:
    """IPv4 addresses of this machine's network interfaces, loopback last."""
    found: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(
                    sock.fileno(),
                    0x8915,  # SIOCGIFADDR: the interface's IPv4 address
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


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """The server's listening sockets, several per address.

    A connection waits in its listening socket's accept queue until the event loop takes it,
    and the kernel caps that queue at net.core.somaxconn (4096 here). When a hall votes in the
    same second, more connections arrive than one queue holds while the loop is busy
    answering; the kernel then drops handshakes: phones wait 1, 3, 7 s before trying again,
    and some connections end in a reset. Several sockets share the port (SO_REUSEPORT: the
    kernel spreads new connections among them), so their queues hold `HALL` between
    them, and the loop accepts from all of them.
    """
    probe_host = host or None
    infos = socket.getaddrinfo(probe_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    # SO_REUSEPORT would also let a second server join this port and take half the hall:
    # bind it once without the option first, as the only owner.
    for family, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as before: TIME_WAIT
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    queue = min(BACKLOG, somaxconn())
    count = max(1, min(16, -(-HALL // queue)))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            for _ in range(count):
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    log.debug(
        "listening on %s:%d: %d sockets per address, accept queues of %d", host, port, count, queue
    )
    return sockets
