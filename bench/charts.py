"""SVG charts for docs/benchmarks.md, from the JSON that the benchmarks write with --data.

    .venv/bin/python bench/charts.py --ingest ingest.json --live live.json --out docs/bench

Needs matplotlib (`pip install -e '.[bench]'`). Rendered with the SVG backend, text kept as
text, a fixed hash salt and no date, so the same figures give the same files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # after use(): the backend is chosen before pyplot loads
from matplotlib.ticker import FixedLocator, FuncFormatter

plt.rcParams.update(
    {
        "svg.hashsalt": "opus-bench",  # stable ids: a rerun with the same figures is the same file
        "svg.fonttype": "none",
        "figure.figsize": (7.5, 4.0),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)

LEVEL_COLOURS = {0.25: "#1b9e77", 0.5: "#d95f02", 0.75: "#7570b3"}
NINES = [0.5, 0.9, 0.99, 0.999, 0.9999]


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def _percentile_curve(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """(x, latency) for a percentile plot: x = 1 / (1 - q), so p50, p90, p99, p99.9 are
    evenly spaced on a log axis and the tail gets the room it deserves."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return [], []
    # About 60 points per decade of x: the file stays small and the tail keeps every value.
    xs, ys, last = [], [], 0.0
    for i, v in enumerate(ordered):
        x = 1 / (1 - (i + 0.5) / n)
        if x >= last * 1.04 or i == n - 1:
            xs.append(x)
            ys.append(v)
            last = x
    return xs, ys


def _nines_axis(ax: Any, most: float) -> None:
    ax.set_xscale("log")
    ticks = [1 / (1 - q) for q in NINES if 1 / (1 - q) <= most * 1.01]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"p{100 * (1 - 1 / x):g}"))
    ax.set_xlim(1.0, max(ticks[-1], most) if ticks else most)


def latency(ingest: dict[str, Any], path: Path) -> Path:
    """POST vote latency by percentile at each open-loop level, /healthz floor dashed."""
    fig, ax = plt.subplots()
    most, least = 2.0, math.inf
    for level in ingest.get("latency", []):
        colour = LEVEL_COLOURS.get(level["level"], None)
        pct = f"{100 * level['level']:.0f}%"
        xs, ys = _percentile_curve(level["votes_ms"])
        ax.plot(
            xs,
            ys,
            color=colour,
            lw=1.6,
            label=f"POST vote at {pct} of max ({level['achieved']:,.0f}/s)",
        )
        fx, fy = _percentile_curve(level["healthz_ms"])
        ax.plot(fx, fy, color=colour, lw=1.0, ls="--", label=f"GET /healthz at {pct} (floor)")
        most = max(most, xs[-1] if xs else 2.0)
        least = min([least, *(y for y in ys + fy if y > 0)])
    ax.axhline(20, color="grey", lw=0.8, ls=":")
    ax.text(1.05, 20, "goal at 50%: p99 < 20 ms", color="grey", va="bottom", fontsize=8)
    _nines_axis(ax, most)
    ax.set_yscale("log")
    if least < math.inf:
        ax.set_ylim(bottom=0.8 * least)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_xlabel("percentile (open loop, from the scheduled send time)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Vote latency at 25%, 50% and 75% of the maximum rate")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _rates(samples: list[list[float]], column: int) -> tuple[list[float], list[float]]:
    """Per-interval rate of a counter column: (midpoint seconds, per second)."""
    ts, rates = [], []
    for a, b in itertools.pairwise(samples):
        dt = b[0] - a[0]
        if dt > 0:
            ts.append((a[0] + b[0]) / 2)
            rates.append((b[column] - a[column]) / dt)
    return ts, rates


def throughput(ingest: dict[str, Any], path: Path) -> Path:
    """Votes accepted and counted per second during the max-rate phase, against /healthz."""
    samples = ingest["samples"]
    fig, ax = plt.subplots()
    ts, accepted = _rates(samples, 1)
    ax.plot(ts, accepted, lw=1.4, label="votes accepted (202, durable) per s")
    ts, counted = _rates(samples, 2)
    ax.plot(ts, counted, lw=1.0, label="votes counted by the workers per s")
    healthz = ingest["healthz_rate"]
    ax.axhline(
        healthz,
        color="grey",
        lw=1.0,
        ls="--",
        label=f"GET /healthz req/s, same run ({healthz:,.0f})",
    )
    ax.axhline(0.6 * healthz, color="grey", lw=0.8, ls=":", label="goal: 0.6 x /healthz")
    ax.axvspan(0, ingest["wrk_seconds"], color="#cccccc", alpha=0.25, lw=0)
    ax.set_ylim(0, healthz * 1.1)
    ax.set_xlabel("seconds since wrk started (shaded: wrk running; /metrics every 0.25 s)")
    ax.set_ylabel("per second")
    ax.set_title(
        f"Max-rate phase: {ingest['vote_rate']:,.0f} votes/s = {ingest['ratio']:.2f} x /healthz"
    )
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def queue_depth(ingest: dict[str, Any], path: Path) -> Path:
    """opus_queue_depth during the max-rate phase and its drain after."""
    samples = ingest["samples"]
    fig, ax = plt.subplots()
    ax.step([s[0] for s in samples], [s[3] for s in samples], where="post", lw=1.2)
    ax.axvspan(0, ingest["wrk_seconds"], color="#cccccc", alpha=0.25, lw=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since wrk started (shaded: wrk running; /metrics every 0.25 s)")
    ax.set_ylabel("votes accepted, not yet applied")
    ax.set_title("Queue depth at the maximum vote rate")
    return _save(fig, path)


def _histogram_curve(histogram_ms: list[int]) -> tuple[list[float], list[float]]:
    total = sum(histogram_ms)
    xs, ys, seen = [], [], 0
    for bucket, n in enumerate(histogram_ms):
        if not n:
            continue
        seen += n
        q = min(seen / total, 1 - 0.5 / total)
        xs.append(1 / (1 - q))
        ys.append(bucket + 0.5)
    return xs, ys


def live(data: dict[str, Any], path: Path) -> Path:
    """Vote -> screen latency by percentile, one line per watcher count."""
    fig, ax = plt.subplots()
    most = 2.0
    for run in data["runs"]:
        xs, ys = _histogram_curve(run["histogram_ms"])
        ax.plot(
            xs,
            ys,
            lw=1.5,
            drawstyle="steps-post",
            label=f"{run['watchers']:,} watchers, {data['rate']:g} votes/s",
        )
        most = max(most, xs[-1] if xs else 2.0)
    _nines_axis(ax, min(most, 1e5))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("percentile over (vote, watcher) pairs")
    ax.set_ylabel("vote 202 -> results frame on the socket (ms)")
    ax.set_title("Vote -> screen latency")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def render(
    out: Path, ingest: dict[str, Any] | None, live_data: dict[str, Any] | None
) -> list[tuple[str, Path]]:
    """Every chart the data allows; (caption, file) pairs."""
    made: list[tuple[str, Path]] = []
    if ingest and ingest.get("latency"):
        made.append(
            (
                "POST vote latency by percentile at 25/50/75% of the maximum rate, with "
                "the /healthz floor at the same rates",
                latency(ingest, out / "latency.svg"),
            )
        )
    if ingest and ingest.get("samples"):
        made.append(
            ("Votes per second over the max-rate phase", throughput(ingest, out / "throughput.svg"))
        )
        made.append(
            ("Queue depth over the max-rate phase", queue_depth(ingest, out / "queue-depth.svg"))
        )
    if live_data and live_data.get("runs"):
        made.append(("Vote -> screen latency by percentile", live(live_data, out / "live.svg")))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingest", type=Path, help="JSON from bench/ingest.py --data")
    parser.add_argument("--live", type=Path, help="JSON from bench/live.py --data")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()

    def load(path: Path | None) -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path else None

    for caption, path in render(args.out, load(args.ingest), load(args.live)):
        print(f"{path}: {caption}")


if __name__ == "__main__":
    main()
