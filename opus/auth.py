"""Admin token and signed voter tokens (checking one needs no database read)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from opus import files

VOTER_PREFIX = "v1."


SECRET_LENGTH = 64  # hex digits of 32 random bytes
ADMIN_TOKEN_MIN = 16  # characters; the server makes 32


def load_secret(data_dir: Path) -> bytes:
    """The key that signs voter tokens; made on first start, written whole (files.py)."""
    return files.read_or_create(
        data_dir / "secret",
        lambda: secrets.token_hex(32),
        min_length=SECRET_LENGTH,
        consequence="every attendee's phone has to join its room again",
    ).encode()


def load_admin_token(data_dir: Path, configured: str | None) -> tuple[str, Path | None]:
    """The configured token, or the one kept in the data dir (created on first start).

    Returns the token and the file it lives in (None when it came from settings).
    """
    if configured:
        return configured, None
    path = data_dir / "admin_token"
    token = files.read_or_create(
        path,
        lambda: secrets.token_urlsafe(24),
        min_length=ADMIN_TOKEN_MIN,
        consequence="the next start makes a new admin token and prints where it is",
    )
    return token, path


@dataclass(frozen=True, slots=True)
class Voter:
    voter_id: str
    room_id: str


class Signer:
    _REMEMBER = 100_000  # verified tokens kept: a phone sends the same token with every vote

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._verified: dict[str, Voter] = {}

    def _mac(self, body: bytes) -> str:
        digest = hmac.digest(self._secret, body, "sha256")[:18]  # the one-shot C path
        return base64.urlsafe_b64encode(digest).decode()

    def voter_token(self, voter: Voter) -> str:
        body = f"{voter.voter_id}:{voter.room_id}".encode()
        encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{VOTER_PREFIX}{encoded}.{self._mac(body)}"

    def voter(self, token: str) -> Voter | None:
        """The voter a token names, or None when it is not one of ours."""
        known = self._verified.get(token)
        if known is not None:
            return known
        voter = self._check(token)
        if voter is not None:
            if len(self._verified) >= self._REMEMBER:
                self._verified.clear()
            self._verified[token] = voter
        return voter

    def _check(self, token: str) -> Voter | None:
        # Ours are ASCII; hmac.compare_digest raises TypeError on other text.
        if not token.startswith(VOTER_PREFIX) or not token.isascii():
            return None
        try:
            encoded, mac = token[len(VOTER_PREFIX) :].split(".", 1)
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        voter_id, _, room_id = body.decode(errors="replace").partition(":")
        return Voter(voter_id, room_id)


def same_token(given: str, expected: str) -> bool:
    """Constant-time equality. A header's stray bytes decode to surrogates, which cannot be
    encoded: such a token is simply not the expected one. An empty token is never one."""
    return bool(given and expected) and hmac.compare_digest(
        given.encode(errors="replace"), expected.encode()
    )


_ADJECTIVES = (
    "Amber Brave Bright Calm Clever Cosmic Curious Daring Eager Gentle Golden Happy Jolly Keen"
    " Kind Lively Lucky Merry Mighty Nimble Noble Plucky Quick Quiet Rapid Royal Shiny Silver"
    " Sunny Swift Witty Zesty"
).split()
_ANIMALS = (
    "Badger Bear Beaver Bison Crane Dolphin Eagle Falcon Fox Gecko Hare Hawk Heron Ibis Koala"
    " Lemur Lion Lynx Marten Moose Otter Owl Panda Puffin Raven Robin Seal Swan Tiger Turtle"
    " Walrus Wolf"
).split()


def pseudonym(voter_id: str) -> str:
    """A friendly, stable name for a voter on a leaderboard ("Brave Otter 42"): derived from
    the id, so nothing is stored and no real name is ever asked for."""
    digest = hashlib.sha256(voter_id.encode()).digest()
    adjective = _ADJECTIVES[digest[0] % len(_ADJECTIVES)]
    animal = _ANIMALS[digest[1] % len(_ANIMALS)]
    return f"{adjective} {animal} {digest[2] % 90 + 10}"
