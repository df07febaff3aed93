"""The single binary and the Debian package, built for real (`make binary`, `make deb`; make
skips the build while dist/opus is newer than its sources) and run from a folder that is not
the checkout, so that everything it serves must come from inside the binary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from test_systemd import NotifySocket

from conftest import ADMIN, Api, ServerProcess, free_port
from opus import __version__, i18n
from opus.config import read_config_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "opus"


def make(target: str) -> None:
    done = subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"make {target}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def binary() -> Path:
    make("binary")
    return ROOT / "dist" / "opus"


@pytest.fixture(scope="module")
def deb(binary: Path) -> Path:
    make("deb")
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return ROOT / "dist" / f"opus_{__version__}_{arch}.deb"


def bundled_files() -> list[str]:
    """The templates and static files, as paths inside the package: what the binary must hold."""
    return sorted(
        str(p.relative_to(PACKAGE.parent))
        for folder in ("templates", "static")
        for p in (PACKAGE / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


class BinaryProcess(ServerProcess):
    """dist/opus started the way systemd starts it: WATCHDOG_PID names the process systemd
    started (the bootloader, which unpacks itself and runs Opus as its child)."""

    def __init__(self, binary: Path, data_dir: Path, **env: str) -> None:
        super().__init__(data_dir, **env)
        self.binary = binary

    def launch(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" serve', str(self.binary)],
                env=self.env,
                cwd=self.data_dir.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() reaches the child even if the bootloader dies
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError):
                if healthz(self.port):
                    return
            time.sleep(0.05)
        raise AssertionError(f"not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify"))
    yield sock
    sock.close()


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def healthz(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        return b" 200 " in s.recv(100)


async def test_binary_round_trip_under_systemds_protocol_then_sigterm(
    binary: Path, tmp_path: Path, notify_socket: NotifySocket, http: aiohttp.ClientSession
) -> None:
    server = BinaryProcess(
        binary,
        tmp_path / "run" / "data",
        NOTIFY_SOCKET=notify_socket.env_value,
        WATCHDOG_USEC="400000",
    )
    server.launch()
    try:
        assert server.proc is not None
        notify_socket.wait_for("READY=1")
        assert healthz(server.port)

        # The messages come from Opus, the bootloader's child: why opus.service says
        # NotifyAccess=all (systemd would drop them with the default, main).
        got = notify_socket.receive(10.0)
        while got is not None and "WATCHDOG=1" not in got[0]:
            got = notify_socket.receive(10.0)
        assert got is not None, "no watchdog ping from the binary"
        sender = got[1]
        assert sender != server.proc.pid and parent_of(sender) == server.proc.pid

        api = Api(http, server.base)
        room = await api.room("From the binary")
        poll = await api.poll(room["id"], ["Tea", "Coffee"])
        tea, coffee = (o["id"] for o in poll["options"])
        for choice in (tea, coffee, coffee):
            voter = await api.join(room["code"])
            status, body = await api.vote(voter, poll["id"], [choice])
            assert status == 202, body
        results = await api.total_when(poll["id"], 3)
        assert {o["label"]: o["votes"] for o in results["options"]} == {"Tea": 1, "Coffee": 2}

        # A voter's messages in every language: the binary holds Babel's data for each (dates,
        # lists and numbers in the final result's sentence), and only theirs.
        await api.call("POST", f"/api/v1/polls/{poll['id']}/close", headers=api.admin)
        deadline = time.monotonic() + 15
        while True:
            _, inbox = await api.call("GET", "/api/v1/notifications", headers=voter["headers"])
            if any(n["type"] == "poll_closed" for n in inbox["notifications"]):
                break
            assert time.monotonic() < deadline, inbox
            await asyncio.sleep(0.1)
        for lang in i18n.LANGUAGES:
            status, page = await api.call(
                "GET", f"/j/{room['code']}/inbox?lang={lang}", headers=voter["headers"]
            )
            assert status == 200 and f'lang="{lang}"' in page, (lang, status, page[:300])
            assert "Tea" in page and "Coffee" in page, lang

        # An operator's command, from the binary too, while it serves.
        archive = tmp_path / "backup.tar.gz"
        done = await asyncio.to_thread(
            subprocess.run,
            [str(binary), "backup", "--data-dir", str(server.data_dir), str(archive)],
            cwd=tmp_path,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        with tarfile.open(archive) as tar:
            assert any(name.endswith("opus.db") for name in tar.getnames())

        # A page from the templates inside the binary, and the static files, byte for byte.
        status, page = await api.call("GET", f"/screen/{room['code']}")
        assert status == 200 and f"/j/{room['code']}" in page
        static = [f for f in bundled_files() if f.startswith("opus/static/")]
        assert static
        for name in static:
            async with http.get(server.base + name.removeprefix("opus")) as r:
                assert r.status == 200, name
                assert await r.read() == (PACKAGE.parent / name).read_bytes(), name

        # SIGTERM to the process systemd started (KillMode=mixed): it reaches Opus once.
        assert server.terminate() == 0
        notify_socket.wait_for("STOPPING=1", timeout=5.0)
        log = server.log.read_text()
        assert log.count("stopped cleanly") == 1 and "Traceback" not in log
    finally:
        server.stop()

    # Everything acknowledged is still there after a restart of the binary.
    again = BinaryProcess(binary, tmp_path / "run" / "data")
    again.launch()
    try:
        again.wait_ready()
        status, body = await Api(http, again.base).call(
            "GET",
            f"/api/v1/polls/{poll['id']}/results",
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert status == 200 and body["total_votes"] == 3
        assert again.terminate() == 0
    finally:
        again.stop()


def test_binary_holds_python_and_the_resources(binary: Path, tmp_path: Path) -> None:
    viewer = Path(sys.executable).parent / "pyi-archive_viewer"
    listing = subprocess.run(
        [str(viewer), "--list", "--brief", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    names = {line.strip() for line in listing.splitlines()}
    wanted = bundled_files()
    assert wanted and not [f for f in wanted if f not in names]
    assert any(n.startswith("libpython3") for n in names)
    # Left out on purpose (opus.spec's excludes): nothing of the test tools or Tk.
    assert not [n for n in names if n.startswith(("tcl", "tk", "_tkinter", "pytest"))]

    clean_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no venv, no PYTHONPATH
    done = subprocess.run(
        [str(binary), "--version"],
        cwd=tmp_path,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and __version__ in done.stdout


# -- the Debian package ------------------------------------------------------------------------


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_deb_holds_binary_units_and_config(deb: Path, binary: Path, tmp_path: Path) -> None:
    info = dpkg_deb("--field", str(deb))
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
    assert fields["Package"] == "opus" and fields["Version"] == __version__
    assert "adduser" in fields["Depends"] and "libc6" in fields["Depends"]

    entries = {}
    for line in dpkg_deb("--contents", str(deb)).splitlines():
        mode, owner, *_, path = line.split()
        entries[path.removeprefix(".")] = (mode, owner)
    assert entries["/usr/bin/opus"] == ("-rwxr-xr-x", "root/root")
    for unit in ("opus.service", "opus-kiosk.service"):
        assert entries[f"/lib/systemd/system/{unit}"] == ("-rw-r--r--", "root/root")
    assert entries["/etc/opus/opus.toml"][0] == "-rw-r--r--"
    assert entries["/etc/opus/opus.env"][0] == "-rw-r-----"  # may hold the admin token
    assert "/var/lib/opus/" not in entries  # made by postinst, kept on remove

    conffiles = dpkg_deb("--info", str(deb), "conffiles").split()
    assert sorted(conffiles) == ["/etc/opus/kiosk.env", "/etc/opus/opus.env", "/etc/opus/opus.toml"]

    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "--raw-extract", str(deb), str(unpacked)], check=True)
    assert (unpacked / "usr/bin/opus").read_bytes() == binary.read_bytes()
    for unit in ("opus.service", "opus-kiosk.service"):
        assert (unpacked / "lib/systemd/system" / unit).read_text() == (
            ROOT / "systemd" / unit
        ).read_text()
    postinst = (unpacked / "DEBIAN/postinst").read_text()
    assert "adduser --system" in postinst and "/var/lib/opus" in postinst
    postrm = (unpacked / "DEBIAN/postrm").read_text()
    assert 'if [ "$1" = purge ]' in postrm  # the data goes only on purge
    for script in ("postinst", "prerm", "postrm"):
        path = unpacked / "DEBIAN" / script
        assert os.access(path, os.X_OK)
        subprocess.run(["sh", "-n", str(path)], check=True)
    # By the book: a copyright file (Opus's licence, and the NATS server's that the binary
    # carries), a changelog, a manual page.
    doc = unpacked / "usr/share/doc/opus"
    assert "License: Expat" in (doc / "copyright").read_text()
    assert "Apache License" in (doc / "nats-server.LICENSE").read_text()
    assert (doc / "changelog.gz").stat().st_size > 0
    assert (unpacked / "usr/share/man/man1/opus.1.gz").stat().st_size > 0
    assert "deb-systemd-helper" in postinst and "systemctl try-restart" not in postinst


def test_deb_passes_lintian(deb: Path) -> None:
    """Debian's checker finds no error in the package (.ci/run installs lintian)."""
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (Debian package lintian; .ci/run installs it)")
    checked = subprocess.run(
        ["lintian", "--fail-on", "error", "--tag-display-limit", "0", str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "E: " not in checked.stdout, checked.stdout


def test_the_binary_runs_a_box_of_a_venue_with_the_nats_server_it_carries(
    binary: Path, tmp_path: Path
) -> None:
    """The single binary alone (no Python, no venv on PATH) serves a box of a venue: the NATS
    server it starts is the one inside it."""
    http, nats = free_port(), free_port(pair=True)
    other_http, other_nats = free_port(), free_port(pair=True)
    made = subprocess.run(
        [str(binary), "venue", "init", "--out", str(tmp_path),
         f"--box=a=127.0.0.1:{http}:{nats}", f"--box=b=127.0.0.1:{other_http}:{other_nats}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Admin token at every box" in made.stdout
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OPUS_DATA_DIR": str(tmp_path / "d")}
    env |= {"OPUS_VENUE": str(tmp_path / "venue.toml"), "OPUS_BOX": "a", "OPUS_HOST": "127.0.0.1"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary), "serve"], env=env, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", http), timeout=0.5) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    if b" 200 " in s.recv(100):
                        break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", nats), timeout=2) as s:
            assert s.recv(4).startswith(b"INFO")  # its NATS server answers
        conf = (tmp_path / "d" / "nats" / "nats.conf").read_text()
        assert '"sync_interval": "always"' in conf
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_shipped_settings_file_is_one_opus_reads(tmp_path: Path) -> None:
    """The default /etc/opus/opus.toml, and every example commented out in it."""
    shipped = ROOT / "packaging" / "deb" / "opus.toml"
    assert read_config_file(shipped)["data_dir"] == Path("/var/lib/opus")
    examples = [
        line.removeprefix("# ")
        for line in shipped.read_text().splitlines()
        if line.startswith("# ") and " = " in line
    ]
    assert examples
    uncommented = tmp_path / "opus.toml"
    uncommented.write_text("\n".join(examples) + "\n")
    assert set(read_config_file(uncommented)) == set(tomllib.loads(uncommented.read_text()))
