"""Arguments and handler of `tritonstack bench` (and `tritonstack bench compare A.json B.json`)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from tritonstack.benchmarks.suite import OnStep


def _add_models(p: argparse.ArgumentParser, repo_help: str) -> None:
    """Which served models to measure and where their configs and artifacts are."""
    p.add_argument(
        "--models",
        default="",
        help="comma-separated repository names (conv_onnx) or base names (conv: every format of it); "
        "default: every model",
    )
    p.add_argument("--repo", type=Path, help=repo_help)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _add_models(
        p,
        "the model repository: configs and in-process baselines (default: triton_repo; with --url, "
        "none: configs from the server's model-config RPC, no in-process baselines)",
    )
    p.add_argument("--batch-sizes", default="1,8,64,256")
    p.add_argument("--concurrency", default="1,4,16,64", help="closed loop: requests always in flight")
    p.add_argument(
        "--request-rate", default="", help="open loop: Poisson arrivals per second, comma-separated"
    )
    p.add_argument("--url", help="a running Triton's gRPC HOST:PORT (default: start one on --repo)")
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="MODEL=CHECKPOINT[:ARCH]",
        help="eager PyTorch as an extra in-process baseline for MODEL (repeatable); ARCH: a built-in "
        "architecture or package.module:callable",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/latest"))
    p.add_argument("--window-s", type=float, default=1.0, help="first measurement window (then lengthened)")
    p.add_argument("--max-cell-s", type=float, default=30.0, help="time cap per cell; then stable: false")
    p.add_argument("--min-window-requests", type=int, default=50, help="requests a window needs to count")
    p.add_argument(
        "--pool-size", type=int, default=1024, help="distinct generated requests each cell cycles through"
    )
    p.add_argument("--pool-mb", type=float, default=64.0, help="memory cap of one pool (fewer requests)")
    p.add_argument("--pool-seed", type=int, default=0, help="seed of the generated inputs")
    p.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the load over N processes, for servers faster than one Python event loop can drive",
    )
    p.add_argument(
        "--load-generator",
        choices=("tritonstack", "perf_analyzer", "both"),
        default="tritonstack",
        help="who sends the requests: ours, NVIDIA's perf_analyzer (closed-loop cells; downloaded once "
        "from PyPI's tritonclient 2.51.0 wheel), or both, one after the other on the same server",
    )
    p.add_argument(
        "--shared-memory",
        choices=("none", "system", "cuda"),
        default="none",
        help="where the requests' tensors travel: in the gRPC messages, or in shared memory registered "
        "with the server (cuda: on the GPU, needs the 'cuda' extra); for either load generator",
    )
    sub = p.add_subparsers(dest="action", metavar="{compare,report,floor}")
    compare = sub.add_parser("compare", help="per-cell ratios B/A of two results.json")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    report = sub.add_parser("report", help="rewrite csv, md, plots and report.html next to a results.json")
    report.add_argument("results", type=Path)
    floor = sub.add_parser(
        "floor", help="one request's latency layer by layer: gRPC, Triton + Python backend, model, client"
    )
    _add_models(floor, "the model repository to serve (default: triton_repo)")
    floor.add_argument("--out", type=Path, default=Path("benchmarks/results/floor"))
    floor.add_argument("--requests", type=int, default=2000, help="sequential requests per probe")
    floor.add_argument("--warmup", type=int, default=200, help="requests before each probe's measured ones")
    floor.add_argument(
        "--idle-ms", type=float, default=1.0, help="pause between in-process calls of the idle probe"
    )
    floor.add_argument("--batch-size", type=int, default=1, help="rows per request of the models' probes")
    floor.add_argument(
        "--timeout-s",
        type=float,
        default=60.0,
        help="longest wait for any one answer from Triton (default: 60)",
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def handler(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 120)
    if args.action == "compare":
        from tritonstack.benchmarks.compare import table

        console.print(table(args.a, args.b))
        return 0
    if args.action == "floor":
        return _floor(args, console)
    from tritonstack.benchmarks.record import record_in_metadata
    from tritonstack.benchmarks.report import read_results, stability, write_all

    if args.action == "report":
        written = write_all(read_results(args.results), args.results.parent)
        console.print(f"{', '.join(p.name for p in written)} in {args.results.parent}")
        return 0
    from tritonstack.benchmarks.config import (
        LOAD_GENERATORS,
        BenchConfig,
        PoolRule,
        Reference,
        WindowRule,
        parse_list,
    )
    from tritonstack.benchmarks.saving import check_folder
    from tritonstack.benchmarks.suite import run_suite
    from tritonstack.export.state import check_writable

    config = BenchConfig(
        models=_names(args.models),
        batch_sizes=tuple(int(b) for b in parse_list(args.batch_sizes, int, "--batch-sizes")),
        concurrencies=tuple(int(c) for c in parse_list(args.concurrency, int, "--concurrency")),
        request_rates=parse_list(args.request_rate, float, "--request-rate"),
        repo=args.repo if args.repo is not None or args.url else Path("triton_repo"),
        url=args.url,
        out=args.out,
        rule=WindowRule(
            window_s=args.window_s, max_cell_s=args.max_cell_s, min_requests=args.min_window_requests
        ),
        pool=PoolRule(size=args.pool_size, max_mb=args.pool_mb, seed=args.pool_seed),
        references=tuple(Reference.parse(r) for r in args.reference),
        client_processes=args.client_processes,
        load_generators=LOAD_GENERATORS[args.load_generator],
        shared_memory=args.shared_memory,
    )
    if config.repo is not None:  # the latencies are recorded there: refuse before measuring, not after
        check_writable(config.repo)
    check_folder(config.out)
    with _progress(console) as on_step:
        results = run_suite(config, on_step)
    written = write_all(results, config.out)
    names = ", ".join(p.name for p in written)
    console.print(f"{stability(results)} -> {names} in {config.out}")
    if config.repo is not None:
        recorded = record_in_metadata(results, config.repo, config.out / "results.json")
        console.print(f"latency of {len(recorded)} model versions recorded in {config.repo}/tritonstack.json")
    return 0


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[OnStep]:
    """A progress bar on a terminal; elsewhere (a CI log, a file), where rich draws it only at the
    end, one line per finished step as it finishes, so a killed run's log says how far it got."""
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("bench", total=None)  # until the first step says it

            def bar(what: str, done: int, total: int) -> None:
                progress.update(task, description=what, completed=done, total=total)

            yield bar
    else:
        start = time.monotonic()

        def line(what: str, done: int, total: int) -> None:
            elapsed = datetime.timedelta(seconds=int(time.monotonic() - start))
            print(f"[{done}/{total} {elapsed}] {what}", flush=True)

        yield line


def _floor(args: argparse.Namespace, console: Console) -> int:
    from tritonstack.benchmarks.floor import FloorConfig, layers_table, run_floor, write_floor
    from tritonstack.benchmarks.saving import check_folder

    config = FloorConfig(
        models=_names(args.models),
        repo=args.repo or Path("triton_repo"),
        out=args.out,
        requests=args.requests,
        warmup=args.warmup,
        idle_ms=args.idle_ms,
        batch_size=args.batch_size,
        timeout_s=args.timeout_s,
    )
    check_folder(config.out)
    with console.status("floor") as status:
        results = run_floor(config, lambda what: status.update(f"floor: {what} done"))
    written = write_floor(results, config.out)
    console.print(layers_table(results))
    console.print(f"{', '.join(p.name for p in written)} in {config.out}")
    return 0
