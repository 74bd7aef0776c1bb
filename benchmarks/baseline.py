"""In-process baselines: the repository's own artifact (ONNX Runtime, TorchScript) and eager
PyTorch, called sequentially in the benchmark process, with the same windows as served cells."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tritonstack.benchmarks.config import WindowRule
from tritonstack.benchmarks.stats import latency_ms
from tritonstack.benchmarks.windows import Window, is_stable, merge
from tritonstack.runtimes.runners import Runner
from tritonstack.spec import Array


def measure_runner(runner: Runner, feeds: Mapping[str, Array], rule: WindowRule) -> tuple[list[Window], bool]:
    """Sequential calls: one window of warm-up, then windows until stable or the time is up."""
    started = time.perf_counter()
    windows: list[Window] = []
    window, warming_up = Window(started, started), True
    while True:
        begin = time.perf_counter()
        runner.infer(feeds)
        now = time.perf_counter()
        window.latencies_s.append(now - begin)
        if now - window.start < rule.window_s:
            continue
        window.end = now
        if not warming_up:
            windows.append(window)
        warming_up = False
        stable = is_stable(windows, rule.count, rule.tolerance)
        if stable or (len(windows) >= rule.count and now - started + rule.window_s > rule.max_cell_s):
            return windows, stable
        window = Window(now, now)


def baseline_result(
    runner: Runner, feeds: Mapping[str, Array], batch_size: int, rule: WindowRule
) -> dict[str, Any]:
    windows, stable = measure_runner(runner, feeds, rule)
    last = merge(windows[-rule.count :])
    return {
        "runtime": runner.name,
        "batch_size": batch_size,
        "stable": stable,
        "latency_ms": latency_ms(last.latencies_s),
        "inferences_per_s": last.throughput,
        "samples_per_s": last.throughput * batch_size,
        "windows": [w.summary() for w in windows],
    }
