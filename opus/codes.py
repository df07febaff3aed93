"""Room codes: what attendees type, read off a projector or heard across a hall."""

from __future__ import annotations

import secrets

# Letters and digits that cannot be confused when read aloud or off a projector
# (no 0/O, 1/I/L, 5/S, 2/Z, 8/B, U/V): 8 characters give about 10^11 codes.
CODE_ALPHABET = "34679ACDEFGHJKMNPQRTWXY"
CODE_LENGTH = 8


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str:
    """Codes are shown as ABCD-EFGH; people type them in any case, with or without the dash."""
    return "".join(ch for ch in raw.upper() if ch.isalnum())


def display_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"
