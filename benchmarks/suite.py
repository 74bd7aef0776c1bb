"""One benchmark run: find the models (a local repository or a server's model-config RPC), measure
every in-process baseline, start (or reach) Triton, measure every cell, and return the results as
one JSON-ready dict."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import tritonclient.grpc.aio as grpcaio

from tritonstack.benchmarks import perf_analyzer
from tritonstack.benchmarks.baseline import baseline_result
from tritonstack.benchmarks.config import BenchConfig, Reference, command_line
from tritonstack.benchmarks.in_process import artifact_runner, reference_runner, torch_threads
from tritonstack.benchmarks.inputs import Pool
from tritonstack.benchmarks.load import (
    AsyncioLoad,
    CellRun,
    Generator,
    Load,
    ServedModel,
    closed_loop,
    measure,
    open_loop,
)
from tritonstack.benchmarks.load_processes import ProcessLoad
from tritonstack.benchmarks.served_by import served_by
from tritonstack.benchmarks.stats import SERVER_PHASES, latency_ms, server_delta
from tritonstack.benchmarks.targets import BenchTarget, check_batch_sizes, local_targets, remote_targets
from tritonstack.client._shm import shm_pool
from tritonstack.errors import ClientError, ServeError, UsageError, first_line
from tritonstack.runtimes.runners import Runner
from tritonstack.serve import ExternalServer, running_server
from tritonstack.spec import ModelSpec

Step = Callable[[str], None]
OnStep = Callable[[str, int, int], None]
"""Told of each finished step: what was measured (or skipped), the steps done, the current total."""
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def run_suite(config: BenchConfig, on_step: OnStep | None = None) -> dict[str, Any]:
    """Every selected model x batch size x load level, served and in process; `on_step` after each
    of them (the total grows when formed batch sizes add in-process baselines at the end)."""
    started, load_at_start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), list(os.getloadavg())
    targets = _targets(config)
    check_batch_sizes(targets, config.batch_sizes, "--batch-sizes")
    references = _references(config, targets)
    levels = _levels(config)
    analyzer = perf_analyzer.install() if "perf_analyzer" in config.load_generators else None
    if config.shared_memory == "cuda":  # its dependencies and device checked before any work
        try:
            shm_pool("cuda")
        except ClientError as exc:
            raise UsageError(
                f"--shared-memory cuda: {first_line(exc).split(': ')[0]}; install 'tritonstack[cuda]' on a "
                "machine with an NVIDIA GPU, or pass --shared-memory system"
            ) from exc
    per_batch = len(targets) * (_cells_per_batch(config, levels) + 1) + len(references)
    total = len(config.batch_sizes) * per_batch
    done = 0

    def step(description: str) -> None:
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(description, done, total)

    # In process first, before the embedded server starts: an idle Triton and its backend stubs
    # still take CPU time that a single-threaded runner on 2 cores notices.
    skipped: dict[str, str] = {}
    baselines: list[dict[str, Any]] = []
    for target in targets:
        runner, reason = artifact_runner(target)
        if runner is None:
            skipped[target.name] = reason or "unavailable"
            for b in config.batch_sizes:
                step(f"{target.name} in process batch {b} skipped: {skipped[target.name]}")
            continue
        baselines += [_baseline(config, target, runner, None, b, step) for b in config.batch_sizes]
    for reference, target, runner in references:
        baselines += [_baseline(config, target, runner, reference, b, step) for b in config.batch_sizes]
    with _server(config) as url:
        results = asyncio.run(_run(config, url, targets, levels, step, analyzer))
    todo = _formed_batch_todo(results["cells"], baselines, skipped)
    total += len(todo)
    for target in targets:  # each artifact loaded once more, for all of its formed batch sizes
        batches = [batch for name, batch in todo if name == target.name]
        runner = artifact_runner(target)[0] if batches else None
        if runner is not None:
            baselines += [_baseline(config, target, runner, None, b, step) for b in batches]
    add_overheads(results["cells"], baselines, skipped)
    results["models"] = [t.describe() | {"in_process": skipped.get(t.name, "measured")} for t in targets]
    results["environment"]["started_utc"] = started
    results["environment"]["load_average"] |= {"start": load_at_start, "end": list(os.getloadavg())}
    return results | {"baselines": baselines}


def _targets(config: BenchConfig) -> list[BenchTarget]:
    """The local repository's models, or (`--url` alone) the server's, from its model-config RPC."""
    if config.repo is not None:
        return local_targets(config.repo, config.models)
    url = config.url or ""
    ExternalServer(url).wait_ready()

    async def fetch() -> list[BenchTarget]:
        client = grpcaio.InferenceServerClient(url)
        try:
            return await remote_targets(client, config.models, url)
        finally:
            await client.close()

    return asyncio.run(fetch())


def _references(
    config: BenchConfig, targets: list[BenchTarget]
) -> list[tuple[Reference, BenchTarget, Runner]]:
    """Each `--reference` with the first selected model it stands beside (by base or repository
    name) and its module, loaded before anything is measured so a bad checkpoint stops the run
    at once."""
    pairs = []
    for reference in config.references:
        matching = [t for t in targets if reference.model in (t.base, t.name)]
        if not matching:
            raise UsageError(
                f"--reference {reference}: no selected model {reference.model!r} "
                f"(selected: {', '.join(t.name for t in targets)})"
            )
        if not reference.checkpoint.exists():
            raise UsageError(f"--reference {reference}: no checkpoint {reference.checkpoint}")
        pairs.append((reference, matching[0], reference_runner(reference, matching[0])))
    return pairs


@contextlib.contextmanager
def _server(config: BenchConfig) -> Iterator[str]:
    if config.url:
        server = ExternalServer(config.url)
        server.wait_ready()
        yield server.grpc_url
    else:
        assert config.repo is not None  # BenchConfig wants one of the two
        with running_server(config.repo) as url:
            yield url


def _baseline(
    config: BenchConfig,
    target: BenchTarget,
    runner: Runner,
    reference: Reference | None,
    batch: int,
    step: Step,
) -> dict[str, Any]:
    pool = Pool.for_rule(target.spec, batch, config.pool)
    feeds = [target.artifact_feeds(b) for b in pool.batches()]
    with torch_threads(target.threads):
        result = {
            "model": target.base,
            "name": None if reference is not None else target.name,
            "device": target.device,
            "threads": target.threads,
            "pool": {"requests": pool.size, "seed": pool.seed},
            **baseline_result(runner, feeds, batch, config.rule),
        }
    if reference is not None:
        result["reference"] = str(reference)
    step(f"{target.base if reference else target.name} in process {runner.name} batch {batch}")
    return result


def formed_batch(cell: dict[str, Any]) -> int:
    """The batch size Triton's dynamic batcher formed in the cell, rounded (at least the request's)."""
    formed: float = cell["server_us"].get("formed_batch", 0.0)  # perf_analyzer's cells have none
    return max(int(cell["batch_size"]), round(formed))


def _formed_batch_todo(
    cells: list[dict[str, Any]], baselines: list[dict[str, Any]], skipped: dict[str, str]
) -> list[tuple[str, int]]:
    """(model, batch) of formed batch sizes with no in-process baseline yet, measured after the
    server stops: served throughput is compared with the artifact at the batch Triton ran."""
    have = {(b["name"], b["batch_size"]) for b in baselines}
    todo = []
    for cell in cells:
        key = (cell["name"], formed_batch(cell))
        if cell["name"] not in skipped and key not in have and key not in todo:
            todo.append(key)
    return todo


def _levels(config: BenchConfig) -> list[tuple[str, float, Generator]]:
    closed = [("concurrency", float(c), closed_loop(c)) for c in config.concurrencies]
    return closed + [("request_rate", r, open_loop(r)) for r in config.request_rates]


async def _run(
    config: BenchConfig,
    url: str,
    targets: list[BenchTarget],
    levels: list[tuple[str, float, Generator]],
    step: Step,
    analyzer: perf_analyzer.PerfAnalyzer | None,
) -> dict[str, Any]:
    client = grpcaio.InferenceServerClient(url)
    channel = grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS)
    try:
        env = environment(await client.get_server_metadata(as_json=True))
        # 1, 5 and 15 minute load averages (run_suite adds start and end): what else ran shows here.
        env["load_average"] = {"served_cells_start": list(os.getloadavg())}
        labels = {t.name: await _served_by(client, t, url, embedded=config.url is None) for t in targets}
        cells: list[dict[str, Any]] = []
        for target, batch in itertools.product(targets, config.batch_sizes):
            pool = Pool.for_rule(target.spec, batch, config.pool)
            model = ServedModel(
                channel,
                client,
                target.name,
                str(target.version),
                target.spec,
                pool.batches(),
                config.rule.answer_s,
                config.shared_memory,
            )
            common = {"served_by": labels[target.name], "shared_memory": config.shared_memory}
            try:
                measured = await _measure_levels(config, url, target, batch, levels, model, analyzer, step)
            finally:
                model.requests.destroy()
            ours = {"pool": pool.describe()}  # perf_analyzer's cells say what data it sent
            cells += [c | common | (ours if c["load_generator"] == "tritonstack" else {}) for c in measured]
        return {
            "environment": env
            | {"server": "external" if config.url else "embedded", "command": command_line(config)},
            "config": _config_json(config),
            "cells": cells,
        }
    finally:
        await channel.close()
        await client.close()


async def _measure_levels(
    config: BenchConfig,
    url: str,
    target: BenchTarget,
    batch: int,
    levels: list[tuple[str, float, Generator]],
    model: ServedModel,
    analyzer: perf_analyzer.PerfAnalyzer | None,
    step: Step,
) -> list[dict[str, Any]]:
    """The cells of one model at one batch size: each level with our load generator, then
    (closed loop) with perf_analyzer, as the run asks."""
    cells = []
    for mode, level, generator in levels:
        if "tritonstack" in config.load_generators:
            load: Load = (
                AsyncioLoad(model.sender, generator)
                if config.client_processes == 1
                else ProcessLoad(url, model.requests, mode, level, config.client_processes, model.timeout_s)
            )
            async with model.opened():  # registered per cell: perf_analyzer unregisters every region
                run = await measure(model, load, config.rule)
            cell = _cell(target, batch, mode, level, run, model, config)
            cells.append(cell | {"load_generator": "tritonstack"})
            step(f"{target.name} batch {batch} {mode} {level:g}")
        if analyzer is not None and mode == "concurrency":
            cells.append(
                await asyncio.to_thread(_perf_analyzer_cell, analyzer, url, target, batch, int(level), config)
            )
            step(f"{target.name} batch {batch} {mode} {level:g} perf_analyzer")
    return cells


def _cells_per_batch(config: BenchConfig, levels: list[tuple[str, float, Generator]]) -> int:
    """Cells per model and batch size: every level with ours, the closed-loop ones with perf_analyzer."""
    ours = len(levels) if "tritonstack" in config.load_generators else 0
    theirs = len(config.concurrencies) if "perf_analyzer" in config.load_generators else 0
    return ours + theirs


def _perf_analyzer_cell(
    analyzer: perf_analyzer.PerfAnalyzer,
    url: str,
    target: BenchTarget,
    batch: int,
    concurrency: int,
    config: BenchConfig,
) -> dict[str, Any]:
    """One closed-loop cell measured by perf_analyzer under the run's window rule (its window
    length, tolerance and as many windows as the cell's time cap holds), in the bench's fields."""
    rule = config.rule
    settings = perf_analyzer.Settings(
        measurement_interval_ms=round(rule.window_s * 1000),
        stability_percentage=rule.tolerance * 100,
        max_trials=max(rule.count, int(rule.max_cell_s / rule.window_s) - 1),
        shared_memory=config.shared_memory,
        seed=config.pool.seed,
        max_mb=config.pool.max_mb,
    )
    measured = perf_analyzer.run(
        analyzer, url, target.spec, batch, concurrency, settings, str(target.version)
    )
    server = measured["server_us"]
    total = sum(server[phase] for phase in SERVER_PHASES)
    return measured | {
        "model": target.base,
        "name": target.name,
        "format": target.format_name,
        "version": target.version,
        "server_us": server | {"total": total},
        "client_remainder_us": measured["latency_ms"]["mean"] * 1e3 - total,
    }


async def _served_by(
    client: grpcaio.InferenceServerClient, target: BenchTarget, url: str, embedded: bool
) -> dict[str, Any]:
    """The backend the server runs the model on; the served config must describe the same tensors
    as the one the baselines and inputs came from."""
    served = (await client.get_model_config(target.name, str(target.version))).config
    if ModelSpec.from_config(served) != target.spec:
        raise UsageError(
            f"the server at {url} serves {target.name} with other tensors than {target.config.name}'s "
            "config here: pass the --repo the server was started on, or leave --repo out"
        )
    return served_by(served, embedded)


def _cell(
    target: BenchTarget,
    batch: int,
    mode: str,
    level: float,
    run: CellRun,
    model: ServedModel,
    config: BenchConfig,
) -> dict[str, Any]:
    last = run.series.last()
    if not last.latencies_s:
        raise ServeError(
            f"{target.name} batch {batch} {mode} {level:g}: no request completed within --max-cell-s "
            f"{config.rule.max_cell_s:g}"
        )
    latency = latency_ms(last.latencies_s)
    server = server_delta(last.stats_before, last.stats_after, model.model, model.version)
    cell = {
        "model": target.base,
        "name": target.name,
        "format": target.format_name,
        "version": target.version,
        "batch_size": batch,
        "mode": mode,
        "level": level,
        "stable": run.series.stable,
        "latency_ms": latency,
        "latency_samples": last.requests,
        "inferences_per_s": last.throughput,
        "samples_per_s": last.throughput * batch,
        "server_us": server,
        "client_remainder_us": latency["mean"] * 1e3 - server["total"],
        "requests": {"client": run.client_requests, "triton_success": run.triton_success},
        "windows": [w.summary() for w in run.series.windows],
    }
    if mode == "request_rate":  # how late requests went out against their schedule
        cell["send_lag_ms"] = latency_ms(last.lags_s) | {"max": max(last.lags_s) * 1e3}
    return cell


def add_overheads(
    cells: list[dict[str, Any]], baselines: list[dict[str, Any]], skipped: dict[str, str]
) -> None:
    """Serving overhead against the same artifact in process (and eager PyTorch, where measured):
    p50 difference at concurrency 1, throughput ratio at every load level, and the samples/s ratio
    against the artifact in process at the batch size Triton formed. A model whose artifact could
    not run here gets the reason instead."""
    artifacts = {(b["name"], b["batch_size"]): b for b in baselines if b["name"] is not None}
    eager = {(b["model"], b["batch_size"]): b for b in baselines if b["name"] is None}
    for cell in cells:
        overhead: dict[str, float] = {}
        artifact = artifacts.get((cell["name"], cell["batch_size"]))
        reference = eager.get((cell["model"], cell["batch_size"]))
        c1 = cell["mode"] == "concurrency" and cell["level"] == 1
        if artifact is not None:
            overhead["throughput_ratio"] = cell["inferences_per_s"] / artifact["inferences_per_s"]
            formed = artifacts.get((cell["name"], formed_batch(cell)))
            if formed is not None:
                overhead["formed_batch"] = formed["batch_size"]
                overhead["throughput_ratio_formed"] = cell["samples_per_s"] / formed["samples_per_s"]
            if c1:
                overhead["p50_ms"] = cell["latency_ms"]["p50"] - artifact["latency_ms"]["p50"]
        else:
            cell["in_process_skipped"] = skipped[cell["name"]]
        if reference is not None:
            overhead["throughput_ratio_vs_eager"] = cell["inferences_per_s"] / reference["inferences_per_s"]
            if c1:
                overhead["p50_ms_vs_eager"] = cell["latency_ms"]["p50"] - reference["latency_ms"]["p50"]
        cell["overhead"] = overhead


def _config_json(config: BenchConfig) -> dict[str, Any]:
    return {
        "models": list(config.models),
        "batch_sizes": list(config.batch_sizes),
        "concurrency": list(config.concurrencies),
        "request_rates": list(config.request_rates),
        "repo": str(config.repo) if config.repo is not None else None,
        "url": config.url,
        "window_s": config.rule.window_s,
        "max_cell_s": config.rule.max_cell_s,
        "stable_windows": config.rule.count,
        "tolerance": config.rule.tolerance,
        "min_window_requests": config.rule.min_requests,
        "pool_size": config.pool.size,
        "pool_mb": config.pool.max_mb,
        "pool_seed": config.pool.seed,
        "references": [str(r) for r in config.references],
        "client_processes": config.client_processes,
        "load_generators": list(config.load_generators),
        "shared_memory": config.shared_memory,
    }


def environment(server: dict[str, Any]) -> dict[str, Any]:
    """Hardware and software the numbers belong to."""
    import onnxruntime
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        if cpuinfo.exists()
        else []
    )
    cpu = names[0] if names else platform.processor()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        # The imported module's own version: onnxruntime-gpu installs under another distribution
        # name, and a CPU onnxruntime may sit beside it.
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "tritonclient": importlib.metadata.version("tritonclient"),
        "triton_server": server.get("version"),
        "git_commit": _git_commit(),
        "argv": sys.argv,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()
