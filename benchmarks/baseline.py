"""In-process baselines: the repository's own artifact (ONNX Runtime, TorchScript, TensorRT) and,
where asked, eager PyTorch, called sequentially in the benchmark process on the same pool of inputs
and with the same windows as served cells."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tritonstack.benchmarks.config import WindowRule
from tritonstack.benchmarks.stats import latency_ms
from tritonstack.benchmarks.windows import Series, Window
from tritonstack.runtimes.runners import Runner
from tritonstack.spec import Array


def measure_runner(runner: Runner, pool: Sequence[Mapping[str, Array]], rule: WindowRule) -> Series:
    """Sequential calls cycling through `pool`: one window of warm-up, then windows as `rule` says."""
    feeds = itertools.cycle(pool)
    started = time.perf_counter()
    series = Series(rule, started)
    window, warming_up = Window(started, started), True
    while True:
        begin = time.perf_counter()
        runner.infer(next(feeds))
        now = time.perf_counter()
        window.latencies_s.append(now - begin)
        if now - window.start < (rule.window_s if warming_up else series.length):
            continue
        window.end = now
        if not warming_up and series.add(window):
            return series
        warming_up = False
        window = Window(now, now)


def baseline_result(
    runner: Runner, pool: Sequence[Mapping[str, Array]], batch_size: int, rule: WindowRule
) -> dict[str, Any]:
    series = measure_runner(runner, pool, rule)
    last = series.last()
    return {
        "runtime": runner.name,
        "batch_size": batch_size,
        "stable": series.stable,
        "latency_ms": latency_ms(last.latencies_s),
        "latency_samples": last.requests,
        "inferences_per_s": last.throughput,
        "samples_per_s": last.throughput * batch_size,
        "windows": [w.summary() for w in series.windows],
    }
