"""Arguments and handler of `tritonstack bench` (and `tritonstack bench compare A.json B.json`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console


def _add_artifacts(p: argparse.ArgumentParser) -> None:
    """Which served models to measure and where their artifacts and checkpoints are."""
    p.add_argument("--models", default="dlrm,dcn_v2,two_tower", help="comma-separated architectures")
    p.add_argument("--formats", default="onnx,torchscript", help="comma-separated formats in the repository")
    p.add_argument("--repo", type=Path, default=Path("triton_repo"))
    p.add_argument(
        "--checkpoints", type=Path, default=Path("checkpoints"), help="<model>.pt for the baselines"
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    _add_artifacts(p)
    p.add_argument("--batch-sizes", default="1,8,64,256")
    p.add_argument("--concurrency", default="1,4,16,64", help="closed loop: requests always in flight")
    p.add_argument(
        "--request-rate", default="", help="open loop: Poisson arrivals per second, comma-separated"
    )
    p.add_argument("--url", help="a running Triton's gRPC HOST:PORT serving --repo (default: start one)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/latest"))
    p.add_argument("--window-s", type=float, default=1.0, help="measurement window")
    p.add_argument("--max-cell-s", type=float, default=10.0, help="time cap per cell; then stable: false")
    p.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the load over N processes, for servers faster than one Python event loop can drive",
    )
    sub = p.add_subparsers(dest="action", metavar="{compare,report,floor}")
    compare = sub.add_parser("compare", help="per-cell ratios B/A of two results.json")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    report = sub.add_parser("report", help="rewrite csv, md, plots and report.html next to a results.json")
    report.add_argument("results", type=Path)
    floor = sub.add_parser(
        "floor", help="batch-1 latency layer by layer: gRPC, Triton + Python backend, model, client"
    )
    _add_artifacts(floor)
    floor.add_argument("--out", type=Path, default=Path("benchmarks/results/floor"))
    floor.add_argument("--requests", type=int, default=2000, help="sequential requests per probe")
    floor.add_argument("--warmup", type=int, default=200, help="requests before each probe's measured ones")
    floor.add_argument(
        "--idle-ms", type=float, default=1.0, help="pause between in-process calls of the idle probe"
    )


def handler(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 120)
    if args.action == "compare":
        from tritonstack.benchmarks.compare import table

        console.print(table(args.a, args.b))
        return 0
    if args.action == "floor":
        return _floor(args, console)
    from tritonstack.benchmarks.record import record_in_metadata
    from tritonstack.benchmarks.report import read_results, write_all

    if args.action == "report":
        written = write_all(read_results(args.results), args.results.parent)
        console.print(f"{', '.join(p.name for p in written)} in {args.results.parent}")
        return 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tritonstack.benchmarks.config import BenchConfig, WindowRule, parse_list
    from tritonstack.benchmarks.suite import run_suite
    from tritonstack.formats import Format

    config = BenchConfig(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        formats=tuple(Format.parse_list(args.formats)),
        batch_sizes=tuple(int(b) for b in parse_list(args.batch_sizes, int, "--batch-sizes")),
        concurrencies=tuple(int(c) for c in parse_list(args.concurrency, int, "--concurrency")),
        request_rates=parse_list(args.request_rate, float, "--request-rate"),
        repo=args.repo,
        checkpoints=args.checkpoints,
        url=args.url,
        out=args.out,
        rule=WindowRule(window_s=args.window_s, max_cell_s=args.max_cell_s),
        client_processes=args.client_processes,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        results = run_suite(config, progress)
    written = write_all(results, config.out)
    unstable = sum(not c["stable"] for c in results["cells"])
    names = ", ".join(p.name for p in written)
    console.print(f"{len(results['cells'])} cells ({unstable} not stable) -> {names} in {config.out}")
    recorded = record_in_metadata(results, config.repo, config.out / "results.json")
    console.print(f"latency of {len(recorded)} model versions recorded in {config.repo}/tritonstack.json")
    return 0


def _floor(args: argparse.Namespace, console: Console) -> int:
    from tritonstack.benchmarks.floor import FloorConfig, layers_table, run_floor, write_floor
    from tritonstack.formats import Format

    config = FloorConfig(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        formats=tuple(Format.parse_list(args.formats)),
        repo=args.repo,
        checkpoints=args.checkpoints,
        out=args.out,
        requests=args.requests,
        warmup=args.warmup,
        idle_ms=args.idle_ms,
    )
    with console.status("floor") as status:
        results = run_floor(config, lambda what: status.update(f"floor: {what} done"))
    written = write_floor(results, config.out)
    console.print(layers_table(results))
    console.print(f"{', '.join(p.name for p in written)} in {config.out}")
    return 0
