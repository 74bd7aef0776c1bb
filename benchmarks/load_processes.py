"""The load spread over worker processes, each with its own event loop and gRPC channel.

One asyncio thread in Python drives a closed loop at up to about 9,000 requests per second (H200
host, benchmarks/OVERHEAD.md); beyond that the loop would measure the load generator instead of the
server. `--client-processes N` splits the concurrency (or the request rate: Poisson arrivals split
N ways are still Poisson) over N processes. Each sends the same pool of prebuilt requests and
streams its completions back every few milliseconds, each batch stamped with the time up to which
it is complete (its watermark); `perf_counter` is the system-wide monotonic clock, so their times
line up with the main process's windows. A window is cut only once every worker's watermark has
passed its end: a second of reports at a few thousand requests per second overflows the queue's
pipe (64 KiB), the rest waits in the workers, and the fixed grace period used before left windows
short of requests or empty (H200, 9,000 requests/s: windows of 3,637, 32 and 0 requests in a cell
that sent 44,396).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
import traceback
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import grpc

from tritonstack.benchmarks.load import AsyncioLoad, Completion, Generator, Sender, closed_loop, open_loop
from tritonstack.benchmarks.prebuilt import Prebuilt
from tritonstack.errors import ServeError

_FLUSH_S = 0.01  # how often a worker sends its completions
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
_NOTHING = object()  # what `ProcessLoad._next` returns for an empty queue


def split(mode: str, level: float, processes: int) -> list[float]:
    """Each worker's share of the load: concurrency as whole requests (workers left with none are
    not started), a request rate in equal parts."""
    if mode == "concurrency":
        count = int(level)
        return [float(count // processes + (i < count % processes)) for i in range(min(processes, count))]
    return [level / processes] * processes


@dataclass(frozen=True)
class WorkerFailure:
    """What a worker sends when it fails: one line, and its traceback for the chain."""

    line: str
    traceback: str


class RemoteTraceback(Exception):
    """A worker process's traceback, chained as the cause of the error the main process raises
    (as `concurrent.futures` does for its process pool): a cause cannot cross processes itself."""


class ProcessLoad:
    """`benchmarks.load.Load` over worker processes (started per cell, stopped at its end)."""

    def __init__(
        self,
        url: str,
        requests: Prebuilt,
        mode: str,
        level: float,
        processes: int,
        timeout_s: float,
    ) -> None:
        context = multiprocessing.get_context("spawn")  # gRPC does not survive fork
        self._queue: multiprocessing.Queue[Any] = context.Queue()
        self._stop: ProcessEvent = context.Event()
        what = (requests.model, requests.version, requests.payloads, timeout_s)  # regions stay here
        self._workers: list[SpawnProcess] = [
            context.Process(
                target=_work, args=(url, what, mode, share, worker, self._queue, self._stop), daemon=True
            )
            for worker, share in enumerate(split(mode, level, processes))
        ]
        self._finished = self._ready = 0
        self._watermarks = [0.0] * len(self._workers)
        self._pending: list[Completion] = []

    async def start(self) -> None:
        """Start the workers and return once each has its channel up and a first answer back:
        spawning takes about a second, which the warm-up window must not be spent on."""
        for worker in self._workers:
            worker.start()
        while self._ready < len(self._workers):
            self._pending += await asyncio.to_thread(self._drain, True)

    async def completions(self) -> list[Completion]:
        """Every completion up to now: waits until each running worker has reported past it."""
        cut = time.perf_counter()
        done, self._pending = self._pending + self._drain(block=False), []
        while self._finished < len(self._workers) and min(self._watermarks) < cut:
            done += await asyncio.to_thread(self._drain, True)
        return done

    async def stop(self) -> list[Completion]:
        self._stop.set()
        done, self._pending = self._pending, []
        while self._finished < len(self._workers):
            done += await asyncio.to_thread(self._drain, True)
        for worker in self._workers:
            worker.join()
        return done

    def _drain(self, block: bool) -> list[Completion]:
        """What the queue holds; with `block`, wait (up to a second at a time) for at least one
        message. Messages: (worker, watermark, completions), True (a worker is ready), None (a
        worker is done) or a `WorkerFailure`."""
        done: list[Completion] = []
        while True:
            item = self._next(block)
            if item is _NOTHING:
                if not block:
                    return done
                if not any(w.is_alive() for w in self._workers):
                    codes = [w.exitcode for w in self._workers]
                    raise ServeError(f"a load worker process died without reporting (exit codes {codes})")
                continue
            block = False  # got one; take the rest without waiting
            if item is None:
                self._finished += 1  # its last completions came before
            elif item is True:
                self._ready += 1
            elif isinstance(item, WorkerFailure):
                self._stop.set()
                raise ServeError(item.line) from RemoteTraceback(item.traceback)
            else:
                worker, self._watermarks[worker], completions = item
                done += completions

    def _next(self, block: bool) -> Any:
        """The queue's next message; with `block`, waiting up to a second for it. `_NOTHING` when
        there is none: an empty queue is no error, what it means is `_drain`'s to say."""
        try:
            return self._queue.get(timeout=1.0) if block else self._queue.get_nowait()
        except queue.Empty:
            return _NOTHING


def _work(
    url: str,
    what: tuple[str, str, list[bytes], float],
    mode: str,
    share: float,
    worker: int,
    out: multiprocessing.Queue[Any],
    stop: ProcessEvent,
) -> None:
    """Worker process number `worker`: its share of the load until `stop`, then None (or a
    `WorkerFailure`)."""
    generator = closed_loop(int(share)) if mode == "concurrency" else open_loop(share, seed=worker)
    try:
        asyncio.run(_send_until_stopped(url, what, generator, worker, out, stop))
    except Exception as exc:  # reported to the main process as one line, with the traceback
        out.put(WorkerFailure(f"load worker failed: {type(exc).__name__}: {exc}", traceback.format_exc()))
    out.put(None)


async def _send_until_stopped(
    url: str,
    what: tuple[str, str, list[bytes], float],
    generator: Generator,
    worker: int,
    out: multiprocessing.Queue[Any],
    stop: ProcessEvent,
) -> None:
    async with grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS) as channel:
        model, version, payloads, timeout_s = what
        load = AsyncioLoad(Sender(channel, Prebuilt(model, version, payloads), timeout_s), generator)

        async def flush() -> None:
            # Completions are recorded on this thread as they happen: all before `mark` are in.
            mark = time.perf_counter()
            out.put((worker, mark, await load.completions()))

        await load.send(time.perf_counter())  # the channel is up and the model answers: this worker is ready
        await flush()
        out.put(True)
        await load.start()
        while not stop.is_set():
            await asyncio.sleep(_FLUSH_S)
            await flush()
        out.put((worker, time.perf_counter(), await load.stop()))
