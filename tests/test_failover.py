"""Several endpoints: two embedded Tritons on the same repository behind one client, taking calls
in turn; when one dies the client keeps answering from the other, and takes the restarted one
back into the rotation. (A server drained by SIGTERM: tests/test_faults_drain.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ServerFactory
from tests.reference_models import write_reference_models
from tritonstack.client import NO_RETRY, AsyncTritonClient, ServerUnavailable, TritonClient
from tritonstack.client._endpoints import Endpoint, Endpoints
from tritonstack.errors import UsageError
from tritonstack.serve import TritonServer, free_port
from tritonstack.spec import Array


@pytest.fixture(scope="module")
def servers(
    triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, list[TritonServer]]]:
    root = tmp_path_factory.mktemp("failover")
    model = write_reference_models(root / "repo", root, names=("two_tower",))[0]
    servers = [
        triton_server_factory(
            root / "repo",
            grpc_port=free_port(),  # fixed, so a restart comes back at the same address
            model_control_mode="explicit",
            extra_args=[f"--load-model={model}"],
        )
        for _ in range(2)
    ]
    yield model, servers
    for server in servers:
        server.stop()


def _count(server: TritonServer, model: str) -> int:
    with TritonClient(server.grpc_url) as one:
        (stats,) = one.statistics(model)["model_stats"]
        return int(stats.get("inference_count", 0))


def test_round_robin_failover_and_recovery(servers: tuple[str, list[TritonServer]]) -> None:
    model, (first, second) = servers
    with TritonClient([first.grpc_url, second.grpc_url], timeout=5.0) as triton:
        inputs: dict[str, Array] = triton.model_spec(model).random_inputs(1)
        want = triton.infer(model, inputs)
        counts = [_count(s, model) for s in (first, second)]
        for _ in range(40):
            triton.infer(model, inputs)
        spread = [_count(s, model) - c for s, c in zip((first, second), counts, strict=True)]
        assert min(spread) >= 10, f"round robin should spread 40 requests, got {spread}"

        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        start = time.monotonic()
        for _ in range(40):  # retries land on the live server: no error reaches the caller
            assert triton.infer(model, inputs).keys() == want.keys()
        print(
            f"\nfailover: 40 requests answered by the survivor in {time.monotonic() - start:.2f} s "
            "after SIGKILL"
        )

        first.stop()
        first.start()
        before = _count(first, model)
        deadline = time.monotonic() + 15
        while _count(first, model) == before:  # back in the rotation after its reconnect backoff
            assert time.monotonic() < deadline, "the restarted server never got traffic again"
            triton.infer(model, inputs)


def test_a_new_client_reaches_a_restarted_server_at_once(servers: tuple[str, list[TritonServer]]) -> None:
    """A client created after a restart connects on its own: it does not inherit the backoff of a
    channel that watched the server die (gRPC shares connections between like channels)."""
    model, (first, _) = servers
    with TritonClient(first.grpc_url) as watching:
        inputs = watching.model_spec(model).random_inputs(1)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        with pytest.raises(ServerUnavailable):
            watching.infer(model, inputs)
        first.stop()
        first.start()
        with TritonClient(first.grpc_url, retry=NO_RETRY) as new:
            new.infer(model, inputs)


def test_async_client_balances_too(servers: tuple[str, list[TritonServer]]) -> None:
    model, (first, second) = servers

    async def main() -> None:
        async with AsyncTritonClient([first.grpc_url, second.grpc_url]) as aio:
            inputs = (await aio.model_spec(model)).random_inputs(1)
            for _ in range(20):
                await aio.infer(model, inputs)

    counts = [_count(s, model) for s in (first, second)]
    asyncio.run(main())
    assert all(_count(s, model) > c for s, c in zip((first, second), counts, strict=True))


def test_several_urls_need_host_and_port() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        TritonClient(["127.0.0.1:8001", "localhost"])
    with pytest.raises(ValueError, match="at least one"):
        TritonClient([])


def test_shared_memory_needs_one_url() -> None:
    with pytest.raises(UsageError, match="one url"):
        TritonClient(["127.0.0.1:8001", "127.0.0.1:8002"], use_shared_memory=True)


def test_a_failed_server_leaves_the_turn_until_its_skip_ends() -> None:
    first, second = (Endpoint(f"127.0.0.1:{port}", client=None, infer=lambda: None) for port in (1, 2))
    endpoints = Endpoints([first, second])
    assert {endpoints.pick().url for _ in range(4)} == {first.url, second.url}
    endpoints.skip(first)
    assert {endpoints.pick().url for _ in range(4)} == {second.url}
    assert endpoints.pick(tried={second}) is first  # skipped, but the only one this call has not tried
    assert endpoints.untried({second}) and not endpoints.untried({first, second})
    endpoints.skip(first)  # twice in a row: skipped longer
    assert first.skip_until - time.monotonic() > 0.15
    first.skip_until = time.monotonic()  # the skip ends
    assert {endpoints.pick().url for _ in range(4)} == {first.url, second.url}
    endpoints.answered(first)
    assert first.failures == 0
