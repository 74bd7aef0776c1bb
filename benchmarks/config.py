"""What one benchmark run measures: models, batch sizes, load levels, window timing, the pool of
inputs and the optional eager PyTorch references."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tritonstack.errors import UsageError

SharedMemory = Literal["none", "system", "cuda"]
LoadGenerator = Literal["tritonstack", "perf_analyzer"]
# `--load-generator` choice -> the load generators each cell is measured with, in order.
LOAD_GENERATORS: dict[str, tuple[LoadGenerator, ...]] = {
    "tritonstack": ("tritonstack",),
    "perf_analyzer": ("perf_analyzer",),
    "both": ("tritonstack", "perf_analyzer"),
}
LOAD_GENERATOR_OPTIONS = {generators: option for option, generators in LOAD_GENERATORS.items()}


@dataclass(frozen=True)
class WindowRule:
    """A cell warms up for one window of `window_s`, then measures windows until the last `count`
    that hold at least `min_requests` each agree within `tolerance` on throughput and p50, or
    `max_cell_s` (warm-up included) leaves no room for another window (`benchmarks.windows`)."""

    window_s: float = 1.0
    max_cell_s: float = 30.0
    count: int = 3
    tolerance: float = 0.10
    min_requests: int = 50

    @property
    def answer_s(self) -> float:
        """How long a request, a statistics call or a registration may go unanswered before the
        server counts as stuck: four times the cell's cap, since a cell lasts at most `max_cell_s`
        and what an open loop past capacity queued in it may take as long again to drain."""
        return 4 * self.max_cell_s

    def __post_init__(self) -> None:
        if not 0 < self.window_s * (self.count + 1) <= self.max_cell_s:
            raise UsageError(
                f"--max-cell-s {self.max_cell_s:g} must allow warm-up plus {self.count} windows of "
                f"{self.window_s:g} s"
            )
        if self.min_requests < 1:
            raise UsageError(f"--min-window-requests must be at least 1, got {self.min_requests}")


@dataclass(frozen=True)
class PoolRule:
    """Each cell cycles through `size` distinct generated requests (seeded by `seed` and the batch
    size), fewer where they would take more than `max_mb` MiB: memory stays bounded at big batches."""

    size: int = 1024
    max_mb: float = 64.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or self.max_mb <= 0:
            raise UsageError("--pool-size must be at least 1 and --pool-mb positive")


@dataclass(frozen=True)
class Reference:
    """Eager PyTorch as an extra in-process baseline for the served models of base name `model`:
    the module rebuilt from `checkpoint` (its own architecture, or `arch`)."""

    model: str
    checkpoint: Path
    arch: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """`MODEL=CHECKPOINT[:ARCH]`, e.g. `conv=conv.pt:my_models:ConvNet`."""
        model, sep, rest = text.partition("=")
        path, _, arch = rest.partition(":")
        if not sep or not model or not path:
            raise UsageError(
                f"--reference {text!r}: expected MODEL=CHECKPOINT[:ARCH], e.g. dlrm=checkpoints/dlrm.pt "
                "or conv=conv.pt:my_models:ConvNet"
            )
        return cls(model, Path(path), arch or None)

    def __str__(self) -> str:
        return f"{self.model}={self.checkpoint}" + (f":{self.arch}" if self.arch else "")


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ()  # repository names or base names; empty: every model
    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    request_rates: tuple[float, ...] = ()
    repo: Path | None = Path("triton_repo")  # None: configs from the server at `url`, no baselines
    url: str | None = None
    out: Path = Path("benchmarks/results/latest")
    rule: WindowRule = field(default_factory=WindowRule)
    pool: PoolRule = field(default_factory=PoolRule)
    references: tuple[Reference, ...] = ()
    client_processes: int = 1  # load generator processes (1: this process's event loop)
    load_generators: tuple[LoadGenerator, ...] = ("tritonstack",)  # who sends each cell's requests
    shared_memory: SharedMemory = "none"  # where the requests' tensors travel (both load generators)

    def __post_init__(self) -> None:
        if self.repo is None and self.url is None:
            raise UsageError("nothing to measure: pass --repo (default triton_repo) or --url HOST:PORT")
        if self.client_processes < 1:
            raise UsageError(f"--client-processes must be at least 1, got {self.client_processes}")
        if min(self.batch_sizes, default=0) < 1 or min(self.concurrencies, default=1) < 1:
            raise UsageError("batch sizes and concurrency levels must be positive integers")
        if not self.concurrencies and not self.request_rates:
            raise UsageError("no load level: pass --concurrency and/or --request-rate")
        if any(r <= 0 for r in self.request_rates):
            raise UsageError("request rates must be positive (requests per second)")
        if "perf_analyzer" in self.load_generators and not self.concurrencies:
            raise UsageError("--load-generator perf_analyzer runs closed-loop cells: pass --concurrency")


def command_line(config: BenchConfig) -> str:
    """The `tritonstack bench` command that repeats this run, every option spelled out."""

    def joined(values: tuple[object, ...]) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    rule, pool = config.rule, config.pool
    options = {
        "--models": joined(config.models),
        "--batch-sizes": joined(config.batch_sizes),
        "--concurrency": joined(config.concurrencies),
        "--request-rate": joined(config.request_rates),
        "--repo": str(config.repo) if config.repo is not None else "",
        "--url": config.url or "",
        "--out": str(config.out),
        "--window-s": f"{rule.window_s:g}",
        "--max-cell-s": f"{rule.max_cell_s:g}",
        "--min-window-requests": str(rule.min_requests),
        "--pool-size": str(pool.size),
        "--pool-mb": f"{pool.max_mb:g}",
        "--pool-seed": str(pool.seed),
        "--client-processes": str(config.client_processes) if config.client_processes > 1 else "",
        "--load-generator": LOAD_GENERATOR_OPTIONS[config.load_generators],
        "--shared-memory": config.shared_memory if config.shared_memory != "none" else "",
    }
    words = [f"{k} {v}" for k, v in options.items() if v]
    words += [f"--reference {r}" for r in config.references]
    return " ".join(["tritonstack bench", *words])


def parse_list(text: str, kind: type[int] | type[float], option: str) -> tuple[float, ...]:
    """`"1,8,64"` -> (1, 8, 64); anything else is a usage error naming the option."""
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: expected comma-separated numbers") from exc
