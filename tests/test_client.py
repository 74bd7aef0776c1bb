"""The client against a real Triton (a tiny ONNX model exported from PyTorch, served from a tmp
repo), and against no server at all: closed ports, silent sockets, retries and deadlines."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerFactory
from tests.reference_models import TINY_SPEC, TinyLinear
from tritonstack.cli import main
from tritonstack.client import (
    AsyncTritonClient,
    ClientError,
    DeadlineExceeded,
    InferRequest,
    InvalidInput,
    ModelNotFound,
    RetryPolicy,
    ServerUnavailable,
    TritonClient,
)
from tritonstack.client import _base as client_base
from tritonstack.client._retry import Deadline
from tritonstack.export.formats import ExportOptions
from tritonstack.export.onnx import export as export_onnx
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.serve import free_port
from tritonstack.spec import Array

# Added to time bounds on a call: enough for a loaded machine, far below a call that ignores its
# deadline (a retry policy of 1000 attempts, a timeout of 30 s).
SLACK_S = 3.0

SPEC = TINY_SPEC


@pytest.fixture(scope="module")
def model() -> TinyLinear:
    torch.manual_seed(0)
    return TinyLinear(4, 2).eval()


@pytest.fixture(scope="module")
def url(
    triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory, model: TinyLinear
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("client")
    repo = root / "repo"
    artifact = export_onnx(model, SPEC, root, ExportOptions())
    write_version(repo, SPEC.name, build_config(SPEC, Format.ONNX), {"model.onnx": artifact.path})
    server = triton_server_factory(repo)
    yield server.grpc_url
    server.stop()


@pytest.fixture()
def triton(url: str) -> Iterator[TritonClient]:
    with TritonClient(url, timeout=30.0) as c:
        yield c


def _x(batch: int) -> Array:
    return np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)


def _assert_healthy(triton: TritonClient) -> None:
    assert triton.is_ready()
    assert triton.infer(SPEC.name, {"x": _x(2)})["y"].shape == (2, 2)


def test_live_ready_and_listed(triton: TritonClient) -> None:
    assert triton.is_live() and triton.is_ready()
    triton.wait_until_ready(timeout=5)
    statuses = {m.name: m for m in triton.list_models()}
    assert (statuses[SPEC.name].version, statuses[SPEC.name].state) == ("1", "READY")


def test_model_spec_matches_and_is_cached(triton: TritonClient) -> None:
    spec = triton.model_spec(SPEC.name)
    assert spec == SPEC  # shapes without the batch dim, max_batch_size from the config, high None
    assert triton.model_spec(SPEC.name) is spec
    assert triton.model_spec(SPEC.name, version=1) == SPEC


def test_model_config_and_statistics(triton: TritonClient) -> None:
    config = triton.model_config(SPEC.name)
    assert (config.name, config.platform, config.max_batch_size) == (SPEC.name, "onnxruntime_onnx", 8)
    triton.infer(SPEC.name, {"x": _x(1)})
    (stats,) = triton.statistics(SPEC.name)["model_stats"]
    assert stats["name"] == SPEC.name and int(stats["inference_count"]) >= 1


@pytest.mark.parametrize("batch", [1, 3, SPEC.max_batch_size])
def test_infer_matches_pytorch(triton: TritonClient, model: TinyLinear, batch: int) -> None:
    x = _x(batch)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = triton.infer(SPEC.name, {"x": x}, version=1, outputs=["y"])
    assert list(got) == ["y"]
    np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-6)


BAD_REQUESTS: list[tuple[str, Callable[[Array], dict[str, Array]], str]] = [
    ("wrong-name", lambda x: {"inp": x}, r"unknown input 'inp' — expected inputs: x \(FP32 \[-1, 4\]\)"),
    ("wrong-dtype", lambda x: {"x": x.astype(np.float64)}, r"dtype float64, model expects float32"),
    ("wrong-shape", lambda x: {"x": x[:, :3]}, r"has shape \[2, 3\], model expects \[-1, 4\]"),
    ("batch-above-max", lambda x: {"x": _x(9)}, r"batch size 9 exceeds the model's max_batch_size 8"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_are_refused_and_the_server_stays_ready(
    triton: TritonClient, mutate: Callable[[Array], dict[str, Array]], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        triton.infer(SPEC.name, mutate(_x(2)))
    assert err.value.model == SPEC.name and str(err.value).startswith(f"{SPEC.name}: ")
    _assert_healthy(triton)


def test_tritons_own_refusal_is_invalid_input(triton: TritonClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the client's checks off, the server's INVALID_ARGUMENT maps to the same error."""
    monkeypatch.setattr(client_base, "check_request", lambda spec, inputs: None)
    with pytest.raises(InvalidInput, match=SPEC.name) as err:
        triton.infer(SPEC.name, {"x": _x(2)[:, :3]})
    assert err.value.model == SPEC.name
    _assert_healthy(triton)


def test_unknown_model_and_version(triton: TritonClient) -> None:
    with pytest.raises(ModelNotFound, match="no_such_model") as err:
        triton.infer("no_such_model", {"x": _x(1)})
    assert err.value.model == "no_such_model"
    with pytest.raises(ModelNotFound, match=SPEC.name):
        triton.model_spec(SPEC.name, version=7)


def test_silent_server_hits_the_deadline() -> None:
    """A socket that accepts connections and never speaks HTTP/2: every call waits out its timeout.

    (A tiny timeout against the real server is not reliable: a 1 µs deadline was seen to let a
    1 ms call succeed.)
    """
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with TritonClient(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.3) as triton:
            assert not triton.is_ready()
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="'tiny_linear': no answer"):
                triton.infer(SPEC.name, {"x": _x(1)}, timeout=0.2)
            assert 0.2 <= time.monotonic() - start < 0.2 + SLACK_S


def test_closed_port() -> None:
    """Refused at once: the call fails after its retries, long before its 30 s deadline."""
    closed_url = f"127.0.0.1:{free_port()}"
    with TritonClient(closed_url, timeout=30.0) as triton:
        assert not triton.is_live() and not triton.is_ready()
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match=closed_url) as err:
            triton.infer(SPEC.name, {"x": _x(1)})
        assert time.monotonic() - start < SLACK_S
        assert "tritonstack serve" in str(err.value)
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match=f"{closed_url} did not answer within 0.5 s"):
            triton.wait_until_ready(timeout=0.5)
        assert 0.5 <= time.monotonic() - start < 0.5 + SLACK_S


# -- asyncio client, infer_many, retries ----------------------------------------------------------


def test_async_client_has_the_same_answers(url: str, triton: TritonClient) -> None:
    async def main() -> None:
        async with AsyncTritonClient(url, timeout=30.0) as aio:
            assert await aio.is_live() and await aio.is_ready()
            await aio.wait_until_ready(timeout=5)
            assert await aio.list_models() == triton.list_models()
            assert await aio.model_spec(SPEC.name) == SPEC
            assert (await aio.model_config(SPEC.name)).max_batch_size == 8
            assert (await aio.model_metadata(SPEC.name)).name == SPEC.name
            x = _x(3)
            np.testing.assert_array_equal(
                (await aio.infer(SPEC.name, {"x": x}))["y"], triton.infer(SPEC.name, {"x": x})["y"]
            )
            (stats,) = (await aio.statistics(SPEC.name))["model_stats"]
            assert int(stats["inference_count"]) >= 3
            with pytest.raises(InvalidInput, match="dtype float64"):
                await aio.infer(SPEC.name, {"x": x.astype(np.float64)})
            with pytest.raises(ModelNotFound, match="no_such_model"):
                await aio.infer("no_such_model", {"x": x})

    asyncio.run(main())


def test_infer_many_keeps_order_sync_and_async(url: str, triton: TritonClient) -> None:
    requests = [InferRequest(SPEC.name, {"x": _x(1 + i % SPEC.max_batch_size)}) for i in range(40)]
    alone = [triton.infer(r.model, r.inputs)["y"] for r in requests]

    async def run_async() -> list[dict[str, Array] | ClientError]:
        async with AsyncTritonClient(url) as aio:
            return await aio.infer_many(requests, concurrency=16)

    for results in (triton.infer_many(requests, concurrency=8), asyncio.run(run_async())):
        for got, want in zip(results, alone, strict=True):
            assert isinstance(got, dict)
            np.testing.assert_array_equal(got["y"], want)


def test_infer_many_raises_or_returns_errors(triton: TritonClient) -> None:
    requests = [InferRequest(SPEC.name, {"x": _x(2)}), InferRequest(SPEC.name, {"x": _x(9)})]
    with pytest.raises(InvalidInput, match="batch size 9"):
        triton.infer_many(requests)
    good, bad = triton.infer_many(requests, return_exceptions=True)
    assert isinstance(good, dict) and isinstance(bad, InvalidInput) and bad.model == SPEC.name


def _flaky(failures: int, status: str) -> tuple[Callable[..., str], list[float]]:
    """A tritonclient-like call that fails `failures` times with `status`, then answers; records
    the timeout each attempt got."""
    timeouts: list[float] = []

    def call(*, client_timeout: float, headers: object) -> str:
        timeouts.append(client_timeout)
        if len(timeouts) <= failures:
            raise InferenceServerException("boom", status=f"StatusCode.{status}")
        return "ok"

    return call, timeouts


def test_transient_failures_are_retried_within_one_deadline() -> None:
    with TritonClient(f"127.0.0.1:{free_port()}", retry=RetryPolicy(attempts=4, base_delay=0.01)) as triton:
        call, timeouts = _flaky(3, "UNAVAILABLE")
        assert triton._call(lambda _: call, deadline=Deadline(5.0)) == "ok"
        assert len(timeouts) == 4 and timeouts == sorted(timeouts, reverse=True) and timeouts[0] <= 5.0
        call, timeouts = _flaky(4, "UNAVAILABLE")
        with pytest.raises(ServerUnavailable):
            triton._call(lambda _: call, deadline=Deadline(5.0))
        assert len(timeouts) == 4


@pytest.mark.parametrize("status", ["INVALID_ARGUMENT", "NOT_FOUND", "DEADLINE_EXCEEDED", "INTERNAL"])
def test_other_failures_are_not_retried(status: str) -> None:
    with TritonClient(f"127.0.0.1:{free_port()}") as triton:
        call, timeouts = _flaky(1, status)
        with pytest.raises(ClientError):
            triton._call(lambda _: call, deadline=Deadline(5.0), infer=True)
        assert len(timeouts) == 1


def test_backoff_is_jittered_and_bounded() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=0.5)
    error = ServerUnavailable("down")
    delays = [policy.delay(error, n, remaining=60) for n in range(1, 10) for _ in range(20)]
    assert all(0 <= d <= 0.5 for d in delays) and len(set(delays)) > 100
    with pytest.raises(ServerUnavailable):
        policy.delay(error, 10, remaining=60)
    with pytest.raises(ServerUnavailable):  # no time left to wait
        RetryPolicy(base_delay=10).delay(error, 1, remaining=0)
    with pytest.raises(InvalidInput):
        policy.delay(InvalidInput("bad"), 1, remaining=60)


def test_async_closed_port_and_silent_server() -> None:
    async def main(closed: str, silent: str) -> None:
        async with AsyncTritonClient(closed, timeout=30.0) as aio:
            assert not await aio.is_ready()
            start = time.monotonic()
            with pytest.raises(ServerUnavailable, match=closed):
                await aio.infer(SPEC.name, {"x": _x(1)})
            assert time.monotonic() - start < SLACK_S
        async with AsyncTritonClient(silent, timeout=0.3) as aio:
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="'tiny_linear'"):
                await aio.infer(SPEC.name, {"x": _x(1)}, timeout=0.2)
            assert 0.2 <= time.monotonic() - start < 0.2 + SLACK_S

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        asyncio.run(main(f"127.0.0.1:{free_port()}", f"127.0.0.1:{sock.getsockname()[1]}"))


# -- system shared memory -------------------------------------------------------------------------


def _our_regions(triton: TritonClient) -> list[str]:
    with grpcclient.InferenceServerClient(triton.url) as raw:
        status = raw.get_system_shared_memory_status(as_json=True)
    return [name for name in status.get("regions", {}) if name.startswith("tritonstack-")]


def test_shared_memory_is_registered_once_reused_and_released(url: str, triton: TritonClient) -> None:
    requests = [InferRequest(SPEC.name, {"x": _x(1 + i % SPEC.max_batch_size)}) for i in range(12)]
    with TritonClient(url, use_shared_memory=True) as shm_client:
        for request in requests:
            got = shm_client.infer(request.model, request.inputs)["y"]
            np.testing.assert_array_equal(got, triton.infer(request.model, request.inputs)["y"])
            assert got.flags.owndata  # a copy: the region is reused by the next request
        assert len(_our_regions(triton)) == 1  # sequential requests share one region
        results = shm_client.infer_many(requests, concurrency=4)  # one region per request in flight
        assert [r["y"].shape for r in results if isinstance(r, dict)] == [
            r.inputs["x"][:, :2].shape for r in requests
        ]
        registered = _our_regions(triton)
        assert 1 <= len(registered) <= 4
        assert all(os.path.exists(f"/dev/shm/{name}") for name in registered)
    assert _our_regions(triton) == []
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in registered)


def test_async_shared_memory(url: str, triton: TritonClient) -> None:
    requests = [InferRequest(SPEC.name, {"x": _x(1 + i % SPEC.max_batch_size)}) for i in range(16)]

    async def main() -> list[dict[str, Array] | ClientError]:
        async with AsyncTritonClient(url, use_shared_memory=True) as aio:
            results = await aio.infer_many(requests, concurrency=8)
            assert 1 <= len(_our_regions(triton)) <= 8
            return results

    for request, result in zip(requests, asyncio.run(main()), strict=True):
        assert isinstance(result, dict)
        np.testing.assert_array_equal(result["y"], triton.infer(request.model, request.inputs)["y"])
    assert _our_regions(triton) == []


def test_cli_infer_through_shared_memory(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", SPEC.name, "--url", url, "--random", "2", "--shm"]) == 0
    assert "y: float32 [2, 2]" in capsys.readouterr().out


def test_infer_many_bounds_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    requests = [InferRequest(SPEC.name, {"x": _x(1) + i}) for i in range(50)]
    in_flight, peak = 0, 0

    async def fake_infer(
        self: AsyncTritonClient, request: InferRequest, deadline: Deadline
    ) -> dict[str, Array]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return {"y": request.inputs["x"]}

    monkeypatch.setattr(AsyncTritonClient, "_infer", fake_infer)

    async def main() -> list[dict[str, Array] | ClientError]:
        async with AsyncTritonClient(f"127.0.0.1:{free_port()}") as aio:
            return await aio.infer_many(requests, concurrency=7)

    results = asyncio.run(main())
    assert peak == 7
    assert [r["y"][0, 0] for r in results if isinstance(r, dict)] == [r.inputs["x"][0, 0] for r in requests]


def test_retries_stop_at_the_deadline() -> None:
    """A server that stays down: however many attempts the policy allows, the call ends on time."""
    patient = RetryPolicy(attempts=1000, base_delay=0.05, max_delay=0.05)
    with TritonClient(f"127.0.0.1:{free_port()}", timeout=0.5, retry=patient) as triton:
        start = time.monotonic()
        with pytest.raises((ServerUnavailable, DeadlineExceeded)):
            triton.list_models()
        assert 0.3 < time.monotonic() - start < 0.5 + SLACK_S
