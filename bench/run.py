"""Every benchmark in one run, each against its own freshly started server; rewrites
docs/benchmarks.md and its charts in docs/bench/.

    make bench                          # or: .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --quick

The steps are the scripts in bench/, each started as `python bench/NAME.py --write FILE`:
ingest (max vote rate against /healthz, latency at 25/50/75% of it), drain (workers applying a
backlog at start), sockets (a vote over the attendee's socket against /healthz, and the
event loop's stalls while a backlog of them drains), live (vote -> screen with 1,000 and 5,000
watchers, memory per idle socket), herd and herd-socket (bench/herd.py, on new connections
and on the phones' sockets), binary (start of dist/opus, built first when stale), backup,
venue, semester (memory across many closed polls, start-up on a million counted votes) and
pages (bytes per page with and without gzip, first paint on a slow link).
They write into a copy of the document; only when every step has run does the copy, with the
charts and the summary, replace docs/benchmarks.md, so an interrupted run changes nothing.
Sections the runner does not own (hand-written ones such as "Where the time goes") are kept.

A progress line goes to stderr (rewritten in place on a terminal, one line per step
otherwise), the steps' tables to stdout at the end, each step's full log to a file named in
the summary. Exit status 1 only when a correctness check failed (a vote lost or counted twice,
an answer that should have been 2xx, a server that did not stop with exit 0) or a step could
not run; a missed speed goal is marked in the document, never a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest import machine_facts

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable

# The document's sections in order; the runner owns all but the hand-written first one.
ORDER = [
    "Summary",
    "Where the time goes",
    "Ingest",
    "Charts",
    "Worker drain",
    "Socket votes",
    "Live",
    "Thundering herd",
    "Thundering herd over the sockets",
    "Single binary",
    "Backup",
    "Venue",
    "Semester",
    "Pages",
]
OWNED = {
    "Summary",
    "Charts",
    "Ingest",
    "Worker drain",
    "Socket votes",
    "Live",
    "Thundering herd",
    "Thundering herd over the sockets",
    "Single binary",
    "Backup",
    "Venue",
    "Semester",
    "Pages",
}
HERD = BENCH / "herd.py"
START_LOAD = os.getloadavg()


@dataclass
class Step:
    name: str
    section: str
    args: Callable[[], list[str]]  # evaluated when the step starts: it may use earlier data
    data: Path | None = None
    code: int | None = None
    seconds: float = 0.0
    stdout: str = ""
    log: Path | None = None
    ran: bool = False
    load_avg: float = 0.0  # the 1-minute load average when it started: other work here

    def load(self) -> dict[str, Any] | None:
        if self.data is None or not self.data.exists():
            return None
        return json.loads(self.data.read_text())  # type: ignore[no-any-return]


class Progress:
    """One status line on stderr: rewritten in place on a terminal; otherwise one line when
    each step ends (a log file has no use for a ticking clock)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()
        self.text = ""

    def show(self, text: str) -> None:
        with self.lock:
            self.text = text
            if self.tty:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                sys.stderr.write("\r\x1b[K" + text[:width])
                sys.stderr.flush()

    def done(self, text: str) -> None:
        with self.lock:
            sys.stderr.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            sys.stderr.flush()


def run_step(step: Step, index: int, total: int, work: Path, progress: Progress) -> None:
    """Run one script, its stderr to a log file and its last line to the progress line."""
    step.log = work / f"{step.name}.log"
    step.load_avg = os.getloadavg()[0]
    args = step.args()
    started = time.monotonic()
    latest = "starting"
    label = f"[{index}/{total}] {step.name}"
    with step.log.open("w") as log:
        log.write("$ " + " ".join(args) + "\n")
        log.flush()
        proc = subprocess.Popen(
            [PY, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        out: list[str] = []

        def read_out() -> None:
            assert proc.stdout is not None
            out.extend(proc.stdout)

        def read_err() -> None:
            nonlocal latest
            assert proc.stderr is not None
            for line in proc.stderr:
                log.write(line)
                log.flush()
                if line.strip():
                    latest = re.sub(r"^\[bench [\d:]+\] ", "", line.strip())

        readers = [
            threading.Thread(target=read_out, daemon=True),
            threading.Thread(target=read_err, daemon=True),
        ]
        for reader in readers:
            reader.start()
        while proc.poll() is None:
            progress.show(f"{label}: {latest} ... {time.monotonic() - started:.0f} s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.5)
        for reader in readers:
            reader.join()
    step.code = proc.returncode
    step.seconds = time.monotonic() - started
    step.stdout = "".join(out)
    step.ran = True
    verdict = "ok" if step.code == 0 else f"FAILED (exit {step.code}; log: {step.log})"
    progress.done(f"{label}: {verdict}, {step.seconds:.0f} s")


# -- the document ------------------------------------------------------------------------------


def sections(text: str) -> tuple[str, dict[str, str]]:
    """The text before the first `## ` heading, and each section's text by title, in order."""
    head, *parts = re.split(r"^(?=## )", text, flags=re.M)
    return head, {part[3:].split("\n", 1)[0].strip(): part.rstrip() + "\n" for part in parts}


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine(started: float) -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = f" ({found.group(1).strip()})" if found else ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "opus", "bench", "pyproject.toml")
    if dirty:
        commit += " plus uncommitted changes in the working tree"
    load = ", ".join(f"{x:.1f}" for x in START_LOAD)
    facts = machine_facts().replace(" cores", f" cores{cpu}", 1)
    return (
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))} at commit "
        f"{commit}; {facts}, Linux {platform.release()}; load average (1, 5, 15 min) "
        f"{load} at the start, {os.getloadavg()[0]:.1f} at the end."
    )


def how_to_read(quick: bool, took: float, started: float) -> str:
    mode = "`make bench`" + (" with `--quick` (shorter phases)" if quick else "")
    return f"""# Benchmarks

How to read this: every figure is a ratio or a distribution measured in the same run, because
the server and the load generators share one small machine and other work on it moves absolute
figures by 10-30% between runs. A goal from the issues is marked (met) or (missed); a missed
goal is a finding, not a failure. Correctness is checked in the same run (every vote answered,
counted exactly once, servers stopped with exit code 0); `make bench` exits non-zero only when
one of those checks fails.

How to rerun: `make bench` (about 20 minutes; needs `wrk`, and builds `dist/opus` when it is
older than the sources) rewrites this file and the charts in `docs/bench/`; `.venv/bin/python
bench/run.py --quick` is a shorter run. Each section names the script that wrote it; each
script also runs alone (`make bench-ingest`, `make bench-live`, `make bench-binary`,
`make bench-pages`, `make bench-semester`, `.venv/bin/python bench/drain.py`,
`bench/backup.py`, `bench/herd.py`) and its docstring says what each figure means. Sections
without a script (such as "Where the time goes") are written by hand and kept by the runner.

{machine(started)} This file: {mode}, {took / 60:.0f} min.
"""


def _met(ok: bool) -> str:
    return "(met)" if ok else "(missed)"


def speed_goals(steps: dict[str, Step], herd_socket_section: str) -> list[tuple[str, str, str]]:
    """Issue 17's table: each figure a ratio or a distribution of this run, with its goal."""
    rows: list[tuple[str, str, str]] = []
    ingest, sockets = steps["ingest"].load(), steps["sockets"].load()
    if ingest and "bare_post_cpu_us" in ingest:
        bare, vote = ingest["bare_post_cpu_us"], ingest["vote_cpu_us"]
        rows.append(
            (
                "bare aiohttp POST-with-JSON CPU per request : durable HTTP vote CPU",
                f"{bare:.0f} : {vote:.0f} µs = {bare / vote:.2f}",
                f">= 0.60 {_met(bare / vote >= 0.6)}",
            )
        )
    if sockets:
        ratio = sockets["socket_vote_cpu_us"] / sockets["healthz_cpu_us"]
        rows.append(
            (
                "durable vote over the socket CPU : GET /healthz CPU",
                f"{sockets['socket_vote_cpu_us']:.0f} : {sockets['healthz_cpu_us']:.0f} µs"
                f" = {ratio:.2f}",
                f"<= 1.0 {_met(ratio <= 1.0)}",
            )
        )
    found = re.search(
        r"^\| opening -> last screen showing the final tally \| ([0-9.]+) s",
        herd_socket_section,
        re.M,
    )
    voters = re.search(
        r"voters joined before the opening / screens watching \| ([0-9,]+) / (\d+)",
        herd_socket_section,
    )
    if found:
        took = float(found.group(1))
        who = f"{voters.group(1)} phones, {voters.group(2)} screens" if voters else "see below"
        rows.append(
            (
                "herd: phones with the page open vote within 1 s (on their sockets): last vote"
                " counted on every screen",
                f"{took:.2f} s ({who})",
                f"<= 3 s {_met(took <= 3)}",
            )
        )
    for level in (ingest or {}).get("latency", []):
        if level["level"] == 0.5:
            p99 = _quantiles(level["votes_ms"])[1]
            rows.append(
                (
                    f"POST vote p99 at half the max rate ({level['achieved']:,.0f}/s)",
                    f"{p99:.1f} ms",
                    f"< 15 ms {_met(p99 < 15)}",
                )
            )
    live = steps["live"].load()
    if live:
        by = {run["watchers"]: run["p99"] for run in live["runs"]}
        if 1000 in by and 5000 in by:
            rows.append(
                (
                    "vote -> screen p99, 1,000 / 5,000 watchers",
                    f"{by[1000]:.0f} / {by[5000]:.0f} ms",
                    f"<= 100 / 200 ms {_met(by[1000] <= 100 and by[5000] <= 200)}",
                )
            )
    semester = steps["semester"].load()
    if semester:
        ratio = semester["rss_ratio"]
        rows.append(
            (
                f"RSS after {semester['live_votes']:,} votes in {semester['live_polls']:,} "
                "closed polls : RSS at start",
                f"{semester['rss_end_mb']:.0f} : {semester['rss_start_mb']:.0f} MB = {ratio:.2f}",
                f"<= 1.2 {_met(ratio <= 1.2)}",
            )
        )
    if sockets and "stall" in sockets:
        rows.append(
            (
                f"longest event-loop stall while a backlog of {sockets['backlog']:,.0f} socket"
                f" votes drains (the last of {sockets['votes']:,} answered)",
                f"{sockets['stall']} ({sockets['stalls_over_10ms']} ticks late > 10 ms)",
                f"<= 10 ms {_met(sockets['stalls_over_10ms'] == 0)}",
            )
        )
    return rows


def summary(
    steps: dict[str, Step],
    herd_section: str = "",
    pages_section: str = "",
    herd_socket_section: str = "",
) -> str:
    """The headline figures and every correctness verdict of this run."""
    rows = speed_goals(steps, herd_socket_section)
    ingest = steps["ingest"].load()
    if ingest:
        ratio = ingest["ratio"]
        rows.append(
            (
                "durable votes/s : GET /healthz req/s",
                f"{ingest['vote_rate']:,.0f} : {ingest['healthz_rate']:,.0f} = {ratio:.2f}",
                "(its 0.6 goal is retired: issue 17)",
            )
        )
        if "vote_cpu_us" in ingest:
            health_cpu, vote_cpu = ingest["healthz_cpu_us"], ingest["vote_cpu_us"]
            rows.append(
                (
                    "server CPU per request, GET /healthz : vote (applied)",
                    f"{health_cpu:.0f} : {vote_cpu:.0f} µs = {health_cpu / vote_cpu:.2f}; "
                    f"applying {ingest['apply_us']:.0f} µs and group commit "
                    f"{ingest['commit_us']:.0f} µs of it",
                    "",
                )
            )
        if "bare_ratio" in ingest:
            rows.append(
                (
                    "bare aiohttp, no Opus code: POST with JSON : GET req/s",
                    f"{ingest['bare_post_rate']:,.0f} : {ingest['bare_get_rate']:,.0f} = "
                    f"{ingest['bare_ratio']:.2f}"
                    + (
                        f" (CPU per request: {ingest['bare_cpu_ratio']:.2f})"
                        if "bare_cpu_ratio" in ingest
                        else ""
                    ),
                    "the ratio's ceiling",
                )
            )
        if ingest.get("steal_pct"):
            rows.append(
                (
                    "CPU the host gave other guests, per ingest phase",
                    ", ".join(f"{k} {v:.0f}%" for k, v in ingest["steal_pct"].items()),
                    f"< {ingest.get('steal_warn_pct', 5)}% for comparable figures",
                )
            )
        for level in ingest.get("latency", []):
            pct = f"{100 * level['level']:.0f}%"
            votes, floor = _quantiles(level["votes_ms"]), _quantiles(level["healthz_ms"])
            goal = ""
            rows.append(
                (
                    f"POST vote p50 / p99 / p99.9 at {pct} of max "
                    f"({level['achieved']:,.0f}/s); /healthz floor",
                    f"{votes[0]:.1f} / {votes[1]:.1f} / {votes[2]:.1f} ms; "
                    f"{floor[0]:.1f} / {floor[1]:.1f} / {floor[2]:.1f} ms",
                    goal,
                )
            )
    drain = steps["drain"].load()
    if drain:
        text = f"{drain['rate']:,.0f} votes/s = {drain['rate'] / drain['healthz_rate']:.2f} x "
        text += "/healthz"
        goal = ""
        if ingest:
            keep_up = drain["rate"] / ingest["vote_rate"]
            text += f", {keep_up:.2f} x durable ingest"
            goal = ">= 1 x ingest " + ("(met)" if keep_up >= 1 else "(missed)")
        rows.append((f"worker drain of {drain['votes']:,} queued votes", text, goal))
    live = steps["live"].load()
    if live:
        for run in live["runs"]:
            mark = ""
            rows.append(
                (
                    f"vote -> screen p50 / p99 with {run['watchers']:,} watchers",
                    f"{run['p50']:.0f} / {run['p99']:.0f} ms, {run['missing']} missing",
                    mark,
                )
            )
        idle = live["idle"]
        at_10k = idle["before"] + idle["per_socket_kb"] * 10_000 / 1024
        rows.append(
            (
                "memory per idle WebSocket",
                f"{idle['per_socket_kb']:.1f} KB ({idle['sockets']:,} sockets: "
                f"{idle['before']:.0f} -> {idle['after']:.0f} MB RSS)",
                "10,000 in <= 600 MB " + ("(met)" if at_10k <= 600 else "(missed)"),
            )
        )
    binary = steps["binary"].load()
    if binary:
        b = sorted(binary["times"]["binary"])[len(binary["times"]["binary"]) // 2]
        p = sorted(binary["times"]["python"])[len(binary["times"]["python"]) // 2]
        rows.append(
            (
                "start to ready, dist/opus : python -m opus serve (medians)",
                f"{b:.2f} s : {p:.2f} s = {b / p:.2f}",
                "binary < 1.5 s " + ("(met)" if b < 1.5 else "(missed)"),
            )
        )
    semester = steps["semester"].load()
    if semester:
        rows.append(
            (
                f"start to ready with {semester['votes']:,} counted votes in "
                f"{semester['polls']:,} closed polls : with none",
                f"{semester['start_full_s']:.2f} : {semester['start_empty_s']:.2f} s = "
                f"{semester['start_full_s'] / semester['start_empty_s']:.2f}",
                "",
            )
        )
    if steps.get("herd") and steps["herd"].ran:
        # bench/herd.py writes no --data; its headline row is read from its own table.
        found = re.search(
            r"^\| (opening -> last vote counted[^|]*)\| ([^|]+)\|", herd_section, re.M
        )
        rows.append(
            (
                f"thundering herd: {found.group(1).strip()}" if found else "thundering herd",
                found.group(2).strip() if found else "see its section",
                "",
            )
        )
    if steps.get("pages") and steps["pages"].ran:
        # Likewise bench/pages.py: the attendee page's row of each table.
        weight = re.search(r"^\| attendee room page [^|]*\|.*\*\*(.+)\*\*", pages_section, re.M)
        paint = re.search(r"^\| first contentful paint \| ([^|]+)\| ([^|]+)\|", pages_section, re.M)
        rows.append(
            (
                "attendee page and its files, plain -> gzip; first paint at 1.5 Mbit/s and "
                "300 ms RTT, compression off -> on",
                (f"{weight.group(1)}" if weight else "see its section")
                + (f"; {paint.group(1).strip()} -> {paint.group(2).strip()}" if paint else ""),
                "",
            )
        )
    for step in steps.values():
        if step.ran:
            verdict = "passed" if step.code == 0 else f"FAILED (exit {step.code})"
            rows.append(
                (
                    f"correctness checks: {step.name}",
                    f"{verdict} ({step.seconds:.0f} s; load average {step.load_avg:.1f} "
                    "at its start)",
                    "",
                )
            )
        else:
            rows.append((f"{step.name}", "not run", ""))
    lines = [
        "## Summary",
        "",
        "Written by `bench/run.py` from the sections below.",
        "",
        "| figure | this run | goal |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and p99.9 (nearest rank, as bench/ingest.py computes them)."""
    ordered = sorted(values) or [math.nan]
    at = [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in (0.5, 0.99, 0.999)]
    return at[0], at[1], at[2]


def charts_section(made: list[tuple[str, Path]], doc: Path) -> str:
    lines = [
        "## Charts",
        "",
        "From the Ingest and Live runs above (`bench/charts.py`, matplotlib). The latency "
        "charts put percentiles on a log axis (p50, p90, p99, p99.9 evenly spaced), so "
        "the tail is visible.",
        "",
    ]
    for caption, path in made:
        rel = os.path.relpath(path, doc.parent)
        lines += [f"![{caption}]({rel})", ""]
    if not made:
        lines.append("No charts in this run (the Ingest and Live steps did not finish).")
    return "\n".join(lines).rstrip() + "\n"


def assemble(doc_text: str, head: str, own: dict[str, str], draft: Path, doc: Path) -> str:
    """Header, then the sections in ORDER (a title matches its entry or starts with it, as
    "Where the time goes (read before tuning)" does), then any others in their order."""
    _, found = sections(doc_text)
    found.update(own)
    ordered = []
    for entry in ORDER:
        for title in [t for t in found if t == entry or t.startswith(entry + " ")]:
            ordered.append(found.pop(title))
    ordered += list(found.values())
    text = head.rstrip() + "\n\n" + "\n".join(ordered)
    # The steps wrote into a draft and named it and their data files in their commands.
    text = text.replace(str(draft), os.path.relpath(doc, ROOT))
    return re.sub(r" --data \S+\.json", "", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases (about 4 min)")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--charts", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="STEP",
        help="run only these steps (ingest drain sockets live herd herd-socket binary backup"
        " venue semester pages); the other sections stay as they were: for trying, not for"
        " committing",
    )
    args = parser.parse_args()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="opus-bench-run-"))
    draft = work / "benchmarks.md"
    if args.doc.exists():
        shutil.copy(args.doc, draft)
    quick = args.quick
    steps: dict[str, Step] = {}

    def data(name: str) -> Path:
        return work / f"{name}.json"

    def ingest_rate() -> list[str]:
        loaded = steps["ingest"].load()
        return ["--ingest-rate", f"{loaded['vote_rate']:.1f}"] if loaded else []

    common = ["--write", str(draft)]
    steps["ingest"] = Step(
        "ingest",
        "Ingest",
        lambda: [
            "bench/ingest.py",
            *common,
            "--data",
            str(data("ingest")),
            *(["--seconds", "4"] if quick else []),
        ],
        data("ingest"),
    )
    steps["drain"] = Step(
        "drain",
        "Worker drain",
        lambda: [
            "bench/drain.py",
            *common,
            "--data",
            str(data("drain")),
            *ingest_rate(),
            *(["--votes", "20000", "--seconds", "3"] if quick else []),
        ],
        data("drain"),
    )
    steps["live"] = Step(
        "live",
        "Live",
        lambda: [
            "bench/live.py",
            *common,
            "--data",
            str(data("live")),
            *(["--seconds", "4", "--idle", "5000"] if quick else []),
        ],
        data("live"),
    )
    steps["sockets"] = Step(
        "sockets",
        "Socket votes",
        lambda: [
            "bench/sockets.py",
            *common,
            "--data",
            str(data("sockets")),
            *(["--voters", "1000", "--polls", "5", "--seconds", "4"] if quick else []),
        ],
        data("sockets"),
    )
    if HERD.exists():
        steps["herd"] = Step(
            "herd",
            "Thundering herd",
            lambda: ["bench/herd.py", *common, *(["--voters", "2000"] if quick else [])],
        )
        steps["herd-socket"] = Step(
            "herd-socket",
            "Thundering herd over the sockets",
            lambda: [
                "bench/herd.py",
                "--socket",
                *common,
                *(["--voters", "2000"] if quick else []),
            ],
        )
    steps["binary"] = Step(
        "binary",
        "Single binary",
        lambda: [
            "bench/binary.py",
            *common,
            "--data",
            str(data("binary")),
            *(["--starts", "3"] if quick else []),
        ],
        data("binary"),
    )
    steps["backup"] = Step(
        "backup",
        "Backup",
        lambda: ["bench/backup.py", *common, *(["--votes", "5000"] if quick else [])],
    )
    steps["venue"] = Step(
        "venue",
        "Venue",
        lambda: [
            "bench/venue.py",
            *common,
            *(["--seconds", "4", "--pending", "3000"] if quick else []),
        ],
    )
    steps["semester"] = Step(
        "semester",
        "Semester",
        lambda: [
            "bench/semester.py",
            *common,
            "--data",
            str(data("semester")),
            *(
                ["--votes", "100000", "--polls", "100", "--live", "30000", "--starts", "2"]
                if quick
                else []
            ),
        ],
        data("semester"),
    )
    steps["pages"] = Step(
        "pages",
        "Pages",
        lambda: [
            "bench/pages.py",
            *common,
            *(["--runs", "3", "--requests", "300"] if quick else []),
        ],
    )
    chosen = [s for name, s in steps.items() if not args.only or name in args.only]

    progress = Progress()
    total = len(chosen) + 1
    try:
        for i, step in enumerate(chosen, 1):
            run_step(step, i, total, work, progress)
    except KeyboardInterrupt:
        progress.done(f"interrupted; {args.doc} left as it was; logs in {work}")
        return 130

    progress.show(f"[{total}/{total}] charts and {args.doc.name}")
    import charts  # matplotlib: only needed here, so that a missing extra fails late and clearly

    made = charts.render(args.charts, steps["ingest"].load(), steps["live"].load())
    text = draft.read_text() if draft.exists() else ""
    herd_section = sections(text)[1].get("Thundering herd", "")
    herd_socket_section = sections(text)[1].get("Thundering herd over the sockets", "")
    pages_section = sections(text)[1].get("Pages", "")
    own: dict[str, str] = {
        "Charts": charts_section(made, args.doc),
        "Summary": summary(steps, herd_section, pages_section, herd_socket_section),
    }
    if not HERD.exists():
        own["Thundering herd"] = (
            "## Thundering herd\n\nNot measured in this run: "
            "bench/herd.py is not in this checkout.\n"
        )
    head = how_to_read(quick, time.time() - started, started)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(assemble(text, head, own, draft, args.doc))
    progress.done(
        f"[{total}/{total}] wrote {args.doc} and {len(made)} charts in "
        f"{args.charts}, {(time.time() - started) / 60:.1f} min; logs in {work}"
    )

    for step in chosen:
        print(f"\n### {step.name} ({step.seconds:.0f} s, exit {step.code})\n")
        print(step.stdout.strip() or "(no output)")
    failed = [s.name for s in chosen if s.code != 0]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}; see the logs in {work}", file=sys.stderr)
        for name in failed:
            log = steps[name].log
            if log and log.exists():
                print(f"--- {log} (end) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
