"""Who a client is on the network, and how many voter identities one client may mint.

A poll's count means something only if one laptop cannot become a hundred voters. On a venue's
Wi-Fi each phone reaches the box from its own address (there is no carrier-grade NAT on a local
network), so limits per client address work here: a rate of successful joins, and a cap of
identities per address in one room. Both are settings; where many phones share one address
(a guest network behind NAT) they are raised or turned off, and a room passcode does the work.

The box's own loopback (a kiosk, a script on the box) is not limited: an attendee on the venue's
network cannot reach the box from there. A reverse proxy on the box makes every client look
like loopback: list it in `trusted_proxies`, and the address it forwards is the one limited.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, deque

from aiohttp import web

from opus.config import Settings, parse_networks
from opus.db import Database
from opus.errors import TooManyRequests

_WINDOW_S = 60.0
_FORGET_AT = 50_000  # addresses remembered for the join rate; past that the oldest go


def is_loopback(address: str | None) -> bool:
    """Whether the address is the box's own (127.0.0.0/8, ::1)."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class ClientAddresses:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
    address in X-Forwarded-For that is not one (a header from anyone else is ignored)."""

    def __init__(self, trusted_proxies: str) -> None:
        self._trusted = parse_networks(trusted_proxies)

    def _trusted_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def of(self, request: web.BaseRequest) -> str:
        address = request.remote or "?"
        if not self._trusted or not self._trusted_address(address):
            return address
        forwarded = [
            a.strip()
            for a in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
            if a.strip()
        ]
        for hop in reversed(forwarded):
            if not self._trusted_address(hop):
                return hop[:64]
        return address


class IdentityLimits:
    """Joins that mint a new voter, per client address: at most `join_rate_per_minute` a minute
    in all rooms, and at most `identities_per_address` in one room (0 turns either off). The
    counts per room live in the voters table (each voter row keeps the address it came from),
    so a restart does not reset them."""

    def __init__(self, settings: Settings) -> None:
        self.rate = settings.join_rate_per_minute
        self.cap = settings.identities_per_address
        self._joins: dict[str, deque[float]] = {}
        self._per_room: Counter[tuple[str, str]] = Counter()

    async def load(self, db: Database) -> None:
        rows = await db.fetchall(
            "SELECT room_id, COALESCE(address, '?') AS address, COUNT(*) AS n FROM voters"
            " GROUP BY room_id, address"
        )
        self._per_room = Counter({(r["room_id"], r["address"]): r["n"] for r in rows})

    @staticmethod
    def limited(address: str) -> bool:
        return not is_loopback(address)

    def check(self, room_id: str, address: str) -> None:
        """Raise 429 when this address may not mint another voter in this room now."""
        if not self.limited(address):
            return
        if self.cap and self._per_room[(room_id, address)] >= self.cap:
            raise TooManyRequests(
                f"This network address has already joined this room {self.cap}"
                f" time{'' if self.cap == 1 else 's'}, the most allowed for one device. Use the"
                " phone that joined before, or ask the host.",
                code="too_many_identities",
                retry_after=3600,
            )
        if self.rate:
            recent = self._joins.get(address)
            if recent:
                now = time.monotonic()
                while recent and recent[0] < now - _WINDOW_S:
                    recent.popleft()
                if len(recent) >= self.rate:
                    retry = int(recent[0] + _WINDOW_S - now) + 1
                    raise TooManyRequests(
                        "Too many people joined from this network address just now; try again"
                        f" in {retry} seconds.",
                        code="too_many_joins",
                        retry_after=retry,
                    )

    def record(self, room_id: str, address: str) -> None:
        """A voter was minted for this address in this room."""
        self._per_room[(room_id, address)] += 1
        if self.rate and self.limited(address):
            if len(self._joins) > _FORGET_AT:
                for stale in list(self._joins)[: _FORGET_AT // 2]:
                    del self._joins[stale]
            self._joins.setdefault(address, deque()).append(time.monotonic())

    def busiest(self, room_id: str, n: int = 5) -> list[tuple[str, int]]:
        """The addresses that minted the most identities in this room, most first."""
        mine = Counter({a: c for (r, a), c in self._per_room.items() if r == room_id and a != "?"})
        return mine.most_common(n)

    def total(self, room_id: str) -> int:
        """Voters who joined this room."""
        return sum(c for (r, _), c in self._per_room.items() if r == room_id)

    def forget_room(self, room_id: str) -> None:
        for key in [k for k in self._per_room if k[0] == room_id]:
            del self._per_room[key]
