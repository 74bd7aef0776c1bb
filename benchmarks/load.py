"""Load generators on the asyncio gRPC client and the windowed measurement of one cell.

Closed loop keeps N requests in flight (perf_analyzer's concurrency mode): throughput is what
the server sustains. Open loop sends at Poisson arrival times regardless of completions, so a
rate near capacity shows up as queueing instead of being hidden by a slower client; latency counts
from each request's scheduled time, and how late it actually went out is recorded with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from tritonstack.benchmarks.config import SharedMemory, WindowRule
from tritonstack.benchmarks.prebuilt import Prebuilt, prebuilt
from tritonstack.benchmarks.stats import server_delta
from tritonstack.benchmarks.windows import Series, Window
from tritonstack.client._errors import grpc_failure
from tritonstack.client._wire import MODEL_INFER
from tritonstack.errors import ServeError
from tritonstack.spec import Array, ModelSpec

Send = Callable[[float], Coroutine[Any, Any, None]]  # one request, scheduled at a perf_counter time
Generator = Callable[[Send, asyncio.Event], Coroutine[Any, Any, None]]


def closed_loop(concurrency: int) -> Generator:
    async def run(send: Send, stop: asyncio.Event) -> None:
        async def worker() -> None:
            while not stop.is_set():
                await send(time.perf_counter())  # due now: the previous one returned

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    return run


def open_loop(rate: float, seed: int = 0) -> Generator:
    """Poisson arrivals at `rate` per second. Each request is due at its arrival time whatever
    happened before: when the event loop falls behind, the late ones go out at once and their
    latency counts from when they were due (no coordinated omission)."""
    rng = np.random.default_rng(seed)

    async def run(send: Send, stop: asyncio.Event) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        arrival = time.perf_counter()
        while not stop.is_set():
            arrival += float(rng.exponential(1.0 / rate))
            await asyncio.sleep(max(arrival - time.perf_counter(), 0.0))
            task = asyncio.create_task(send(arrival))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)

    return run


@dataclass
class CellRun:
    """The windows of one cell and the whole cell's request counts (warm-up included) on both
    sides: they must be equal."""

    series: Series
    client_requests: int
    triton_success: int


class Sender:
    """A pool of serialized `ModelInferRequest`s (`benchmarks.prebuilt`) sent in turn as bytes,
    as perf_analyzer cycles through its input data: no protobuf work per send, so the client's
    own Python stays a small, constant part of every latency."""

    def __init__(self, channel: grpc.aio.Channel, requests: Prebuilt, timeout_s: float) -> None:
        self.model, self.version, self.timeout_s = requests.model, requests.version, timeout_s
        self._next = itertools.cycle(requests.payloads)
        self._model_infer = channel.unary_unary(MODEL_INFER)

    async def infer(self) -> None:
        try:
            await self._model_infer(next(self._next), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _no_answer(f"{self.model} version {self.version}", "a request", self.timeout_s) from exc
            raise ServeError(
                f"{self.model} version {self.version} failed under load: {exc.code().name}: {exc.details()}"
            ) from exc


def _no_answer(model: str, what: str, timeout_s: float) -> ServeError:
    return ServeError(
        f"{model}: {what} got no answer within {timeout_s:g} s: the server stopped answering (stuck, "
        "paused or overloaded past the cell's cap); check its log, or raise --max-cell-s"
    )


class ServedModel:
    """One served model version, the requests it receives (built once; tensors in the message or
    in shared memory registered with the server while the model is `opened`) and its statistics,
    which go through tritonclient."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client: grpcaio.InferenceServerClient,
        model: str,
        version: str,
        spec: ModelSpec,
        pool: Iterable[Mapping[str, Array]],
        timeout_s: float,
        shared_memory: SharedMemory = "none",
    ):
        self.client, self.model, self.version, self.timeout_s = client, model, version, timeout_s
        self.requests = prebuilt(model, version, spec, pool, shared_memory)
        self.sender = Sender(channel, self.requests, timeout_s)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[ServedModel]:
        """The model with its shared memory registered, unregistered afterwards (`requests.destroy()`
        frees it)."""
        try:
            async with self._answered("registering its shared memory"):
                await self.requests.register(self.client, self.timeout_s)
            yield self
        finally:
            async with self._answered("unregistering its shared memory"):
                await self.requests.unregister(self.client, self.timeout_s)

    async def statistics(self) -> dict[str, Any]:
        async with self._answered("asking Triton's statistics"):
            stats: dict[str, Any] = await self.client.get_inference_statistics(
                self.model, self.version, as_json=True, client_timeout=self.timeout_s
            )
        return stats

    @contextlib.asynccontextmanager
    async def _answered(self, what: str) -> AsyncIterator[None]:
        """tritonclient's errors (a deadline passed, the server gone) as the bench's one line."""
        try:
            yield
        except InferenceServerException as exc:
            status, message = grpc_failure(exc)
            if status == "DEADLINE_EXCEEDED":
                raise _no_answer(f"{self.model} version {self.version}", what, self.timeout_s) from exc
            raise ServeError(
                f"{self.model} version {self.version}: {what} failed: {status}: {message}"
            ) from exc


# (completion time, latency from when the request was due, how late it was sent), perf_counter seconds
Completion = tuple[float, float, float]


class Load(Protocol):
    """Requests sent to a model until stopped; completions are collected as they happen."""

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

    async def send(self, due: float) -> None:
        """One request due at `due`, timed from then and recorded like the generator's."""
        start = time.perf_counter()
        await self._sender.infer()
        end = time.perf_counter()
        self._done.append((end, end - due, start - due))

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


async def measure(model: ServedModel, load: Load, rule: WindowRule) -> CellRun:
    """Warm up for one window, then cut windows as `rule` says (`benchmarks.windows.Series`)."""
    done: list[Completion] = []
    first = await model.statistics()
    await load.start()
    started = time.perf_counter()
    try:
        await asyncio.sleep(rule.window_s)
        boundary, snapshot = time.perf_counter(), await model.statistics()
        series = Series(rule, started)
        finished = False
        while not finished:
            await asyncio.sleep(max(boundary + series.length - time.perf_counter(), 0.0))
            end, after = time.perf_counter(), await model.statistics()
            done += await load.completions()
            inside = [(latency, lag) for t, latency, lag in done if boundary <= t < end]
            window = Window(boundary, end, [c[0] for c in inside], snapshot, after, [c[1] for c in inside])
            finished = series.add(window)
            boundary, snapshot = end, after
    finally:
        done += await load.stop()
    return CellRun(series, len(done), await _settled_count(model, first, len(done)))


async def _settled_count(
    model: ServedModel, first: dict[str, Any], expected: int, timeout_s: float = 2.0
) -> int:
    """Triton's successes since `first`: it counts a request just after sending the response, so
    the last ones may need a moment to appear."""
    deadline = time.perf_counter() + timeout_s
    while True:
        count = int(server_delta(first, await model.statistics(), model.model, model.version)["requests"])
        if count == expected or time.perf_counter() > deadline:
            return count
        await asyncio.sleep(0.01)
