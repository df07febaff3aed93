"""A small WebSocket client for load: thousands of attendee sockets from one Python process.

aiohttp's client parses and decodes every frame; a hall's sockets also receive every results
update, and decoding those in the load generator would take the CPU the server needs. This one
reads frame headers only and decodes just the answers to votes (`vote_accepted`,
`vote_refused`) and, when asked, `results` frames. Frames it sends are masked with a zero key
(valid WebSocket: the mask is XOR, and the server unmasks whatever key it gets).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Callable
from typing import Any

_ANSWER = b'{"type":"vote_'
_RESULTS = b'{"type": "results"'


class Closed(Exception):
    """The server closed the socket (or the connection dropped)."""


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.on_results: Callable[[dict[str, Any]], None] | None = None
        self.closed = False
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, host: str, port: int, path: str) -> RawSocket:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise Closed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message, separators=(",", ":")).encode()
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        self._writer.write(header + b"\0\0\0\0" + payload)  # zero mask: the payload as is

    async def vote(self, message: dict[str, Any], limit_s: float = 60.0) -> dict[str, Any]:
        """Send a vote (it must carry its event_id) and wait for its answer."""
        if self.closed:
            raise Closed("closed")
        future = asyncio.get_running_loop().create_future()
        self._waiting[message["event_id"]] = future
        self.send(message)
        try:
            return await asyncio.wait_for(future, limit_s)
        finally:
            self._waiting.pop(message["event_id"], None)

    async def _read(self) -> None:
        read = self._reader.readexactly
        try:
            while True:
                b0, b1 = await read(2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await read(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await read(8))
                payload = await read(n) if n else b""
                opcode = b0 & 0x0F
                if opcode == 0x9:  # ping: answer with the same payload
                    self._writer.write(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + b"\0" * 4)
                    self._writer.write(payload)
                elif opcode == 0x8:
                    break
                elif payload.startswith(_ANSWER):
                    answer = json.loads(payload)
                    future = self._waiting.get(answer.get("event_id"))
                    if future is not None and not future.done():
                        future.set_result(answer)
                elif self.on_results is not None and payload.startswith(_RESULTS):
                    self.on_results(json.loads(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed = True
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(Closed("closed"))

    async def close(self) -> None:
        if not self.closed:
            self._writer.write(struct.pack("!BB", 0x88, 0x82) + b"\0" * 4 + struct.pack("!H", 1000))
        self._writer.close()
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
