"""A disk that loses power: a FUSE file system that keeps every write in memory until its file
is fsync'd, and at a simulated power cut forgets whatever was not (the technique of LazyFS,
which Jepsen uses). `kill -9` cannot test a power cut: the kernel's page cache outlives the
process, so only a file system that drops unsynced writes can break a durability promise.

The model:
- A file's data (writes, truncations, growth) stays in this process's memory, page by page,
  until the file is fsync'd; reads see it. fsync writes the file's pages to the backing folder
  and fsyncs them there.
- Names (create, rename, unlink, mkdir) go to the backing folder at once, as on a journalled
  file system that orders metadata. So a file created, written and renamed without fsync is
  there after a cut, with the contents it had when last fsync'd: empty, for a new one. (A
  rename lost because its directory was not fsync'd is not modelled.)
- A cut, under the lock that every operation takes: every later operation fails with EIO
  (the disk is gone, and nothing can be acknowledged after it), and the unsynced pages are
  dropped. The harness then kills the server and unmounts; the backing folder holds exactly
  what was durable, and the next mount starts from it.

Run as a program, it mounts BACKING at MOUNT and takes commands on the UNIX socket CONTROL:
`cut` answers `cut FILES BYTES` (files and bytes dropped); `stats` answers counts.
`PowerCutDisk` drives it from a test.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 4096


@dataclass
class Pending:
    """What was written to one file (one inode) since its last fsync."""

    size: int  # the file's size as its readers see it
    floor: int  # the lowest size it was truncated to: backing bytes at or past it are gone
    pages: dict[int, bytearray] = field(default_factory=dict)  # page index -> PAGE bytes


def _serve(backing: Path, mount: Path, control: Path) -> None:  # pragma: no cover - own process
    import mfusepy as fuse  # imported here: the test process needs no libfuse

    class LazyDisk(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self) -> None:
            self.mutex = threading.RLock()
            self.pending: dict[int, Pending] = {}  # backing inode -> unsynced data
            self.frozen = False
            self.stats: Counter[str] = Counter()

        # -- helpers ---------------------------------------------------------------------

        def _path(self, path: str) -> str:
            return os.path.join(str(backing), path.lstrip("/"))

        def _alive(self) -> None:
            if self.frozen:
                raise fuse.FuseOSError(errno.EIO)

        def _page(self, fd: int, p: Pending, index: int) -> bytearray:
            """The page as readers see it, from memory or the backing file."""
            page = p.pages.get(index)
            if page is not None:
                return page
            start = index * PAGE
            data = bytearray(os.pread(fd, PAGE, start)) if start < p.floor else bytearray()
            keep = max(0, min(PAGE, p.floor - start))
            del data[keep:]
            data.extend(bytes(PAGE - len(data)))
            return data

        def _state(self, fd: int, ino: int) -> Pending:
            p = self.pending.get(ino)
            if p is None:
                size = os.fstat(fd).st_size
                p = self.pending[ino] = Pending(size=size, floor=size)
            return p

        def _forget_if_last_link(self, full: str) -> None:
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                return
            if st.st_nlink <= 1:
                self.pending.pop(st.st_ino, None)

        # -- data ------------------------------------------------------------------------

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self.mutex:
                self._alive()
                try:
                    st = os.fstat(fh) if fh is not None else os.lstat(self._path(path))
                except OSError as exc:
                    raise fuse.FuseOSError(exc.errno) from None
                attrs = {
                    k: getattr(st, k)
                    for k in (
                        "st_mode",
                        "st_nlink",
                        "st_uid",
                        "st_gid",
                        "st_size",
                        "st_atime",
                        "st_mtime",
                        "st_ctime",
                        "st_ino",
                    )
                }
                for k in ("st_atime", "st_mtime", "st_ctime"):
                    attrs[k] = getattr(st, k + "_ns")
                p = self.pending.get(st.st_ino)
                if p is not None:
                    attrs["st_size"] = p.size
                attrs["st_blocks"] = (attrs["st_size"] + 511) // 512
                return attrs

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            with self.mutex:
                self._alive()
                fd = os.open(self._path(path), os.O_RDWR | os.O_CREAT, mode)
                self.pending.pop(os.fstat(fd).st_ino, None)  # a reused inode number
                return fd

        def open(self, path: str, flags: int) -> int:
            with self.mutex:
                self._alive()
                return os.open(self._path(path), os.O_RDWR)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with self.mutex:
                self._alive()
                p = self.pending.get(os.fstat(fh).st_ino)
                if p is None:
                    return os.pread(fh, size, offset)
                end = min(offset + size, p.size)
                out = bytearray()
                pos = offset
                while pos < end:
                    index, within = divmod(pos, PAGE)
                    take = min(PAGE - within, end - pos)
                    out += self._page(fh, p, index)[within : within + take]
                    pos += take
                return bytes(out)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self.mutex:
                self._alive()
                p = self._state(fh, os.fstat(fh).st_ino)
                pos, view = offset, memoryview(data)
                while view:
                    index, within = divmod(pos, PAGE)
                    take = min(PAGE - within, len(view))
                    # Past the size a page holds zeros (truncate clears a page's tail), so a
                    # hole left by a write past the end reads as zeros.
                    page = self._page(fh, p, index)
                    page[within : within + take] = view[:take]
                    p.pages[index] = page
                    pos += take
                    view = view[take:]
                p.size = max(p.size, offset + len(data))
                self.stats["writes"] += 1
                return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self.mutex:
                self._alive()
                fd = fh if fh is not None else os.open(self._path(path), os.O_RDWR)
                try:
                    p = self._state(fd, os.fstat(fd).st_ino)
                    if length < p.size:
                        for index in [i for i in p.pages if i * PAGE >= length]:
                            del p.pages[index]
                        last = p.pages.get(length // PAGE)
                        if last is not None:
                            last[length % PAGE :] = bytes(PAGE - length % PAGE)
                        p.floor = min(p.floor, length)
                    p.size = length
                finally:
                    if fh is None:
                        os.close(fd)
                return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self.mutex:
                self._alive()
                ino = os.fstat(fh).st_ino
                p = self.pending.pop(ino, None)
                if p is not None:
                    os.ftruncate(fh, p.floor)
                    for index, page in sorted(p.pages.items()):
                        start = index * PAGE
                        if start < p.size:
                            os.pwrite(fh, page[: min(PAGE, p.size - start)], start)
                    os.ftruncate(fh, p.size)
                    self.stats["fsyncs with data"] += 1
                os.fsync(fh)
                self.stats["fsyncs"] += 1
                return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            os.close(fh)  # unsynced data stays pending, as in a page cache
            return 0

        # -- names -----------------------------------------------------------------------

        def readdir(self, path: str, fh: int) -> list[str]:
            with self.mutex:
                self._alive()
                return [".", "..", *os.listdir(self._path(path))]

        def mkdir(self, path: str, mode: int) -> int:
            with self.mutex:
                self._alive()
                os.mkdir(self._path(path), mode)
                return 0

        def rmdir(self, path: str) -> int:
            with self.mutex:
                self._alive()
                os.rmdir(self._path(path))
                return 0

        def unlink(self, path: str) -> int:
            with self.mutex:
                self._alive()
                full = self._path(path)
                self._forget_if_last_link(full)
                os.unlink(full)
                return 0

        def rename(self, old: str, new: str) -> int:
            with self.mutex:
                self._alive()
                self._forget_if_last_link(self._path(new))
                os.rename(self._path(old), self._path(new))
                return 0

        def chmod(self, path: str, mode: int) -> int:
            with self.mutex:
                self._alive()
                os.chmod(self._path(path), mode)
                return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            with self.mutex:
                self._alive()
                os.chown(self._path(path), uid, gid)
                return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            with self.mutex:
                self._alive()
                os.utime(self._path(path), ns=times)
                return 0

        def access(self, path: str, amode: int) -> int:
            with self.mutex:
                self._alive()
                if not os.access(self._path(path), amode):
                    raise fuse.FuseOSError(errno.EACCES)
                return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._path(path))
            return {
                k: getattr(st, k)
                for k in (
                    "f_bavail",
                    "f_bfree",
                    "f_blocks",
                    "f_bsize",
                    "f_favail",
                    "f_ffree",
                    "f_files",
                    "f_flag",
                    "f_frsize",
                    "f_namemax",
                )
            }

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            with self.mutex:
                self._alive()
                self.stats["fsyncdirs"] += 1
                return 0

        # -- the cut ---------------------------------------------------------------------

        def cut(self) -> str:
            with self.mutex:
                self.frozen = True
                dropped = sum(len(p.pages) * PAGE for p in self.pending.values())
                files = len(self.pending)
                self.pending.clear()
                return f"cut {files} {dropped}"

    disk = LazyDisk()

    def control_loop() -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(control))
        server.listen(4)
        while True:
            conn, _ = server.accept()
            with conn:
                command = conn.recv(100).decode().strip()
                if command == "cut":
                    conn.sendall(disk.cut().encode())
                elif command == "stats":
                    with disk.mutex:
                        conn.sendall(repr(dict(disk.stats)).encode())
                else:
                    conn.sendall(b"?")

    threading.Thread(target=control_loop, daemon=True).start()
    fuse.FUSE(disk, str(mount), foreground=True, nothreads=False)


class PowerCutDisk:
    """A folder on a disk that can lose power, for a test: `mount()`, use `path`, `cut()`,
    then `mount()` again to find what was durable."""

    def __init__(self, root: Path) -> None:
        self.backing = root / "backing"
        self.path = root / "mnt"
        self.control = root / "control.sock"
        self.log = root / "powercut.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts = 0
        self.backing.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def mount(self, timeout: float = 20.0) -> None:
        assert self.proc is None, "already mounted"
        self.control.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, str(self.backing), str(self.path), str(self.control)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not (os.path.ismount(self.path) and self.control.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the power-cut disk did not mount: {self.log.read_text()}")
            time.sleep(0.02)

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.control))
            s.sendall(command.encode())
            return s.recv(1000).decode()

    def cut(self) -> tuple[int, int]:
        """The power goes: unsynced writes are dropped and the disk stops answering. Kill
        whatever uses it next, then `unmount()`."""
        _, files, dropped = self._command("cut").split()
        self.cuts += 1
        return int(files), int(dropped)

    def stats(self) -> str:
        return self._command("stats")

    def unmount(self) -> None:
        if self.proc is None:
            return
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.path)], check=False, capture_output=True
        )
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> PowerCutDisk:
        self.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def available() -> str | None:
    """Why power cuts cannot be simulated here, or None when they can. In CI (CI=true) they
    always can: .ci/run installs fuse3, so a missing piece there fails instead of skipping."""
    if os.environ.get("CI"):
        return None
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not any(
        os.access(os.path.join(d, "fusermount3"), os.X_OK)
        for d in os.environ.get("PATH", "").split(os.pathsep)
    ):
        return "no fusermount3 (Debian's fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse: {exc}"
    return None


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
