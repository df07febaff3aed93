"""The static files (scripts, CSS, the icon), read once at start and served from memory.

Each is gzipped then, once, so a phone that takes gzip gets the smaller body at no cost per
request. Why in memory and not `.gz` files beside them: the single binary unpacks opus/static
into a folder Opus must not write to, so those files could only be made in the build, and a
source checkout or a wheel would need them made too. The files are small (about 60 KB, 20 KB
gzipped), and reading them at start works the same from a checkout, a wheel and the binary.
A file changed on disk is served after a restart, which is also when its version changes.

The version, a hash of every file's content, is what the pages put on the URLs
(`/static/live.js?v=...`): such a URL always means the same bytes, so browsers keep it a year
without asking again. Without the version (or with an old one) a browser must ask each time,
and the ETag or Last-Modified turns that into a 304.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from opus import __version__
from opus.views.compression import accepts_gzip, add_vary, compressible

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None when gzip would not make it smaller
    content_type: str
    etag: str
    modified: float  # the file's mtime: Last-Modified

    @classmethod
    def read(cls, path: Path) -> Asset:
        body = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        gzipped = None
        if compressible(content_type):
            # mtime=0: the same bytes at every start, so a cached copy stays valid.
            packed = gzip.compress(body, compresslevel=9, mtime=0)
            gzipped = packed if len(packed) < len(body) else None
        etag = hashlib.sha256(body).hexdigest()[:16]
        return cls(body, gzipped, content_type, etag, path.stat().st_mtime)


class StaticFiles:
    def __init__(self, root: Path) -> None:
        self.files = {
            path.relative_to(root).as_posix(): Asset.read(path)
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        digest = hashlib.sha256(__version__.encode())
        for name, asset in self.files.items():
            digest.update(f"{name}:{asset.etag}\n".encode())
        self.version = digest.hexdigest()[:10]

    async def serve(self, request: web.Request) -> web.Response:
        asset = self.files.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        versioned = request.query.get("v") == self.version
        response = web.Response(headers={"Cache-Control": IMMUTABLE if versioned else REVALIDATE})
        body, etag = asset.body, asset.etag
        if asset.gzipped is not None:
            add_vary(response)
            if accepts_gzip(request):
                body, etag = asset.gzipped, etag + "-gz"  # another body, another tag
        response.etag = etag
        response.last_modified = asset.modified
        if _still_fresh(request, etag, asset.modified):
            response.set_status(304)
            return response
        if body is asset.gzipped:
            response.headers["Content-Encoding"] = "gzip"
        response.content_type = asset.content_type
        response.body = body
        return response


def _still_fresh(request: web.Request, etag: str, modified: float) -> bool:
    """Whether the client's copy is this one (If-None-Match, else If-Modified-Since)."""
    tags = request.if_none_match
    if tags is not None:
        return any(tag.value in (etag, "*") for tag in tags)
    since = request.if_modified_since
    return since is not None and int(modified) <= since.timestamp()


def setup(app: web.Application, files: StaticFiles) -> None:
    app.router.add_get("/static/{name:.+}", files.serve)
