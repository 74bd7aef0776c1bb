"""The main job: train the reference models briefly, export every format, serve them with the
embedded Triton, check served outputs against PyTorch and report one table."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from tritonstack.cli.options import DemoOptions
from tritonstack.client import TritonClient
from tritonstack.errors import TritonstackError
from tritonstack.export.checkpoint import LoadedModel, load_model
from tritonstack.export.pipeline import ExportResult, export_to_repository
from tritonstack.export.verify import compare, tolerances
from tritonstack.runtimes.runners import TorchRunner
from tritonstack.serve import find_triton, running_server

SERVED_CHECK_BATCHES = (1, 64)
LATENCY_WARMUP = 20
LATENCY_REQUESTS = 200


@dataclass(frozen=True)
class Row:
    export: ExportResult
    served_max_abs: float
    served_ok: bool
    p50_ms: float


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run every stage; return 0 when every model and format is served and matches PyTorch."""
    from tritonstack import recsys
    from tritonstack.recsys.train import train

    if options.external is None:
        find_triton()  # without the serve extra: its one line now, not after minutes of training
    # Piped output (CI logs, `| tee`) gets a width that fits the table instead of 80 columns.
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    options.deployment.check(options.formats)  # before any training
    started = time.perf_counter()
    exported: list[tuple[LoadedModel, ExportResult]] = []
    for name in recsys.ARCHITECTURES:
        arch = recsys.get_architecture(name)
        checkpoint = options.checkpoints / f"{name}.pt"
        console.print(f"[bold]train[/] {name} ({options.preset}, {options.steps} steps) -> {checkpoint}")
        trained = train(
            name,
            arch.preset(options.preset),
            steps=options.steps,
            batch_size=options.batch_size,
            lr=1e-3,
            seed=0,
            checkpoint_path=checkpoint,
            progress=True,
        )
        console.print(f"  loss {trained.losses[0]:.4f} -> {trained.losses[-1]:.4f}")
        loaded = load_model(checkpoint, max_batch_size=options.max_batch_size)
        formats = ", ".join(f.value for f in options.formats)
        console.print(f"[bold]export[/] {name}: {formats} -> {options.repo}")
        results = export_to_repository(
            loaded,
            options.formats,
            options.repo,
            options=options.export,
            version=1,
            overwrite=True,
            deployment=options.deployment,
        )
        exported.extend((loaded, r) for r in results)

    with running_server(options.repo, options.external) as url, TritonClient(url, timeout=30.0) as triton:
        console.print(f"[bold]serve[/] Triton at {url}: every model READY")
        rows = [_check_served(triton, loaded, result, options.export.fp16) for loaded, result in exported]
    console.print(_table(rows, options))
    console.print(f"total {time.perf_counter() - started:.0f} s")
    failed = [r.export.model_name for r in rows if not r.served_ok]
    if failed:
        raise TritonstackError(f"served outputs differ from PyTorch for {', '.join(failed)}: see the table")
    return 0


def _check_served(triton: TritonClient, loaded: LoadedModel, result: ExportResult, fp16: bool) -> Row:
    reference = TorchRunner(loaded.module, loaded.spec)
    atol, rtol = tolerances(fp16)
    worst, ok = 0.0, True
    for batch in _served_check_batches(loaded.spec.max_batch_size):
        feeds = loaded.spec.random_inputs(batch, seed=1000 + batch)
        served = triton.infer(result.model_name, feeds, version=result.version)
        for name, want in reference.infer(feeds).items():
            max_abs, _, passed = compare(name, served[name], want, atol, rtol)
            worst, ok = max(worst, max_abs), ok and passed
    return Row(result, worst, ok, _p50_ms(triton, loaded, result))


def _p50_ms(triton: TritonClient, loaded: LoadedModel, result: ExportResult) -> float:
    feeds = loaded.spec.random_inputs(1, seed=7)
    times = []
    for i in range(LATENCY_WARMUP + LATENCY_REQUESTS):
        start = time.perf_counter()
        triton.infer(result.model_name, feeds, version=result.version)
        if i >= LATENCY_WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _served_check_batches(max_batch_size: int) -> list[int]:
    return sorted({min(batch, max_batch_size) for batch in SERVED_CHECK_BATCHES})


def _table(rows: list[Row], options: DemoOptions) -> Table:
    precision = "FP16" if options.export.fp16 else "FP32"
    kind = options.deployment.instance_kind
    table = Table(
        title=f"tritonstack demo ({options.preset} preset, {kind} instances, {precision})",
        caption="max |diff| vs PyTorch: export check at batch 1 and max batch; served check at batch "
        + " and ".join(map(str, _served_check_batches(options.max_batch_size)))
        + f"; p50 over {LATENCY_REQUESTS} sequential gRPC requests at batch 1",
    )
    for column in ("model", "format", "version", "MB", "params", "export diff", "served diff", "p50 ms"):
        table.add_column(column, justify="left" if column in ("model", "format") else "right")
    for r in rows:
        e = r.export
        table.add_row(
            e.model_name.removesuffix(f"_{e.format.value}"),
            e.format.value,
            str(e.version),
            f"{e.artifact_bytes / 1e6:.1f}",
            f"{e.parameters:,}",
            f"{e.report.max_abs:.1e}",
            f"{r.served_max_abs:.1e}" + ("" if r.served_ok else " FAIL"),
            f"{r.p50_ms:.2f}",
        )
    return table
