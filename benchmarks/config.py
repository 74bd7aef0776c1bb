"""What one benchmark run measures: models, formats, batch sizes, load levels and window timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tritonstack.errors import UsageError
from tritonstack.formats import Format


@dataclass(frozen=True)
class WindowRule:
    """A cell warms up for one window, then measures windows of `window_s` until the last
    `count` agree within `tolerance` (throughput and p99) or `max_cell_s` has passed."""

    window_s: float = 1.0
    max_cell_s: float = 10.0
    count: int = 3
    tolerance: float = 0.10

    def __post_init__(self) -> None:
        if not 0 < self.window_s * (self.count + 1) <= self.max_cell_s:
            raise UsageError(
                f"--max-cell-s {self.max_cell_s:g} must allow warm-up plus {self.count} windows of "
                f"{self.window_s:g} s"
            )


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ("dlrm", "dcn_v2", "two_tower")
    formats: tuple[Format, ...] = (Format.ONNX, Format.TORCHSCRIPT)
    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    request_rates: tuple[float, ...] = ()
    repo: Path = Path("triton_repo")
    checkpoints: Path = Path("checkpoints")
    url: str | None = None
    out: Path = Path("benchmarks/results/latest")
    rule: WindowRule = field(default_factory=WindowRule)
    client_processes: int = 1  # load generator processes (1: this process's event loop)

    def __post_init__(self) -> None:
        if self.client_processes < 1:
            raise UsageError(f"--client-processes must be at least 1, got {self.client_processes}")
        if min(self.batch_sizes, default=0) < 1 or min(self.concurrencies, default=0) < 1:
            raise UsageError("batch sizes and concurrency levels must be positive integers")
        if any(r <= 0 for r in self.request_rates):
            raise UsageError("request rates must be positive (requests per second)")


def command_line(config: BenchConfig) -> str:
    """The `tritonstack bench` command that repeats this run, every option spelled out."""

    def joined(values: tuple[object, ...]) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(getattr(v, "value", v)) for v in values)

    options = {
        "--models": joined(config.models),
        "--formats": joined(config.formats),
        "--batch-sizes": joined(config.batch_sizes),
        "--concurrency": joined(config.concurrencies),
        "--request-rate": joined(config.request_rates),
        "--repo": str(config.repo),
        "--checkpoints": str(config.checkpoints),
        "--url": config.url or "",
        "--out": str(config.out),
        "--window-s": f"{config.rule.window_s:g}",
        "--max-cell-s": f"{config.rule.max_cell_s:g}",
        "--client-processes": str(config.client_processes) if config.client_processes > 1 else "",
    }
    return " ".join(["tritonstack bench", *(f"{k} {v}" for k, v in options.items() if v)])


def parse_list(text: str, kind: type[int] | type[float], option: str) -> tuple[float, ...]:
    """`"1,8,64"` -> (1, 8, 64); anything else is a usage error naming the option."""
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: expected comma-separated numbers") from exc
