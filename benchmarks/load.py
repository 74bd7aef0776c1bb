"""Load generators on the asyncio gRPC client and the windowed measurement of one cell.

Closed loop keeps N requests in flight (perf_analyzer's concurrency mode): throughput is what
the server sustains. Open loop sends at Poisson arrival times regardless of completions, so a
rate near capacity shows up as queueing instead of being hidden by a slower client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonstack.benchmarks.config import WindowRule
from tritonstack.benchmarks.stats import server_delta
from tritonstack.benchmarks.windows import Window, is_stable
from tritonstack.errors import ServeError
from tritonstack.spec import Array, wire_dtype

Send = Callable[[], Coroutine[Any, Any, None]]
Generator = Callable[[Send, asyncio.Event], Coroutine[Any, Any, None]]


def closed_loop(concurrency: int) -> Generator:
    async def run(send: Send, stop: asyncio.Event) -> None:
        async def worker() -> None:
            while not stop.is_set():
                await send()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    return run


def open_loop(rate: float, seed: int = 0) -> Generator:
    rng = np.random.default_rng(seed)

    async def run(send: Send, stop: asyncio.Event) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        arrival = time.perf_counter()
        while not stop.is_set():
            arrival += float(rng.exponential(1.0 / rate))
            await asyncio.sleep(max(arrival - time.perf_counter(), 0.0))
            task = asyncio.create_task(send())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)

    return run


@dataclass
class CellRun:
    """The windows of one cell, whether the last ones agreed, and the whole cell's request counts
    (warm-up included) on both sides: they must be equal."""

    windows: list[Window]
    stable: bool
    client_requests: int
    triton_success: int


def prebuilt_request(model: str, version: str, feeds: Mapping[str, Array]) -> service_pb2.ModelInferRequest:
    """The request for `feeds`, tensors in `raw_input_contents`, built once and sent many times."""
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


class Sender:
    """One prebuilt `ModelInferRequest` (tensors in `raw_input_contents`) sent again and again
    straight through gRPC's generated stub, as perf_analyzer reuses its request: the client's own
    Python stays a small, constant part of every latency."""

    def __init__(self, channel: grpc.aio.Channel, request: service_pb2.ModelInferRequest) -> None:
        self.request = request
        self._model_infer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer

    async def infer(self) -> None:
        try:
            await self._model_infer(self.request)
        except grpc.aio.AioRpcError as exc:
            raise ServeError(
                f"{self.request.model_name} version {self.request.model_version} failed under load: "
                f"{exc.code().name}: {exc.details()}"
            ) from exc


class Target:
    """One served model version, the request it receives (built once) and its statistics, which
    go through tritonclient."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client: grpcaio.InferenceServerClient,
        model: str,
        version: str,
        feeds: Mapping[str, Array],
    ):
        self.client, self.model, self.version = client, model, version
        self.sender = Sender(channel, prebuilt_request(model, version, feeds))

    async def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.client.get_inference_statistics(
            self.model, self.version, as_json=True
        )
        return stats


Completion = tuple[float, float]  # (completion time, latency), both perf_counter seconds


class Load(Protocol):
    """Requests sent to a target until stopped; completions are collected as they happen."""

    async def start(self) -> None:
        """Begin sending; returns once the load is running."""
        ...

    async def completions(self) -> list[Completion]:
        """The completions since the last call (raises the load's error, if it failed)."""
        ...

    async def stop(self) -> list[Completion]:
        """Stop sending, wait for the requests in flight; the completions not yet returned."""
        ...


class AsyncioLoad:
    """The generator's requests on this process's event loop, through `sender`."""

    def __init__(self, sender: Sender, generator: Generator) -> None:
        self._sender, self._generator = sender, generator
        self._done: list[Completion] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send(self) -> None:
        """One request, timed and recorded like the generator's."""
        start = time.perf_counter()
        await self._sender.infer()
        end = time.perf_counter()
        self._done.append((end, end - start))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._generator(self.send, self._stop))

    async def completions(self) -> list[Completion]:
        if self._task is not None and self._task.done():
            await self._task  # raises the request's error
        done, self._done = self._done, []
        return done

    async def stop(self) -> list[Completion]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return await self.completions()


async def measure(target: Target, load: Load, rule: WindowRule) -> CellRun:
    """Warm up for one window, then cut windows until `rule` says stable or the cell's time is up
    (never fewer than `rule.count` windows)."""
    done: list[Completion] = []
    first = await target.statistics()
    await load.start()
    started = time.perf_counter()
    try:
        await asyncio.sleep(rule.window_s)
        windows: list[Window] = []
        boundary, snapshot = time.perf_counter(), await target.statistics()
        stable = False
        while not stable and (
            len(windows) < rule.count or boundary - started + rule.window_s <= rule.max_cell_s
        ):
            await asyncio.sleep(rule.window_s)
            end, after = time.perf_counter(), await target.statistics()
            done += await load.completions()
            latencies = [latency for t, latency in done if boundary <= t < end]
            windows.append(Window(boundary, end, latencies, snapshot, after))
            boundary, snapshot = end, after
            stable = is_stable(windows, rule.count, rule.tolerance)
    finally:
        done += await load.stop()
    return CellRun(windows, stable, len(done), await _settled_count(target, first, len(done)))


async def _settled_count(target: Target, first: dict[str, Any], expected: int, timeout_s: float = 2.0) -> int:
    """Triton's successes since `first`: it counts a request just after sending the response, so
    the last ones may need a moment to appear."""
    deadline = time.perf_counter() + timeout_s
    while True:
        count = int(server_delta(first, await target.statistics(), target.model, target.version)["requests"])
        if count == expected or time.perf_counter() > deadline:
            return count
        await asyncio.sleep(0.01)
