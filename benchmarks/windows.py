"""Measurement windows and the stability rule that decides when a cell has measured enough."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tritonstack.benchmarks.stats import latency_ms


@dataclass
class Window:
    """Requests that completed within [start, end) (perf_counter seconds), and Triton's
    statistics at both ends."""

    start: float
    end: float
    latencies_s: list[float] = field(default_factory=list)
    stats_before: dict[str, Any] = field(default_factory=dict)
    stats_after: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def throughput(self) -> float:
        """Requests per second."""
        return len(self.latencies_s) / self.duration_s

    @property
    def p99_ms(self) -> float:
        return latency_ms(self.latencies_s)["p99"] if self.latencies_s else float("inf")

    def summary(self) -> dict[str, float]:
        return {
            "duration_s": self.duration_s,
            "requests": len(self.latencies_s),
            "throughput_rps": self.throughput,
            "p99_ms": self.p99_ms,
        }


def agree(values: Sequence[float], tolerance: float) -> bool:
    """True when the largest value is within `tolerance` (relative) of the smallest."""
    low, high = min(values), max(values)
    return low > 0 and high <= low * (1 + tolerance)


def is_stable(windows: Sequence[Window], count: int = 3, tolerance: float = 0.10) -> bool:
    """The last `count` windows agree on throughput and on p99 latency."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    return agree([w.throughput for w in last], tolerance) and agree([w.p99_ms for w in last], tolerance)


def merge(windows: Sequence[Window]) -> Window:
    """Consecutive windows as one: their requests, from the first start to the last end."""
    merged = Window(
        windows[0].start,
        windows[-1].end,
        stats_before=windows[0].stats_before,
        stats_after=windows[-1].stats_after,
    )
    for w in windows:
        merged.latencies_s.extend(w.latencies_s)
    return merged
