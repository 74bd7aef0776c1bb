"""The latest benchmark summary of each measured version, recorded in its metadata (the
repository's state file, outside the model directories: recording reloads nothing) so
`tritonstack models` shows the latency next to the version."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tritonstack.export.state import read_metadata, update_metadata


def record_in_metadata(results: Mapping[str, Any], repo: Path, results_path: Path) -> list[Path]:
    """For every model version measured at concurrency 1, its smallest batch's p50 and p99; returns
    the version folders recorded (versions without metadata are left as they are)."""
    updated = []
    for cell in _summary_cells(results["cells"]):
        version_dir = repo / cell["name"] / str(cell["version"])
        meta = read_metadata(version_dir)
        if meta is None:
            continue
        benchmark = {
            "p50_ms": cell["latency_ms"]["p50"],
            "p99_ms": cell["latency_ms"]["p99"],
            "batch_size": cell["batch_size"],
            "concurrency": 1,
            "stable": cell["stable"],
            "results": str(results_path),
            "git_commit": results["environment"].get("git_commit"),
        }
        update_metadata(version_dir, benchmark=benchmark)
        updated.append(version_dir)
    return updated


def _summary_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (repository model, version): the concurrency-1 cell of the smallest batch size."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for cell in cells:
        if cell["mode"] != "concurrency" or cell["level"] != 1:
            continue
        key = (cell["name"], cell["version"])
        if key not in best or cell["batch_size"] < best[key]["batch_size"]:
            best[key] = cell
    return list(best.values())
