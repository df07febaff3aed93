"""Opus under systemd: the notify protocol spoken by a real `opus serve` to a real datagram
socket, and the unit files checked by systemd's own `systemd-analyze`."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess
from opus.config import Settings
from opus.systemd import notify, watchdog_interval

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"


class NotifySocket:
    """What systemd listens on: a unix datagram socket, by path or in the abstract namespace,
    read at once as systemd reads it (a thread queues what arrives). Each message comes with
    the sender's pid (SO_PASSCRED), as systemd sees it."""

    def __init__(self, address: str) -> None:
        self.env_value = address
        self.sock = bound_socket(address)
        self.messages: queue.Queue[tuple[list[str], int]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except OSError:
                return  # closed
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(payload[:4], sys.byteorder)
            self.messages.put((data.decode().split("\n"), pid))

    def receive(self, timeout: float) -> tuple[list[str], int] | None:
        """One message's fields and its sender's pid, or None after `timeout` seconds."""
        try:
            return self.messages.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def wait_for(self, field: str, timeout: float = 30.0) -> list[list[str]]:
        """Every message up to and including the first that carries `field`."""
        seen: list[list[str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.receive(deadline - time.monotonic())
            if got is None:
                break
            seen.append(got[0])
            if field in got[0]:
                return seen
        raise AssertionError(f"no {field} within {timeout} s; got {seen}")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        self.sock.close()
        self.reader.join(5)


def bound_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    return sock


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"@opus-test-{uuid.uuid4().hex}"
    sock = NotifySocket(address)
    yield sock
    sock.close()


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return int(r.status)


def test_serve_tells_systemd_ready_watchdog_and_stopping(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    server = ServerProcess(
        tmp_path / "data", NOTIFY_SOCKET=notify_socket.env_value, WATCHDOG_USEC="200000"
    )  # pings every 0.1 s
    server.start()  # returns once /healthz answers 200
    try:
        assert server.proc is not None
        before_ready = notify_socket.wait_for("READY=1")
        ready = before_ready[-1]
        assert any(line.startswith("STATUS=Serving") for line in ready), ready
        assert healthz(server.port) == 200
        # Pings keep coming while it serves, from the server process itself.
        pings = 0
        while pings < 5:
            got = notify_socket.receive(10.0)
            assert got is not None, "the watchdog pings stopped"
            if "WATCHDOG=1" in got[0]:
                pings += 1
                assert got[1] == server.proc.pid
        assert server.terminate() == 0
        stopping = notify_socket.wait_for("STOPPING=1", timeout=5.0)[-1]
        assert any(line.startswith("STATUS=Stopping") for line in stopping), stopping
    finally:
        server.stop()


def test_ready_comes_only_once_the_server_answers(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """systemd starts what comes After= opus.service on READY=1: by then /healthz answers."""
    server = ServerProcess(tmp_path / "data", NOTIFY_SOCKET=notify_socket.env_value)
    server.log.parent.mkdir(parents=True, exist_ok=True)
    with server.log.open("ab") as log:
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "opus", "serve"],
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        messages = notify_socket.wait_for("READY=1")
        assert healthz(server.port) == 200
        assert all("WATCHDOG=1" not in m for m in messages)  # no WATCHDOG_USEC, no pings
        assert server.terminate() == 0
    finally:
        server.stop()


def test_a_systemd_that_stops_reading_does_not_stop_opus(tmp_path: Path) -> None:
    """A datagram socket's queue is short (net.unix.max_dgram_qlen, 10 here): once it is full,
    a blocking send waits for the reader. Opus's pings must not wait, or the event loop waits
    with them and nothing answers, SIGTERM included (it hung a CI run)."""
    address = str(tmp_path / "notify")
    unread = bound_socket(address)
    try:
        server = ServerProcess(
            tmp_path / "data", NOTIFY_SOCKET=address, WATCHDOG_USEC="20000"
        )  # a ping every 10 ms: the queue is full within a tenth of a second
        server.start()
        try:
            for _ in range(10):  # a second, a hundred pings that find the queue full
                assert healthz(server.port) == 200
                time.sleep(0.1)
            # systemd reads again: what was queued, then fresh pings from the same process.
            unread.settimeout(5.0)
            for _ in range(40):
                data, _ = unread.recvfrom(4096)
            assert b"WATCHDOG=1" in data
            assert server.terminate(timeout=15.0) == 0
        finally:
            server.stop()
        log = server.log.read_text()
        assert "systemd is not reading" in log and "stopped cleanly" in log, log[-2000:]
    finally:
        unread.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    assert notify("READY=1", environ={}) is False


def test_a_gone_systemd_does_not_stop_opus(tmp_path: Path) -> None:
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False


def test_watchdog_interval_is_half_of_systemds_and_only_for_this_service() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 15.0
    # The single binary: systemd names the bootloader, Opus is its child.
    parent = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getppid())}
    assert watchdog_interval(parent) == 15.0
    inherited = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert os.getppid() != 1 and watchdog_interval(inherited) is None


# -- the unit files ------------------------------------------------------------------------


def analyze_root(tmp_path: Path) -> Path:
    """A file-system root for `systemd-analyze --root`: the system's own units (what ours
    refer to), ours as installed by the package, and the programs they start."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(sys.executable).parent / "opus", root / "usr/bin/opus")
    chromium = shutil.which("chromium")
    if chromium is not None:
        shutil.copy(chromium, root / "usr/bin/chromium")
    return root


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
    reason="systemd-analyze is not installed (.ci/run installs it)",
)


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("the kiosk unit starts /usr/bin/chromium, which is not installed")
    root = analyze_root(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "opus.service", "opus-kiosk.service"],
        capture_output=True,
        text=True,
    )
    # Unknown keys and bad values are only warnings to systemd: any output is a failure.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_systemd_analyze
def test_opus_service_is_hardened(tmp_path: Path) -> None:
    root = analyze_root(tmp_path)
    done = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={root}",
            "--threshold=20",
            "--no-pager",
            "opus.service",
        ],
        capture_output=True,
        text=True,
    )
    # In tenths: at most 2.0 of systemd's 10-point exposure scale ("OK"; 1.5 when written).
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "Overall exposure level for opus.service" in done.stdout


def test_units_say_what_the_single_binary_needs() -> None:
    """The settings that make the binary behave under systemd (see opus.service's comments)."""
    service = dict(
        line.split("=", 1)
        for line in (UNITS / "opus.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "all"  # READY=1 comes from the bootloader's child
    assert service["KillMode"] == "mixed"  # one SIGTERM, forwarded once by the bootloader
    assert service["ExecStart"] == "/usr/bin/opus serve"
    assert service["Environment"] == "OPUS_CONFIG=/etc/opus/opus.toml"
    stop_s = int(service["TimeoutStopSec"].removesuffix("s"))
    assert stop_s > Settings().shutdown_timeout_s + 10
    kiosk = (UNITS / "opus-kiosk.service").read_text()
    assert "After=opus.service graphical.target" in kiosk
    assert "--kiosk" in kiosk
