"""Single-binary benchmark: the size of dist/opus and its start-to-ready time, against
`python -m opus serve` from the venv started the same way in the same run.

Usage (from the repository root):

    make bench-binary                    # or: .venv/bin/python bench/binary.py
    .venv/bin/python bench/binary.py --starts 11 --write docs/benchmarks.md

It runs `make binary` first (nothing to do while dist/opus is newer than its sources; the
build time is printed when it does build). Start-to-ready is the time from starting the process
to the first `GET /healthz` answered 200, polled every 5 ms on a fresh connection. Both servers
start on one data dir that a first, untimed start has created, so each timed start is a
restart: open the database, recover, listen. The binary's starts include unpacking itself into
a temporary folder, which it does on every start. Runs alternate between the two so that other
work on the machine weighs on both alike; the table gives the median and the range.

It prints a Markdown table to stdout, progress to stderr; --write replaces the `## Single
binary` section of the given file, --data writes the figures as JSON. Exit status 1 when a
server failed to start or stop cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingest import machine_facts, replace_section

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "dist" / "opus"
SIZE_GOAL_MB = 40.0
READY_GOAL_S = 1.5


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return s.recv(16).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def build() -> float | None:
    """`make binary`; the seconds it took when it had something to do."""
    stale = subprocess.run(["make", "-q", "binary"], cwd=ROOT).returncode != 0
    started = time.perf_counter()
    subprocess.run(["make", "-s", "binary"], cwd=ROOT, check=True, stdout=sys.stderr)
    return time.perf_counter() - started if stale else None


def start_to_ready(command: list[str], data_dir: Path, timeout: float = 30.0) -> float:
    """Seconds from starting `command` to /healthz 200; the server is then stopped (SIGTERM)
    and must exit 0."""
    port = free_port()
    env = {
        **os.environ,
        "OPUS_HOST": "127.0.0.1",
        "OPUS_PORT": str(port),
        "OPUS_DATA_DIR": str(data_dir),
        "OPUS_ADMIN_TOKEN": "bench-admin-token",
        "OPUS_CONFIG": os.devnull,
    }
    env.pop("NOTIFY_SOCKET", None)
    started = time.perf_counter()
    # Its own session: killing the group reaches the binary's child if the bootloader dies.
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=data_dir.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while not healthy(port):
            if proc.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError(f"{command[0]} did not become ready")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"{command[0]} exited {proc.returncode}: {err.decode()[-500:]}")
        return elapsed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def describe(times: list[float]) -> str:
    return (
        f"{statistics.median(times):.2f} s (range {min(times):.2f}-{max(times):.2f} s, "
        f"{len(times)} starts)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=9, help="timed starts of each server")
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help="replace the '## Single binary' section of FILE"
    )
    parser.add_argument("--data", type=Path, metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args()

    build_s = build()
    if build_s is not None:
        progress(f"built {BINARY} in {build_s:.0f} s")
    size_mb = BINARY.stat().st_size / 1e6
    commands = {
        "binary": [str(BINARY), "serve"],
        "python": [str(ROOT / ".venv" / "bin" / "python"), "-m", "opus", "serve"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="opus-bench-binary-") as tmp:
        for name, command in commands.items():
            data_dir = Path(tmp) / name / "data"
            data_dir.mkdir(parents=True)
            first = start_to_ready(command, data_dir)
            progress(f"{name}: first start on an empty data dir {first:.2f} s")
        for i in range(args.starts):
            for name, command in commands.items():
                times[name].append(start_to_ready(command, Path(tmp) / name / "data"))
            progress(
                f"start {i + 1}/{args.starts}: binary {times['binary'][-1]:.2f} s, "
                f"python {times['python'][-1]:.2f} s"
            )

    binary_s = statistics.median(times["binary"])
    python_s = statistics.median(times["python"])
    size_note = "met" if size_mb < SIZE_GOAL_MB else "missed"
    ready_note = "met" if binary_s < READY_GOAL_S else "missed"
    rows = [
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| size of dist/opus | {size_mb:.1f} MB | < {SIZE_GOAL_MB:.0f} MB ({size_note}) |",
        f"| start to ready, binary | {describe(times['binary'])} "
        f"| < {READY_GOAL_S} s ({ready_note}) |",
        f"| start to ready, `python -m opus serve` (venv) | {describe(times['python'])} "
        "| baseline |",
        f"| binary : python | {binary_s / python_s:.2f} | |",
    ]
    if build_s is not None:
        rows.append(f"| `make binary` (this run) | {build_s:.0f} s | |")
    table = "\n".join(rows)
    print(table)
    if args.write:
        body = (
            f"{time.strftime('%Y-%m-%d')}: `bench/binary.py --starts {args.starts}` "
            f"(`make bench-binary`) on {machine_facts()}.\n\n"
            "Start to ready: from starting the process to the first `GET /healthz` 200, "
            "restarting on an existing data dir; the binary unpacks itself into a "
            "temporary folder on every start, which the Python run does not have to do.\n\n" + table
        )
        replace_section(args.write, "Single binary", body)
    if args.data:
        args.data.write_text(
            json.dumps(
                {"ok": True, "size_mb": size_mb, "times": times, "build_s": build_s, "table": table}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
