"""Reliability against the real embedded Triton: sustained load, a server killed and restarted
under traffic, a model unloaded under traffic, and a backend exception confined to its request.

Figures (requests, errors, seconds) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerFactory
from tests.reference_models import FRAGILE, MARKER, write_fragile_model, write_reference_models
from tritonstack.client import (
    AsyncTritonClient,
    ClientError,
    DeadlineExceeded,
    InferenceFailed,
    InferRequest,
    ModelNotFound,
    ServerUnavailable,
    TritonClient,
)
from tritonstack.serve import TritonServer, free_port
from tritonstack.spec import Array

pytestmark = pytest.mark.server

LOAD_REQUESTS = 10_000
CONCURRENCY = 64
POOL_PER_MODEL = 50  # distinct inputs per model: a row mixed into another request cannot go unnoticed
FAULT_DEADLINE = 2.0
# What a call may take past its deadline on a loaded machine; a call that hung would take far more.
SLACK_S = 3.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("reliability")
    models = write_reference_models(root / "repo", root)
    write_fragile_model(root / "repo", root)
    return root / "repo", models


@pytest.fixture(scope="module")
def server(repo: tuple[Path, list[str]], triton_server_factory: ServerFactory) -> TritonServer:
    # Explicit model control so a test can unload a model; every model is loaded at start.
    return triton_server_factory(repo[0], model_control_mode="explicit", extra_args=["--load-model=*"])


def _run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


def test_load_every_response_equals_the_request_sent_alone(
    server: TritonServer, repo: tuple[Path, list[str]]
) -> None:
    async def main() -> None:
        async with AsyncTritonClient(server.grpc_url, timeout=30.0) as aio:
            pool = []
            for model in repo[1]:
                spec = await aio.model_spec(model)
                pool += [
                    InferRequest(model, spec.random_inputs(1 + s % 4, seed=s)) for s in range(POOL_PER_MODEL)
                ]
            alone = [await aio.infer(r.model, r.inputs) for r in pool]  # one in flight: never batched
            picks = np.random.default_rng(0).integers(0, len(pool), LOAD_REQUESTS)
            start = time.perf_counter()
            results = await aio.infer_many(
                [pool[i] for i in picks], concurrency=CONCURRENCY, return_exceptions=True
            )
            elapsed = time.perf_counter() - start
        errors = [r for r in results if isinstance(r, ClientError)]
        print(
            f"\nload: {len(results)} requests over {len(repo[1])} models at concurrency {CONCURRENCY}: "
            f"{len(errors)} errors in {elapsed:.1f} s ({len(results) / elapsed:.0f} req/s)"
        )
        assert not errors, errors[:3]
        for i, result in zip(picks, results, strict=True):
            assert isinstance(result, dict) and result.keys() == alone[i].keys()
            for name, value in result.items():
                # Batched kernels may sum in another order; a foreign row would be off by far more.
                np.testing.assert_allclose(value, alone[i][name], rtol=1e-5, atol=1e-6)

    _run(main)


def test_kill_and_restart_under_traffic(repo: tuple[Path, list[str]], tmp_path: Path) -> None:
    model = repo[1][0]
    server = TritonServer(
        repo[0],
        grpc_port=free_port(),
        model_control_mode="explicit",
        extra_args=[f"--load-model={model}"],
        log_path=tmp_path / "triton.log",
    )
    server.start()
    # The sync client goes through shared memory: the restarted server must get its region again.
    triton = TritonClient(server.grpc_url, timeout=FAULT_DEADLINE, use_shared_memory=True)

    async def main() -> None:
        async with AsyncTritonClient(server.grpc_url, timeout=FAULT_DEADLINE) as aio:
            inputs = (await aio.model_spec(model)).random_inputs(2)
            want = triton.infer(model, inputs)
            outcomes: list[tuple[str, float]] = []

            async def call() -> tuple[str, float]:
                start = time.monotonic()
                try:
                    await aio.infer(model, inputs)
                    outcome = "ok"
                except (ServerUnavailable, DeadlineExceeded) as error:
                    outcome = type(error).__name__
                return outcome, time.monotonic() - start

            stopping = asyncio.Event()

            async def stream() -> None:
                while not stopping.is_set():
                    outcomes.append(await call())

            workers = [asyncio.create_task(stream()) for _ in range(8)]
            await asyncio.sleep(0.5)
            before = len(outcomes)
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.sleep(1.0)
            stopping.set()
            await asyncio.wait_for(asyncio.gather(*workers), FAULT_DEADLINE + SLACK_S)  # no call hangs
            after = outcomes[before:]
            failed = [o for o, _ in after if o != "ok"]
            print(
                f"\nkill: {before} ok before SIGKILL; after it {len(after)} calls, {len(failed)} failed "
                f"({', '.join(sorted(set(failed)))}), slowest {max(t for _, t in after):.2f} s"
            )
            assert before > 0 and all(o == "ok" for o, _ in outcomes[:before])
            assert failed and all(t <= FAULT_DEADLINE + SLACK_S for _, t in after)
            for new_call in (call(), asyncio.to_thread(_sync_outcome, triton, model, inputs)):
                outcome, took = await new_call
                assert (
                    outcome in ("ServerUnavailable", "DeadlineExceeded") and took <= FAULT_DEADLINE + SLACK_S
                )

            server.stop()  # reaps the killed server's backend stubs
            server.start()  # same gRPC port
            await aio.wait_until_ready(timeout=30)
            assert (await call())[0] == "ok"
            print(f"restart: the same clients answer again {time.monotonic() - killed:.1f} s after the kill")
        triton.wait_until_ready(timeout=30)
        got = triton.infer(model, inputs)
        assert all(np.array_equal(got[name], want[name]) for name in want)

    try:
        _run(main)
    finally:
        triton.close()
        server.stop()


def _sync_outcome(triton: TritonClient, model: str, inputs: dict[str, Array]) -> tuple[str, float]:
    start = time.monotonic()
    try:
        triton.infer(model, inputs)
        outcome = "ok"
    except (ServerUnavailable, DeadlineExceeded) as error:
        outcome = type(error).__name__
    return outcome, time.monotonic() - start


def test_unload_under_traffic(server: TritonServer, repo: tuple[Path, list[str]]) -> None:
    victim, bystander = repo[1][0], repo[1][-1]

    async def main() -> None:
        async with AsyncTritonClient(server.grpc_url, timeout=10.0) as aio:
            inputs = {m: (await aio.model_spec(m)).random_inputs(2) for m in (victim, bystander)}
            results: dict[str, list[tuple[bool, ClientError | None]]] = {victim: [], bystander: []}
            unloaded = asyncio.Event()
            stopping = asyncio.Event()

            async def stream(model: str) -> None:
                while not stopping.is_set():
                    started_after_unload = unloaded.is_set()
                    try:
                        await aio.infer(model, inputs[model])
                        results[model].append((started_after_unload, None))
                    except ClientError as error:
                        results[model].append((started_after_unload, error))

            workers = [asyncio.create_task(stream(m)) for m in (victim, bystander) for _ in range(4)]
            await asyncio.sleep(0.5)
            await aio.unload_model(victim)
            unloaded.set()
            await asyncio.sleep(0.5)
            stopping.set()
            await asyncio.gather(*workers)
            try:
                errors = [e for _, e in results[victim] if e is not None]
                late = [e for after, e in results[victim] if after]
                print(
                    f"\nunload: {victim}: {len(results[victim])} calls, {len(errors)} ModelNotFound; "
                    f"{bystander}: {len(results[bystander])} calls, "
                    f"{sum(e is not None for _, e in results[bystander])} errors"
                )
                assert all(e is None for _, e in results[bystander])
                assert all(isinstance(e, ModelNotFound) and e.model == victim for e in errors)
                assert late and all(isinstance(e, ModelNotFound) for e in late)
                assert any(e is None for _, e in results[victim])
            finally:
                await aio.load_model(victim)
            assert (await aio.infer(victim, inputs[victim])).keys()

    _run(main)


def test_backend_exception_fails_its_batch_and_the_server_keeps_serving(server: TritonServer) -> None:
    """A good request batched with a failing one fails with it, as under Triton's native backends
    (tests/test_backend_parity.py); every other answer is right, and the server keeps serving."""
    values = [MARKER if i % 4 == 0 else float(i) for i in range(32)]
    requests = [InferRequest(FRAGILE.name, {"x": np.full((1, 4), v, np.float32)}) for v in values]
    with TritonClient(server.grpc_url, timeout=30.0) as triton:
        for _ in range(3):  # concurrent, so Triton batches good and bad requests together
            results = triton.infer_many(requests, concurrency=32, return_exceptions=True)
            for value, result in zip(values, results, strict=True):
                if isinstance(result, dict):
                    assert value != MARKER
                    np.testing.assert_array_equal(result["y"], np.full((1, 4), 2 * value, np.float32))
                else:
                    assert isinstance(result, InferenceFailed) and result.model == FRAGILE.name
                    assert "marker value" in str(result) or "TorchScript" in str(result)
        assert triton.is_ready()
        np.testing.assert_array_equal(
            triton.infer(FRAGILE.name, {"x": np.ones((2, 4), np.float32)})["y"], 2.0
        )
