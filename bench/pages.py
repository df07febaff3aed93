"""Pages benchmark: the bytes each page costs a phone, without and with compression, and the
attendee page's first paint on a slow link.

Usage (from the repository root):

    make bench-pages                        # or: .venv/bin/python bench/pages.py
    .venv/bin/python bench/pages.py --runs 7 --write docs/benchmarks.md

The script starts its own server (`.venv/bin/opus serve` on a free port, fresh data dir) with
a room of three open polls, a voter who joined it and a logged-in host, then measures:

1. bytes: each page (home, attendee room page, inbox, screen, host console) and every script
   and stylesheet it links, fetched as sent (response bodies, headers not counted), once
   without Accept-Encoding and once with `Accept-Encoding: gzip`;
2. CPU: the server's CPU time (/proc) per attendee page over --requests GETs, with and
   without gzip; two runs of the same kind differ by up to 10% here, more than gzip costs, so
   the gzip of that page is also timed alone in this process (zlib level 6, as aiohttp does
   it); and the time compression.py spends deciding about a vote's 202 (never compressed: the
   body is under 1 KB);
3. first paint: the attendee page in Debian's headless Chromium (Playwright), a fresh browser
   context each time (empty cache), its network emulated over the Chrome DevTools Protocol at
   1.5 Mbit/s both ways and 300 ms round trip (Network.emulateNetworkConditions); reported:
   first-contentful-paint (performance.getEntriesByType('paint')), the load event, and the
   bytes Chromium received. "Off" sends `Accept-Encoding: identity` (an extra HTTP header on the
   context), so the server sends everything uncompressed; "on" is what Chromium sends by
   itself. The two alternate, --runs times each; medians.

It prints Markdown tables to stdout, progress to stderr; --write replaces the `## Pages`
section of the given file. Exit status 1 when a page did not answer 200, a compressed body did
not decode to the uncompressed one, a vote was not answered 202 uncompressed, or the server
did not stop with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import statistics
import sys
import tempfile
import time
import timeit
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from ingest import (
    ADMIN_TOKEN,
    Server,
    api,
    free_port,
    machine_facts,
    progress,
    replace_section,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
GZIP = {"Accept-Encoding": "gzip, deflate"}
SLOW = {  # 1.5 Mbit/s both ways, 300 ms round trip
    "offline": False,
    "latency": 300,
    "downloadThroughput": 1.5e6 / 8,
    "uploadThroughput": 1.5e6 / 8,
}
_LINKED = re.compile(rb'(?:src|href)="(/static/[^"]+)"')


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


class Failed(Exception):
    """A correctness check of the run did not hold."""


# -- the stage --------------------------------------------------------------------------------


async def stage(session: aiohttp.ClientSession, base: str) -> dict[str, tuple[str, str]]:
    """A room with three open polls, a voter (cookie in `session`) with messages in the inbox,
    and the host logged in (cookie in `session`); the pages to measure by name: (the path as
    shown, the path)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    room = await api(
        session, "POST", base + "/api/v1/rooms", 201, headers=admin, json={"title": "All hands"}
    )
    await api(session, "POST", base + "/api/v1/join", 201, json={"code": room["code"]})
    polls = [
        {"question": "Where should the next offsite be?", "kind": "single",
         "options": ["Lisbon", "Krakow", "Tallinn", "Valencia"]},
        {"question": "How was the keynote?", "kind": "rating"},
        {"question": "One word for this quarter", "kind": "text"},
    ]  # fmt: skip
    for body in polls:
        poll = await api(
            session, "POST", f"{base}/api/v1/rooms/{room['id']}/polls", 201, headers=admin,
            json=body,
        )  # fmt: skip
        await api(session, "POST", f"{base}/api/v1/polls/{poll['id']}/open", 200, headers=admin)
    async with session.get(base + "/host/login") as r:
        found = re.search(rb'name="csrf" value="([^"]+)"', await r.read())
    if found is None:
        raise Failed("no CSRF token on /host/login")
    async with session.post(
        base + "/host/login",
        data={"csrf": found.group(1).decode(), "token": ADMIN_TOKEN},
        headers={"Origin": base},
        allow_redirects=False,
    ) as r:
        if r.status != 303:
            raise Failed(f"host login: {r.status}")
    shown = {
        "home": "/",
        "attendee room page": "/j/<code>",
        "inbox": "/j/<code>/inbox",
        "screen": "/screen/<code>",
        "host console": "/host/rooms/<room>",
    }
    return {
        name: (path, path.replace("<code>", room["code"]).replace("<room>", room["id"]))
        for name, path in shown.items()
    }


# -- bytes ------------------------------------------------------------------------------------


async def fetch(session: aiohttp.ClientSession, url: str, *, packed: bool) -> bytes:
    """The body as sent, with or without Accept-Encoding: gzip."""
    kw: dict[str, Any] = {"headers": GZIP} if packed else {"skip_auto_headers": ["Accept-Encoding"]}
    async with session.get(url, **kw) as r:
        body = await r.read()
        if r.status != 200:
            raise Failed(f"GET {url}: {r.status}")
        if packed != (r.headers.get("Content-Encoding") == "gzip") and len(body) >= 1024:
            raise Failed(f"GET {url}: Content-Encoding {r.headers.get('Content-Encoding')}")
        return body


def _fresh(body: bytes) -> bytes:
    """A page without what it makes anew each time (the clock, vote forms' ids)."""
    return re.sub(rb'(server_now\W+)\d+|(name="event_id" value=")[-\w]+', rb"\1\2", body)


async def measure_bytes(
    session: aiohttp.ClientSession, base: str, pages: dict[str, tuple[str, str]]
) -> tuple[str, str]:
    """The table per page (with every file it links, each counted once as a browser fetches
    it once) and the table per static file."""
    files: dict[str, tuple[int, int]] = {}
    rows = []
    for name, (shown, path) in pages.items():
        plain = await fetch(session, base + path, packed=False)
        packed = await fetch(session, base + path, packed=True)
        if _fresh(gzip.decompress(packed) if packed[:2] == b"\x1f\x8b" else packed) != _fresh(
            plain
        ):
            raise Failed(f"{path}: the gzipped page is not the page")
        linked = list(dict.fromkeys(u.decode() for u in _LINKED.findall(plain)))
        for url in linked:
            if url not in files:
                raw = await fetch(session, base + url, packed=False)
                small = await fetch(session, base + url, packed=True)
                if small[:2] == b"\x1f\x8b" and gzip.decompress(small) != raw:
                    raise Failed(f"{url}: the gzipped file is not the file")
                files[url] = (len(raw), len(small))
        assets_plain = sum(files[u][0] for u in linked)
        assets_packed = sum(files[u][1] for u in linked)
        total = (len(plain) + assets_plain, len(packed) + assets_packed)
        names = ", ".join(u.split("/")[-1].split("?")[0] for u in linked)
        rows.append(
            f"| {name} (`{shown}`) | "
            f"{_kb(len(plain))} → {_kb(len(packed))} | {names} | "
            f"{_kb(assets_plain)} → {_kb(assets_packed)} | "
            f"**{_kb(total[0])} → {_kb(total[1])}** ({total[0] / total[1]:.1f}x) |"
        )
    pages_table = "\n".join(
        [
            "| page | HTML, plain → gzip | scripts and CSS it links | those, plain → gzip | "
            "total, plain → gzip |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    file_rows = [
        f"| {url.split('/')[-1].split('?')[0]} | {plain:,} | {small:,} | {plain / small:.1f}x |"
        for url, (plain, small) in sorted(files.items())
    ]
    files_table = "\n".join(
        ["| static file | bytes | gzip | ratio |", "| --- | ---: | ---: | ---: |", *file_rows]
    )
    return pages_table, files_table


# -- CPU --------------------------------------------------------------------------------------


async def cpu_per_page(
    session: aiohttp.ClientSession, server: Server, url: str, requests: int
) -> tuple[float, float]:
    """Server CPU µs per GET of `url`, without and with gzip (interleaved in blocks of 50)."""
    spent = {False: 0.0, True: 0.0}
    for _ in range(max(1, requests // 50)):
        for packed in (False, True):
            before = server.cpu_seconds()
            for _ in range(50):
                await fetch(session, url, packed=packed)
            spent[packed] += server.cpu_seconds() - before
    count = max(1, requests // 50) * 50
    return 1e6 * spent[False] / count, 1e6 * spent[True] / count


def gzip_us(body: bytes) -> float:
    """µs to gzip `body` in this process as aiohttp does (a new zlib stream, level 6)."""

    def once() -> bytes:
        stream = zlib.compressobj(6, wbits=31)
        return stream.compress(body) + stream.flush()

    n = 2_000
    return 1e6 * min(timeit.repeat(once, number=n, repeat=5)) / n


def vote_check_us() -> tuple[float, int]:
    """µs compression.compress() takes on a vote's 202 (the answer the vote path sends)."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from opus.views.compression import compress

    request = make_mocked_request("POST", "/api/v1/polls/p/votes", headers=GZIP)
    body = '{"event_id": "01939d4c-7f11-7b2a-9f3e-3c1f5b0e8a77", "status": "accepted"}'
    response = web.Response(text=body, status=202, content_type="application/json")
    compress(request, response)
    if response.compression:
        raise Failed("a vote's 202 would be compressed")
    n = 200_000
    seconds = min(timeit.repeat(lambda: compress(request, response), number=n, repeat=5))
    return 1e6 * seconds / n, len(body)


# -- first paint ------------------------------------------------------------------------------


_PAINT = """() => new Promise(resolve => new PerformanceObserver(list => {
  const paint = list.getEntries().find(e => e.name === 'first-contentful-paint');
  const nav = performance.getEntriesByType('navigation')[0];
  if (paint) resolve([paint.startTime, nav.loadEventStart]);
}).observe({type: 'paint', buffered: true}))"""  # the paint may come after the load event


@dataclass
class Visit:
    paint_ms: float
    load_ms: float
    received: int  # bytes on the wire, headers included (CDP's encodedDataLength)


async def _visit(page: Any, cdp: Any, url: str) -> tuple[Visit, set[str]]:
    """One page load: its timings, bytes, and the Content-Encodings the server sent."""
    received = [0]
    encodings: set[str] = set()

    def finished(event: dict[str, Any]) -> None:
        received[0] += int(event.get("encodedDataLength", 0))

    def answered(event: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in event["response"]["headers"].items()}
        if event["response"]["url"].startswith("http"):
            encodings.add(headers.get("content-encoding", "identity"))

    cdp.on("Network.loadingFinished", finished)
    cdp.on("Network.responseReceived", answered)
    await page.goto(url, wait_until="load", timeout=120_000)
    paint_ms, load_ms = await page.evaluate(_PAINT)
    cdp.remove_listener("Network.loadingFinished", finished)
    cdp.remove_listener("Network.responseReceived", answered)
    return Visit(float(paint_ms), float(load_ms), received[0]), encodings


async def first_paint(url: str, runs: int) -> dict[bool, list[tuple[Visit, Visit]]]:
    """Per run, compression off (False) and on (True): the first visit (a fresh context: empty
    cache) and a second one in the same context (the cache kept), on the emulated slow link."""
    from playwright.async_api import async_playwright

    found: dict[bool, list[tuple[Visit, Visit]]] = {False: [], True: []}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # The first load of a browser is slower than the others (its processes start):
            # one of each way, not counted.
            for i in range(-1, runs):
                for packed in (True, False) if i % 2 else (False, True):
                    headers = {} if packed else {"Accept-Encoding": "identity"}
                    context = await browser.new_context(**PHONE, extra_http_headers=headers)
                    page = await context.new_page()
                    cdp = await context.new_cdp_session(page)
                    await cdp.send("Network.enable")
                    await cdp.send("Network.emulateNetworkConditions", SLOW)
                    first, encodings = await _visit(page, cdp, url)
                    await page.goto("about:blank")
                    second, _ = await _visit(page, cdp, url)
                    await context.close()
                    if ("gzip" in encodings) != packed:
                        raise Failed(f"compression {'on' if packed else 'off'}: got {encodings}")
                    if i < 0:
                        continue
                    found[packed].append((first, second))
                    progress(
                        f"compression {'on ' if packed else 'off'}: first paint "
                        f"{first.paint_ms:.0f} ms, load {first.load_ms:.0f} ms, "
                        f"{first.received:,} bytes; again {second.paint_ms:.0f} ms, "
                        f"{second.received:,} bytes"
                    )
        finally:
            await browser.close()
    return found


def paint_table(found: dict[bool, list[tuple[Visit, Visit]]], runs: int) -> str:
    def med(packed: bool, visit: int, field: str) -> float:
        return statistics.median(getattr(run[visit], field) for run in found[packed])

    def spread(packed: bool) -> str:
        paints = [run[0].paint_ms for run in found[packed]]
        return f"{min(paints):,.0f}-{max(paints):,.0f} ms"

    rows = []
    for label, visit, field in (
        ("first contentful paint", 0, "paint_ms"),
        ("load event (every script in)", 0, "load_ms"),
        ("bytes received (headers included)", 0, "received"),
        ("second visit, cache kept: first contentful paint", 1, "paint_ms"),
        ("second visit: bytes received", 1, "received"),
    ):
        off, on = med(False, visit, field), med(True, visit, field)
        show = _kb if field == "received" else (lambda v: f"{v:,.0f} ms")
        rows.append(f"| {label} | {show(off)} | {show(on)} | {on / off:.2f} |")
    rows.append(f"| first paint, fastest-slowest run | {spread(False)} | {spread(True)} | |")
    return "\n".join(
        [
            f"| attendee page at 1.5 Mbit/s, 300 ms RTT (medians of {runs} runs) "
            "| compression off | on | on : off |",
            "| --- | ---: | ---: | ---: |",
            *rows,
        ]
    )


# -- the run ----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, work: Path) -> tuple[str, bool]:
    server = Server(work / "data", free_port(), [])
    ok = True
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies from 127.0.0.1, as a browser does
    try:
        async with (
            aiohttp.ClientSession(cookie_jar=jar) as setup,
            aiohttp.ClientSession(cookie_jar=jar, auto_decompress=False) as session,
        ):
            await server.wait_ready(setup)
            pages = await stage(setup, server.base)
            progress("bytes per page")
            pages_table, files_table = await measure_bytes(session, server.base, pages)
            progress(f"server CPU per attendee page ({args.requests} GETs each way)")
            attendee = server.base + pages["attendee room page"][1]
            plain_us, packed_us = await cpu_per_page(session, server, attendee, args.requests)
            check_us, vote_bytes = vote_check_us()
            page = await fetch(session, attendee, packed=False)
            page_bytes = len(await fetch(session, attendee, packed=True))
            page_gzip_us = gzip_us(page)
            progress(f"first paint, {args.runs} runs each way")
            found = await first_paint(attendee, args.runs)
    except Failed as exc:
        progress(f"FAILED: {exc}")
        return f"FAILED: {exc}", False
    finally:
        code, took = server.stop()
        progress(f"server stopped: exit {code} after {took:.1f} s")
    ok &= code == 0
    cpu = "\n".join(
        [
            "| CPU | plain | gzip |",
            "| --- | ---: | ---: |",
            f"| server CPU per attendee page GET ({args.requests} each; the gzipped page is "
            f"{_kb(page_bytes)}) | {plain_us:.0f} µs | {packed_us:.0f} µs |",
            f"| gzip of that page ({_kb(len(page))}) timed alone, in process | | "
            f"{page_gzip_us:.0f} µs |",
            f"| compression.py's check on a vote's 202 ({vote_bytes} bytes: never compressed), "
            f"in process | {check_us:.2f} µs | same |",
            f"| exit status after SIGTERM | {code} ({took:.1f} s) | |",
        ]
    )
    return "\n\n".join([pages_table, files_table, cpu, paint_table(found, args.runs)]), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="page loads each way, for medians")
    parser.add_argument("--requests", type=int, default=1000, help="GETs each way for CPU")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="replace the '## Pages' section of FILE (e.g. docs/benchmarks.md)",
    )
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"bench/pages.py needs Chromium at {CHROMIUM}: apt-get install chromium")
        return 2
    started, load = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="opus-bench-pages-") as tmp:
        tables, ok = asyncio.run(bench(args, Path(tmp)))
    command = " ".join(["bench/pages.py", *sys.argv[1:]])
    body = (
        f"{time.strftime('%Y-%m-%d')}: `{command}` on {machine_facts()}, "
        f"{time.monotonic() - started:.0f} s; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other work sharing the cores). Bytes are "
        "response bodies as sent (headers not counted); gzip as the server sends it to a "
        "client that takes it: pages and large JSON compressed per response (aiohttp, zlib "
        "level 6), static files once at start (level 9). Static files with the current "
        "version on their URL are then kept by the browser for a year: a second visit "
        "fetches only the page.\n\n" + tables
    )
    print(body)
    if args.write:
        replace_section(args.write, "Pages", body)
        progress(f"wrote the Pages section of {args.write}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
