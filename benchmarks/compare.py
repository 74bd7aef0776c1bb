"""`tritonstack bench compare A.json B.json`: per-cell ratios B/A of latency and throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from tritonstack.benchmarks.report import read_results
from tritonstack.errors import UsageError

Key = tuple[str, str, int, str, float]
METRICS = ("p50", "p99", "inferences_per_s")


def _cells(path: Path) -> dict[Key, dict[str, Any]]:
    results = read_results(path)
    return {(c["model"], c["format"], c["batch_size"], c["mode"], c["level"]): c for c in results["cells"]}


def _metric(cell: dict[str, Any], metric: str) -> float:
    value: float = cell[metric] if metric == "inferences_per_s" else cell["latency_ms"][metric]
    return value


def ratios(a: Path, b: Path) -> dict[Key, dict[str, float]]:
    """B/A for every cell both runs measured (latency < 1 and throughput > 1: B is faster)."""
    cells_a, cells_b = _cells(a), _cells(b)
    common = [k for k in cells_a if k in cells_b]
    if not common:
        raise UsageError(f"{a} and {b} have no cell in common")
    return {k: {m: _metric(cells_b[k], m) / _metric(cells_a[k], m) for m in METRICS} for k in common}


def table(a: Path, b: Path) -> Table:
    result = Table(title=f"{b} / {a}")
    for column in ("model", "format", "batch", "mode", "level", *(f"{m} ratio" for m in METRICS)):
        result.add_column(column, justify="right")
    for (model, fmt, batch, mode, level), r in ratios(a, b).items():
        result.add_row(model, fmt, str(batch), mode, f"{level:g}", *(f"{r[m]:.3f}" for m in METRICS))
    return result
