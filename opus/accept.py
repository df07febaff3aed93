"""Accept-* request headers (Accept-Language, Accept-Encoding): their items, each with its
quality value (RFC 9110, section 12.4.2)."""

from __future__ import annotations


def weighted(header: str, most: int = 20) -> list[tuple[str, float]]:
    """The header's first `most` items, lowercased, in order, each with its q (1 when absent,
    0 when unreadable): "fr-CH, fr;q=0.9" -> [("fr-ch", 1.0), ("fr", 0.9)]."""
    items: list[tuple[str, float]] = []
    for part in header.split(",")[:most]:
        token, _, params = part.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if token.strip():
            items.append((token.strip().lower(), quality))
    return items
