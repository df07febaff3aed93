"""The fault suite's size knob and its figures.

`OPUS_FAULTS=full` (what `make faults` sets) runs every fault at full size; without it the
modest sizes run inside `make test` and CI. Each test adds lines to `figures`; they are
printed at the end of the run, so the reconciliation of every fault is in the output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Sizes:
    full: bool
    kill_cycles: int  # kill -9 cycles (at least 20 at every size)
    kill_voters: int  # voters, each voting once in each of `kill_polls` polls
    kill_polls: int
    term_cycles: int  # SIGTERM cycles
    term_voters: int
    burst_voters: int  # voters in the disk-full burst
    slow_clients: int  # slowloris connections held open at once
    half_bodies: int  # requests whose body never fully arrives
    garbage: int  # connections that send garbage instead of HTTP
    flood: int  # connections opened and closed in the flood
    clock_voters: int  # voters per clock jump
    concurrency: int  # votes in flight at once
    power_cuts: int  # power cuts under load (test_powercut.py)
    first_start_cuts: int  # power cuts in the first seconds of a first start
    backup_cuts: int  # power cuts around a backup


MODEST = Sizes(
    full=False,
    kill_cycles=20,
    kill_voters=120,
    kill_polls=3,
    term_cycles=3,
    term_voters=150,
    burst_voters=300,
    slow_clients=200,
    half_bodies=100,
    garbage=100,
    flood=2000,
    clock_voters=10,
    concurrency=24,
    power_cuts=4,
    first_start_cuts=3,
    backup_cuts=3,
)
FULL = Sizes(
    full=True,
    kill_cycles=40,
    kill_voters=1500,
    kill_polls=4,
    term_cycles=10,
    term_voters=600,
    burst_voters=2000,
    slow_clients=1000,
    half_bodies=500,
    garbage=500,
    flood=10000,
    clock_voters=60,
    concurrency=48,
    power_cuts=50,
    first_start_cuts=10,
    backup_cuts=10,
)

_FIGURES: list[str] = []


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return FULL if os.environ.get("OPUS_FAULTS", "").lower() == "full" else MODEST


class Figures:
    """What a fault test measured, printed in the run's summary."""

    def __init__(self, test: str) -> None:
        self.test = test

    def add(self, text: str, **numbers: Any) -> None:
        detail = ", ".join(f"{k}={v}" for k, v in numbers.items())
        _FIGURES.append(f"{self.test}: {text}" + (f" ({detail})" if detail else ""))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("fault suite figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
