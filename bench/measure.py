"""Timing one operation at a time: warm-up, per-call ``perf_counter``, and the figures we report.

Every call is timed on its own so that percentiles mean something; the loop around it costs a
few hundred nanoseconds, which is noise next to the microseconds-to-milliseconds being measured.
A stage and its raw-crypto floor are measured in alternating time slices of the same run, so a
machine that speeds up or slows down (turbo, a neighbour's job) moves both the same way.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """How long to measure each operation.

    ``seconds`` is the time spent in the measured calls of one operation (its floor gets the
    same again), split into ``rounds`` slices; every operation runs at least ``min_n`` and at
    most ``max_n`` timed calls, after ``warmup`` untimed ones.
    """

    seconds: float
    min_n: int
    warmup: int
    rounds: int = 5
    max_n: int | None = None


FULL = Budget(seconds=2.0, min_n=200, warmup=50)
QUICK = Budget(seconds=0.2, min_n=20, warmup=5, rounds=2)


@dataclass(frozen=True)
class Timings:
    """Durations of ``n`` calls, in seconds."""

    durations: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.durations)

    @property
    def mean(self) -> float:
        return sum(self.durations) / self.n

    @property
    def ops_per_s(self) -> float:
        # One core, one call at a time: the rate is the inverse of the mean call.
        return 1.0 / self.mean

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile (p in 0..100)."""
        ordered = sorted(self.durations)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    def summary_us(self) -> dict[str, float | int]:
        return {
            "ops_per_s": round(self.ops_per_s, 1),
            "mean_us": round(self.mean * 1e6, 2),
            "p50_us": round(self.percentile(50) * 1e6, 2),
            "p99_us": round(self.percentile(99) * 1e6, 2),
            "n": self.n,
        }


Op = Callable[[int], object]


def _slice(op: Op, start_index: int, seconds: float, at_least: int, at_most: int | None, out: list[float]) -> int:
    """Time calls to ``op(i)`` until ``seconds`` of measured time and ``at_least`` calls; the count."""
    clock = time.perf_counter
    spent, i = 0.0, start_index
    while (spent < seconds or i - start_index < at_least) and (at_most is None or i - start_index < at_most):
        t0 = clock()
        op(i)
        d = clock() - t0
        out.append(d)
        spent += d
        i += 1
    return i - start_index


def _warm(op: Op, budget: Budget) -> None:
    for i in range(budget.warmup):
        op(i)


def measure(op: Op, budget: Budget) -> Timings:
    """Time ``op(i)`` for i = 0, 1, 2, ... (``i`` lets the caller cycle through inputs)."""
    return measure_pair(op, None, budget)[0]


def measure_pair(op: Op, floor: Op | None, budget: Budget) -> tuple[Timings, Timings | None]:
    """Time ``op`` and, interleaved with it slice by slice, ``floor`` (if any)."""
    _warm(op, budget)
    if floor is not None:
        _warm(floor, budget)
    rounds = max(1, budget.rounds)
    per_round_s = budget.seconds / rounds
    per_round_min = math.ceil(budget.min_n / rounds)
    per_round_max = None if budget.max_n is None else max(1, budget.max_n // rounds)
    op_durations: list[float] = []
    floor_durations: list[float] = []
    i = j = 0
    for _ in range(rounds):
        # Collect garbage between slices, not inside them: a collection triggered by the previous
        # slice's allocations should not land on this one's clock.
        gc.collect()
        i += _slice(op, i, per_round_s, per_round_min, per_round_max, op_durations)
        if floor is not None:
            gc.collect()
            j += _slice(floor, j, per_round_s, per_round_min, per_round_max, floor_durations)
    return Timings(tuple(op_durations)), (Timings(tuple(floor_durations)) if floor is not None else None)
