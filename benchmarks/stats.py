"""Latency percentiles on the client side and Triton's statistics as per-request deltas."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# Triton's cumulative per-request durations (inference_stats); `success` covers the whole request.
SERVER_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def latency_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """Mean and percentiles in milliseconds: {"mean": .., "p50": .., "p90": .., ...}."""
    values = np.asarray(latencies_s, dtype=np.float64) * 1e3
    summary = {"mean": float(values.mean())}
    summary.update(
        {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)}
    )
    return summary


def _counters(stats: Mapping[str, Any], model: str, version: str) -> dict[str, tuple[int, int]]:
    """phase -> (count, ns) of one model version, and `batches` -> (model executions, samples they
    ran); the JSON omits zeros and writes uint64 as strings."""
    for entry in stats.get("model_stats", []):
        if entry.get("name") == model and entry.get("version") == version:
            inference = entry.get("inference_stats", {})
            counters = {
                phase: (
                    int(inference.get(phase, {}).get("count", 0)),
                    int(inference.get(phase, {}).get("ns", 0)),
                )
                for phase in ("success", *SERVER_PHASES)
            }
            counters["batches"] = (int(entry.get("execution_count", 0)), int(entry.get("inference_count", 0)))
            return counters
    raise KeyError(f"no statistics for {model} version {version}")


def server_delta(
    before: Mapping[str, Any], after: Mapping[str, Any], model: str, version: str
) -> dict[str, float]:
    """Requests that succeeded between two snapshots and the mean microseconds each spent per phase
    (`total` is Triton's whole request time, from arrival to response); `formed_batch` is the mean
    number of samples per model execution, the batch size the dynamic batcher formed."""
    a, b = _counters(before, model, version), _counters(after, model, version)
    requests = b["success"][0] - a["success"][0]
    per_request = {phase: (b[phase][1] - a[phase][1]) / max(requests, 1) / 1e3 for phase in SERVER_PHASES}
    per_request["total"] = (b["success"][1] - a["success"][1]) / max(requests, 1) / 1e3
    per_request["requests"] = float(requests)
    executions, samples = (b["batches"][i] - a["batches"][i] for i in (0, 1))
    per_request["executions"] = float(executions)
    per_request["formed_batch"] = samples / executions if executions else 0.0
    return per_request
