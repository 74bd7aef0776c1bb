"""One benchmark run: start (or reach) Triton, measure every cell and every in-process baseline,
and return the results as one JSON-ready dict."""

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
from rich.progress import Progress

from tritonstack.benchmarks.baseline import baseline_result
from tritonstack.benchmarks.config import BenchConfig, command_line
from tritonstack.benchmarks.load import (
    AsyncioLoad,
    CellRun,
    Generator,
    Load,
    Target,
    closed_loop,
    measure,
    open_loop,
)
from tritonstack.benchmarks.load_processes import ProcessLoad
from tritonstack.benchmarks.stats import latency_ms, server_delta
from tritonstack.benchmarks.windows import merge
from tritonstack.errors import UsageError
from tritonstack.export.checkpoint import LoadedModel, load_model
from tritonstack.export.pipeline import repository_name
from tritonstack.formats import Artifact, Format
from tritonstack.runtimes.runners import OnnxRuntimeRunner, Runner, TorchRunner, TorchScriptRunner, runner_for
from tritonstack.serve import running_server
from tritonstack.spec import read_config

# The in-process baseline that a served format is compared with.
RUNTIME_OF = {"onnx": "onnxruntime", "torchscript": "torchscript", "tensorrt": "tensorrt"}


def run_suite(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Every model x format x batch size x load level, served and in process."""
    checkpoints = {model: config.checkpoints / f"{model}.pt" for model in config.models}
    missing = [str(path) for path in checkpoints.values() if not path.is_file()]
    if missing:
        raise UsageError(
            f"no checkpoint {', '.join(missing)}: run `tritonstack demo` (or `tritonstack train` and "
            "`tritonstack export`) first, or pass --checkpoints DIR"
        )
    versions = {
        (m, f): latest_version(config.repo, repository_name(m, f))
        for m in config.models
        for f in config.formats
    }
    progress = progress or Progress(disable=True)
    levels = _levels(config)
    per_model = len(config.batch_sizes) * (len(config.formats) * (len(levels) + 1) + 1)
    task = progress.add_task("bench", total=len(config.models) * per_model)

    def step(description: str) -> None:
        progress.update(task, description=description, advance=1)

    loaded = {model: load_model(path) for model, path in checkpoints.items()}
    # In process first, before the embedded server starts: an idle Triton and its backend stubs
    # still take CPU time that a single-threaded runner on 2 cores notices.
    baselines = [b for model in config.models for b in _baselines(config, loaded[model], versions, step)]
    with running_server(config.repo, config.url) as url:
        results = asyncio.run(_run(config, url, loaded, versions, levels, step))
    todo = _formed_batch_todo(results["cells"], baselines)
    progress.update(task, total=len(config.models) * per_model + len(todo))
    for model, fmt, batch in todo:
        artifact = repo_artifact(config.repo, loaded[model], fmt, versions[model, fmt])
        name = repository_name(model, fmt)
        threads = served_threads(config.repo, name)
        runner = in_process_runner(artifact, served_device(config.repo, name), threads)
        baselines.append(_baseline(config, loaded[model], runner, threads, batch, step))
    add_overheads(results["cells"], baselines)
    return results | {"baselines": baselines}


def _baselines(
    config: BenchConfig,
    loaded: LoadedModel,
    versions: dict[tuple[str, Format], int],
    step: Callable[[str], None],
) -> list[dict[str, Any]]:
    model = loaded.spec.name
    artifacts = [repo_artifact(config.repo, loaded, f, versions[model, f]) for f in config.formats]
    # Same device and threads as the served instances, so overhead compares like with like.
    device = served_device(config.repo, repository_name(model, config.formats[0]))
    threads = [served_threads(config.repo, repository_name(model, f)) for f in config.formats]
    runners: list[tuple[Runner, int]] = [
        (in_process_runner(a, device, t), t) for a, t in zip(artifacts, threads, strict=True)
    ]
    runners.append((TorchRunner(loaded.module, loaded.spec, device), threads[0]))
    return [_baseline(config, loaded, r, t, batch, step) for batch in config.batch_sizes for r, t in runners]


def _baseline(
    config: BenchConfig,
    loaded: LoadedModel,
    runner: Runner,
    threads: int,
    batch: int,
    step: Callable[[str], None],
) -> dict[str, Any]:
    feeds = loaded.spec.random_inputs(batch, seed=batch)
    with torch_threads(threads):
        result = {
            "model": loaded.spec.name,
            "threads": threads,
            **baseline_result(runner, feeds, batch, config.rule),
        }
    step(f"{loaded.spec.name} in process {runner.name} batch {batch}")
    return result


def formed_batch(cell: dict[str, Any]) -> int:
    """The batch size Triton's dynamic batcher formed in the cell, rounded (at least the request's)."""
    formed: float = cell["server_us"]["formed_batch"]
    return max(int(cell["batch_size"]), round(formed))


def _formed_batch_todo(
    cells: list[dict[str, Any]], baselines: list[dict[str, Any]]
) -> list[tuple[str, Format, int]]:
    """(model, format, batch) of formed batch sizes with no in-process baseline yet, measured after
    the server stops: served throughput is compared with the artifact at the batch Triton ran."""
    have = {(b["model"], b["runtime"], b["batch_size"]) for b in baselines}
    todo = []
    for cell in cells:
        fmt = Format(cell["format"])
        key = (cell["model"], fmt, formed_batch(cell))
        if (cell["model"], RUNTIME_OF[fmt.value], key[2]) not in have and key not in todo:
            todo.append(key)
    return todo


def latest_version(repo: Path, name: str) -> int:
    """The version Triton serves by default: the highest numbered directory."""
    found = [int(p.name) for p in (repo / name).glob("*") if p.is_dir() and p.name.isdigit()]
    if not found:
        raise UsageError(
            f"model {name} is not in {repo}: run `tritonstack demo` or `tritonstack export` first"
        )
    return max(found)


def _levels(config: BenchConfig) -> list[tuple[str, float, Generator]]:
    closed = [("concurrency", float(c), closed_loop(c)) for c in config.concurrencies]
    return closed + [("request_rate", r, open_loop(r)) for r in config.request_rates]


async def _run(
    config: BenchConfig,
    url: str,
    loaded: dict[str, LoadedModel],
    versions: dict[tuple[str, Format], int],
    levels: list[tuple[str, float, Generator]],
    step: Callable[[str], None],
) -> dict[str, Any]:
    client = grpcaio.InferenceServerClient(url)
    channel = grpc.aio.insecure_channel(
        url, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    )
    try:
        server = await client.get_server_metadata(as_json=True)
        cells: list[dict[str, Any]] = []
        for model, fmt, batch in itertools.product(config.models, config.formats, config.batch_sizes):
            name = repository_name(model, fmt)
            feeds = loaded[model].spec.random_inputs(batch, seed=batch)
            target = Target(channel, client, name, str(versions[model, fmt]), feeds)
            for mode, level, generator in levels:
                load: Load = (
                    AsyncioLoad(target.sender, generator)
                    if config.client_processes == 1
                    else ProcessLoad(url, target.sender.request, mode, level, config.client_processes)
                )
                run = await measure(target, load, config.rule)
                cells.append(_cell(model, fmt, batch, mode, level, run, target, config.rule.count))
                step(f"{name} batch {batch} {mode} {level:g}")
        return {
            "environment": environment(server) | {"command": command_line(config)},
            "config": _config_json(config),
            "cells": cells,
        }
    finally:
        await channel.close()
        await client.close()


def in_process_runner(artifact: Artifact, device: str, threads: int) -> Runner:
    """The artifact's runtime with `threads` intra-op threads (torch's: under `torch_threads`)."""
    if artifact.format is Format.ONNX:
        return OnnxRuntimeRunner(artifact.path, artifact.spec, threads, device)
    if artifact.format is Format.TORCHSCRIPT:
        return TorchScriptRunner(artifact.path, artifact.spec, device)
    return runner_for(artifact)


def served_device(repo: Path, name: str) -> str:
    """`cuda` when the model's config puts its instances on a GPU (and one is visible here)."""
    import torch

    groups = read_config(repo / name / "config.pbtxt").instance_group
    on_gpu = any(g.kind == g.KIND_GPU for g in groups)
    return "cuda" if on_gpu and torch.cuda.is_available() else "cpu"


def served_threads(repo: Path, name: str) -> int:
    """The intra-op threads the model's config gives each instance (0: the runtime's default)."""
    parameters = read_config(repo / name / "config.pbtxt").parameters
    for fmt in Format:
        if fmt.thread_parameters is not None and fmt.thread_parameters[0] in parameters:
            return int(parameters[fmt.thread_parameters[0]].string_value or "0")
    return 0


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` inside the block (0: left at its default)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def repo_artifact(repo: Path, loaded: LoadedModel, fmt: Format, version: int) -> Artifact:
    return Artifact(
        fmt, repo / repository_name(loaded.spec.name, fmt) / str(version) / fmt.filename, loaded.spec
    )


def _cell(
    model: str, fmt: Format, batch: int, mode: str, level: float, run: CellRun, target: Target, count: int
) -> dict[str, Any]:
    last = merge(run.windows[-count:])
    latency = latency_ms(last.latencies_s)
    server = server_delta(last.stats_before, last.stats_after, target.model, target.version)
    return {
        "model": model,
        "format": fmt.value,
        "version": int(target.version),
        "batch_size": batch,
        "mode": mode,
        "level": level,
        "stable": run.stable,
        "latency_ms": latency,
        "inferences_per_s": last.throughput,
        "samples_per_s": last.throughput * batch,
        "server_us": server,
        "client_remainder_us": latency["mean"] * 1e3 - server["total"],
        "requests": {"client": run.client_requests, "triton_success": run.triton_success},
        "windows": [w.summary() for w in run.windows],
    }


def add_overheads(cells: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> None:
    """Serving overhead against the same artifact in process (and eager PyTorch): p50 difference
    at concurrency 1, throughput ratio at every load level, and the samples/s ratio against the
    artifact in process at the batch size Triton formed (where that baseline was measured)."""
    index = {(b["model"], b["runtime"], b["batch_size"]): b for b in baselines}
    for cell in cells:
        runtime = RUNTIME_OF[cell["format"]]
        artifact = index[cell["model"], runtime, cell["batch_size"]]
        eager = index[cell["model"], "pytorch", cell["batch_size"]]
        overhead: dict[str, float] = {
            "throughput_ratio": cell["inferences_per_s"] / artifact["inferences_per_s"],
            "throughput_ratio_vs_eager": cell["inferences_per_s"] / eager["inferences_per_s"],
        }
        formed = index.get((cell["model"], runtime, formed_batch(cell)))
        if formed is not None:
            overhead["formed_batch"] = formed["batch_size"]
            overhead["throughput_ratio_formed"] = cell["samples_per_s"] / formed["samples_per_s"]
        if cell["mode"] == "concurrency" and cell["level"] == 1:
            overhead["p50_ms"] = cell["latency_ms"]["p50"] - artifact["latency_ms"]["p50"]
            overhead["p50_ms_vs_eager"] = cell["latency_ms"]["p50"] - eager["latency_ms"]["p50"]
        cell["overhead"] = overhead


def _config_json(config: BenchConfig) -> dict[str, Any]:
    return {
        "models": list(config.models),
        "formats": [f.value for f in config.formats],
        "batch_sizes": list(config.batch_sizes),
        "concurrency": list(config.concurrencies),
        "request_rates": list(config.request_rates),
        "url": config.url,
        "window_s": config.rule.window_s,
        "max_cell_s": config.rule.max_cell_s,
        "stable_windows": config.rule.count,
        "tolerance": config.rule.tolerance,
        "client_processes": config.client_processes,
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
