"""Measurement windows and the rule that decides when a cell has measured enough.

perf_analyzer's rule: the last three windows agree within 10% on throughput and on latency (p50
here). A window counts only when it holds enough requests to say something; one that does not is
followed by a window twice as long, and while the counted windows disagree each next window is
longer again, so a noisy cell gets longer windows instead of more short ones, until it is stable
or its time cap is reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tritonstack.benchmarks.config import WindowRule
from tritonstack.benchmarks.stats import latency_ms

# Next window's length after one with too few requests, and after the counted ones disagreed.
_SHORT_GROWTH = 2.0
_UNSTABLE_GROWTH = 1.5


@dataclass(eq=False)  # windows are told apart by identity
class Window:
    """Requests that completed within [start, end) (perf_counter seconds): their latencies, how
    late each was sent against its schedule (open loop), and Triton's statistics at both ends."""

    start: float
    end: float
    latencies_s: list[float] = field(default_factory=list)
    stats_before: dict[str, Any] = field(default_factory=dict)
    stats_after: dict[str, Any] = field(default_factory=dict)
    lags_s: list[float] = field(default_factory=list)
    counted: bool = True

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        """Requests per second."""
        return self.requests / self.duration_s

    @property
    def p50_ms(self) -> float:
        return latency_ms(self.latencies_s)["p50"] if self.latencies_s else float("inf")

    def summary(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "requests": self.requests,
            "counted": self.counted,
            "throughput_rps": self.throughput,
            "p50_ms": self.p50_ms,
        }


def agree(values: Sequence[float], tolerance: float) -> bool:
    """True when the largest value is within `tolerance` (relative) of the smallest."""
    low, high = min(values), max(values)
    return low > 0 and high <= low * (1 + tolerance)


def is_stable(windows: Sequence[Window], count: int = 3, tolerance: float = 0.10) -> bool:
    """The last `count` windows agree on throughput and on p50 latency."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    return agree([w.throughput for w in last], tolerance) and agree([w.p50_ms for w in last], tolerance)


class Series:
    """The windows of one cell after its warm-up: how long the next one runs, which count, and
    whether the cell is done (stable, or too little of its time cap left for another window)."""

    def __init__(self, rule: WindowRule, started: float) -> None:
        self.rule, self.started = rule, started
        self.windows: list[Window] = []
        self.stable = False
        self._length = rule.window_s
        self._end = started

    @property
    def counted(self) -> list[Window]:
        return [w for w in self.windows if w.counted]

    @property
    def length(self) -> float:
        """The next window's length: grown as the windows so far asked, within the cap."""
        return min(self._length, self.rule.max_cell_s - (self._end - self.started))

    def add(self, window: Window) -> bool:
        """Record `window`; True when the cell is done."""
        window.counted = window.requests >= self.rule.min_requests
        self.windows.append(window)
        self._end = window.end
        counted = self.counted
        self.stable = is_stable(counted, self.rule.count, self.rule.tolerance)
        if not window.counted:
            self._length *= _SHORT_GROWTH
        elif not self.stable and len(counted) >= self.rule.count:
            self._length *= _UNSTABLE_GROWTH
        return self.stable or self.length < self.rule.window_s

    def last(self) -> Window:
        """The cell's measurement: the windows from the first of its last `count` counted ones to
        the end, as one (every window when none counted)."""
        counted = self.counted[-self.rule.count :]
        first = self.windows.index(counted[0]) if counted else 0
        return merge(self.windows[first:])


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
        merged.lags_s.extend(w.lags_s)
    return merged
