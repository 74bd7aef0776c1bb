"""`tritonstack bench floor`: where the time of one served request goes, layer by layer.

Every probe sends sequential requests (one in flight) of the models at `--batch-size` (default 1;
`grpc_live` and `identity` carry no tensor or one float) and reads Triton's statistics for the
same requests. Each probe adds one layer to the one before:

- `grpc_live`: `ServerLive` through gRPC's generated stub: Python gRPC, loopback TCP and Triton's
  gRPC frontend, no model;
- `identity`: a model whose `execute()` returns its input, on Triton's Python backend: adds
  Triton's scheduler and the round trip to the backend's stub process;
- `<model> raw`: the served model through the same stub, one prebuilt request: adds our backend's
  Python and the runtime call inside the stub; `aio` is the same on the asyncio channel that
  `tritonstack bench` drives; `tritonclient` and `tritonstack` add each client library's cost.
  `raw`, `tritonclient` and `tritonstack` run interleaved, one request each per round in a
  shuffled order, so their differences are the clients' own and not the machine's drift;
- in process, the same artifact in this process: `hot` called back to back, and `idle` with a
  pause between calls as long as a served request takes, which is what a backend stub sees
  between sequential requests (caches and cores gone cold).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tritonstack.benchmarks.in_process import artifact_runner, torch_threads
from tritonstack.benchmarks.saving import save_json, why
from tritonstack.benchmarks.stats import SERVER_PHASES, latency_ms, server_delta
from tritonstack.benchmarks.suite import environment
from tritonstack.benchmarks.targets import BenchTarget, check_batch_sizes, local_targets
from tritonstack.client import TritonClient
from tritonstack.client._errors import grpc_failure
from tritonstack.errors import (
    ClientError,
    DeadlineExceeded,
    ServeError,
    TritonstackError,
    UsageError,
    first_line,
)
from tritonstack.export.repository import write_config
from tritonstack.serve import TritonServer
from tritonstack.spec import Array, ModelSpec, TensorSpec, wire_dtype

IDENTITY = "tritonstack_identity"
_SETTLE_S = 0.01
_IDENTITY_PY = """import stub_site  # noqa: F401  (first, as in our backends: numpy's site-packages)
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]) for x in inputs]
"""


@dataclass(frozen=True)
class FloorConfig:
    models: tuple[str, ...]  # repository or base names, as `tritonstack bench --models` takes them
    repo: Path
    out: Path
    requests: int = 2000
    warmup: int = 200
    idle_ms: float = 1.0
    batch_size: int = 1
    timeout_s: float = 60.0  # the longest wait for any one answer from Triton

    def __post_init__(self) -> None:
        rules = [
            (self.requests >= 100, f"--requests {self.requests}: at least 100 are needed for a p99"),
            (self.warmup >= 0, f"--warmup {self.warmup}: must not be negative"),
            (self.idle_ms >= 0, f"--idle-ms {self.idle_ms:g}: must not be negative"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be at least 1"),
            (self.timeout_s > 0, f"--timeout-s {self.timeout_s:g}: must be above 0"),
        ]
        for ok, problem in rules:
            if not ok:
                raise UsageError(problem)


def run_floor(config: FloorConfig, step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every probe, in process first (an idle Triton would slow single-threaded calls)."""
    targets = local_targets(config.repo, config.models)
    check_batch_sizes(targets, [config.batch_size], "--batch-size")
    threads = {t.name: t.threads for t in targets}  # as served
    probes = _in_process_probes(config, targets, step)
    with tempfile.TemporaryDirectory(prefix="tritonstack-floor-") as extra:
        _write_identity(Path(extra))
        with TritonServer(config.repo, extra_args=[f"--model-repository={extra}"]) as server:
            stats = grpcclient.InferenceServerClient(server.grpc_url)
            try:
                probes += _served_probes(config, server.grpc_url, stats, targets, step)
                with _answered(server.grpc_url, config.timeout_s, "server metadata"):
                    server_metadata = stats.get_server_metadata(as_json=True, client_timeout=config.timeout_s)
            finally:
                stats.close()
    return {
        "environment": environment(server_metadata),
        "config": {
            "models": [t.name for t in targets],
            "requests": config.requests,
            "warmup": config.warmup,
            "idle_ms": config.idle_ms,
            "batch_size": config.batch_size,
            "in_process_threads": threads,
        },
        "probes": probes,
    }


def _in_process_probes(
    config: FloorConfig, targets: list[BenchTarget], step: Callable[[str], None]
) -> list[dict[str, Any]]:
    probes = []
    for target in targets:
        runner, reason = artifact_runner(target)
        if runner is None:
            raise UsageError(f"bench floor needs {target.name} in process: {reason}")
        feeds = target.artifact_feeds(target.spec.random_inputs(config.batch_size, seed=1))
        with torch_threads(target.threads):
            for path, idle_s in (("hot", 0.0), ("idle", config.idle_ms / 1e3)):
                latencies = _timed(functools.partial(runner.infer, feeds), config, idle_s)
                probes.append(_probe(target.name, "in_process", path, latencies))
        step(f"{target.name} in process")
    return probes


def _served_probes(
    config: FloorConfig,
    url: str,
    stats: grpcclient.InferenceServerClient,
    targets: list[BenchTarget],
    step: Callable[[str], None],
) -> list[dict[str, Any]]:
    timeout = config.timeout_s
    with grpc.insecure_channel(url) as channel, TritonClient(url, timeout=timeout) as ours:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        live = service_pb2.ServerLiveRequest()
        with _answered(url, timeout, "gRPC and identity"):
            alive = _timed(lambda: stub.ServerLive(live, timeout=timeout), config)
            probes = [_probe("server", "served", "grpc_live", alive)]
            identity = {"x": np.ones((1, 1), np.float32)}
            raw = _raw(stub, IDENTITY, "1", identity, timeout)
            probes.append(_served(stats, IDENTITY, "1", "raw", raw, config))
        step("gRPC and identity")
        for target in targets:
            name, version, v = target.name, target.version, str(target.version)
            feeds = target.spec.random_inputs(config.batch_size, seed=1)
            calls: dict[str, Callable[[], object]] = {
                "raw": _raw(stub, name, v, feeds, timeout),
                "tritonclient": _tritonclient(stats, name, v, feeds, timeout),
                "tritonstack": functools.partial(ours.infer, name, feeds, version=version),
            }
            with _answered(url, timeout, f"{name} served"):
                probes += _interleaved(stats, name, v, calls, config)
                probes.append(_served_aio(stats, url, name, v, feeds, config))
            step(f"{name} served")
    return probes


@contextlib.contextmanager
def _answered(url: str, timeout_s: float, probe: str) -> Iterator[None]:
    """A failed call, from any of the probes' clients (a deadline passed, the server gone), as one
    line naming the probe."""
    try:
        yield
    except (grpc.RpcError, InferenceServerException, ClientError) as exc:
        if _past_deadline(exc):
            raise ServeError(
                f"bench floor: {probe}: Triton at {url} gave no answer within {timeout_s:g} s: the server "
                "stopped answering (stuck, paused or overloaded); check its log, or raise --timeout-s"
            ) from exc
        raise ServeError(f"bench floor: {probe}: Triton at {url} failed: {_reason(exc)}") from exc


def _past_deadline(exc: Exception) -> bool:
    if isinstance(exc, DeadlineExceeded):
        return True
    if isinstance(exc, grpc.RpcError):
        return bool(exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, InferenceServerException) and grpc_failure(exc)[0] == "DEADLINE_EXCEEDED"


def _reason(exc: Exception) -> str:
    """What a client's failure says, on one line."""
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {' '.join(str(exc.details()).split())}"
    if isinstance(exc, InferenceServerException):
        return ": ".join(grpc_failure(exc))
    return " ".join(first_line(exc).split())


def _write_identity(repo: Path) -> None:
    version = repo / IDENTITY / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(_IDENTITY_PY)
    spec = ModelSpec(IDENTITY, (TensorSpec("x", "float32", (1,)),), (TensorSpec("y", "float32", (1,)),), 8)
    config = spec.to_config()
    config.backend = "python"
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    write_config(repo / IDENTITY / "config.pbtxt", config)


def _timed(
    call: Callable[[], object],
    config: FloorConfig,
    idle_s: float = 0.0,
    warmed_up: Callable[[], object] = lambda: None,
) -> list[float]:
    """Seconds per call after the warm-up (then `warmed_up` is called once); `idle_s` of sleep
    between calls (not timed)."""
    latencies = []
    for i in range(config.warmup + config.requests):
        if i == config.warmup:
            warmed_up()
        if idle_s:
            time.sleep(idle_s)
        start = time.perf_counter()
        call()
        if i >= config.warmup:
            latencies.append(time.perf_counter() - start)
    return latencies


async def _timed_async(
    call: Callable[[], Awaitable[object]], config: FloorConfig, warmed_up: Callable[[], object]
) -> list[float]:
    latencies = []
    for i in range(config.warmup + config.requests):
        if i == config.warmup:
            warmed_up()
        start = time.perf_counter()
        await call()
        if i >= config.warmup:
            latencies.append(time.perf_counter() - start)
    return latencies


def prebuilt_request(model: str, version: str, feeds: Mapping[str, Array]) -> service_pb2.ModelInferRequest:
    """The request for `feeds`, tensors in `raw_input_contents`, built once and sent many times
    through gRPC's generated stub (the probes time that stub, not our wire path)."""
    return service_pb2.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name=name, datatype=wire_dtype(value.dtype.name), shape=value.shape
            )
            for name, value in feeds.items()
        ],
        raw_input_contents=[np.ascontiguousarray(value).tobytes() for value in feeds.values()],
    )


def _raw(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    name: str,
    version: str,
    feeds: Mapping[str, Array],
    timeout_s: float,
) -> Callable[[], object]:
    request = prebuilt_request(name, version, feeds)
    return lambda: stub.ModelInfer(request, timeout=timeout_s)


def _tritonclient(
    client: grpcclient.InferenceServerClient,
    name: str,
    version: str,
    feeds: Mapping[str, Array],
    timeout_s: float,
) -> Callable[[], object]:
    """tritonclient as its examples use it: inputs built and filled for every call."""

    def call() -> object:
        inputs = []
        for key, value in feeds.items():
            tensor = grpcclient.InferInput(key, list(value.shape), wire_dtype(value.dtype.name))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        return client.infer(name, inputs, model_version=version, client_timeout=timeout_s)

    return call


def _served(
    stats: grpcclient.InferenceServerClient,
    name: str,
    version: str,
    path: str,
    call: Callable[[], object],
    config: FloorConfig,
) -> dict[str, Any]:
    before: list[dict[str, Any]] = []
    snapshot = lambda: before.append(_stats(stats, name, version, config.timeout_s))  # noqa: E731
    latencies = _timed(call, config, warmed_up=snapshot)
    after = _stats(stats, name, version, config.timeout_s)
    return _probe(name, "served", path, latencies, _server_us(before[0], after, name, version, config))


def _interleaved(
    stats: grpcclient.InferenceServerClient,
    name: str,
    version: str,
    calls: dict[str, Callable[[], object]],
    config: FloorConfig,
) -> list[dict[str, Any]]:
    """The client paths of one model, one request each per round in a shuffled order: a drift in
    the machine's speed (other load, clocks) then falls on every path alike, and their difference
    is the paths' own. Triton's breakdown covers all of them (the server's work is the same)."""
    order, rng = list(calls.items()), random.Random(0)
    latencies: dict[str, list[float]] = {path: [] for path in calls}
    before: dict[str, Any] = {}
    for i in range(config.warmup + config.requests):
        if i == config.warmup:
            before = _stats(stats, name, version, config.timeout_s)
        rng.shuffle(order)
        for path, call in order:
            start = time.perf_counter()
            call()
            if i >= config.warmup:
                latencies[path].append(time.perf_counter() - start)
    after = _stats(stats, name, version, config.timeout_s)
    server = _server_us(before, after, name, version, config, len(calls))
    return [_probe(name, "served", path, values, server) for path, values in latencies.items()]


def _served_aio(
    stats: grpcclient.InferenceServerClient,
    url: str,
    name: str,
    version: str,
    feeds: Mapping[str, Array],
    config: FloorConfig,
) -> dict[str, Any]:
    request = prebuilt_request(name, version, feeds)

    before: list[dict[str, Any]] = []

    async def run() -> list[float]:
        async with grpc.aio.insecure_channel(url) as channel:
            infer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            # The snapshot is a blocking call between requests, outside every timed one.
            snapshot = lambda: before.append(_stats(stats, name, version, config.timeout_s))  # noqa: E731
            return await _timed_async(lambda: infer(request, timeout=config.timeout_s), config, snapshot)

    latencies = asyncio.run(run())
    after = _stats(stats, name, version, config.timeout_s)
    return _probe(name, "served", "aio", latencies, _server_us(before[0], after, name, version, config))


def _stats(
    client: grpcclient.InferenceServerClient, name: str, version: str, timeout_s: float
) -> dict[str, Any]:
    """The model's statistics once its success count has settled: Triton counts a request just
    after sending its response, so the one that just returned may not be in yet (a loaded machine
    showed 101 counted for 100 sent)."""
    ask = functools.partial(
        client.get_inference_statistics, name, version, as_json=True, client_timeout=timeout_s
    )
    stats: dict[str, Any] = ask()
    while True:
        time.sleep(_SETTLE_S)
        again: dict[str, Any] = ask()
        if server_delta(stats, again, name, version)["requests"] == 0:
            return again
        stats = again


def _server_us(
    before: dict[str, Any],
    after: dict[str, Any],
    name: str,
    version: str,
    config: FloorConfig,
    paths: int = 1,
) -> dict[str, float]:
    """Triton's microseconds per request over the measured requests of `paths` interleaved client
    paths (the warm-up excluded, as on the client's side)."""
    delta = server_delta(before, after, name, version)
    if delta["requests"] != config.requests * paths:
        raise UsageError(
            f"{name}: Triton counted {delta['requests']:.0f} requests, the probe sent "
            f"{config.requests * paths}: is another client using this server?"
        )
    return {k: delta[k] for k in (*SERVER_PHASES, "total")}


def _probe(
    name: str, where: str, path: str, latencies_s: list[float], server_us: dict[str, float] | None = None
) -> dict[str, Any]:
    latency = {k: v * 1e3 for k, v in latency_ms(latencies_s).items()}  # us
    return {"model": name, "where": where, "path": path, "latency_us": latency, "server_us": server_us}


def floor_table(results: dict[str, Any]) -> str:
    """Markdown: one row per probe, then each model's time split into layers."""
    lines = [
        "| model | where | path | p50 us | p99 us | Triton total | queue | compute input | compute infer "
        "| compute output |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for probe in results["probes"]:
        latency, server = probe["latency_us"], probe["server_us"] or {}
        phases = [f"{server[k]:.0f}" if k in server else "" for k in ("total", *SERVER_PHASES)]
        lines.append(
            f"| {probe['model']} | {probe['where']} | {probe['path']} | {latency['p50']:.0f} | "
            f"{latency['p99']:.0f} | " + " | ".join(phases) + " |"
        )
    return "\n".join(lines) + "\n\n" + layers_table(results)


def layers_table(results: dict[str, Any]) -> str:
    """Each model's p50 split into layers, each the difference of two probes' p50 (us)."""
    p50 = {(p["model"], p["where"], p["path"]): p["latency_us"]["p50"] for p in results["probes"]}
    live, identity = p50["server", "served", "grpc_live"], p50[IDENTITY, "served", "raw"]
    lines = [
        "| model | gRPC + frontend | Triton core + Python backend IPC | model in stub (raw − identity) "
        "| in process hot / idle | tritonstack client | served p50 (tritonstack) | served − in process hot |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in sorted({m for m, where, _ in p50 if where == "in_process"}):
        raw, ours = p50[model, "served", "raw"], p50[model, "served", "tritonstack"]
        hot, idle = p50[model, "in_process", "hot"], p50[model, "in_process", "idle"]
        lines.append(
            f"| {model} | {live:.0f} | {identity - live:.0f} | {raw - identity:.0f} | {hot:.0f} / {idle:.0f} "
            f"| {ours - raw:.0f} | {ours:.0f} | {ours - hot:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_floor(results: dict[str, Any], out: Path) -> list[Path]:
    """floor.json first (benchmarks.saving: a disk that is full keeps the measurements), then floor.md."""
    json_path, md_path = out / "floor.json", out / "floor.md"
    save_json(results, json_path, f"copy it to {json_path}")
    try:
        md_path.write_text(floor_table(results))
    except OSError as exc:
        raise TritonstackError(f"{json_path} is written, {md_path} is not ({why(exc)})") from exc
    return [json_path, md_path]
