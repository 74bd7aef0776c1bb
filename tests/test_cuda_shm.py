"""CUDA shared memory (`use_shared_memory="cuda"`) against the real embedded Triton, serving a CPU
instance (Triton copies between the GPU region and the instance). It runs where cuda-bindings and
a CUDA GPU are present and is skipped elsewhere, with the reason; without cuda-bindings, asking
for it is a one-line error naming the fix, checked everywhere.

Each server test runs for both kinds of region: the system kind runs anywhere, so the tests
themselves are exercised where no GPU is, and the two kinds are held to the same behaviour.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from torch import nn

from tests.conftest import ServerFactory
from tritonstack.cli import main
from tritonstack.client import AsyncTritonClient, ClientError, InferRequest, TritonClient
from tritonstack.client._shm import ShmKind, shm_pool
from tritonstack.errors import UsageError
from tritonstack.export.formats import ExportOptions
from tritonstack.export.onnx import export as export_onnx
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.serve import free_port
from tritonstack.spec import Array, ModelSpec, TensorSpec

# Two inputs of different dtypes and two outputs: the region holds four tensors, with gaps.
SPEC = ModelSpec(
    "two_towers",
    (TensorSpec("dense", "float32", (3,)), TensorSpec("ids", "int64", (5,), high=50)),
    (TensorSpec("score", "float32", (1,)), TensorSpec("scaled", "float32", (3,))),
    max_batch_size=8,
)


class TwoTowers(nn.Module):
    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = dense.sum(1, keepdim=True) + ids.to(torch.float32).sum(1, keepdim=True)
        return score, dense * 2.0


def _cuda_shm_missing() -> str | None:
    try:
        shm_pool("cuda")
    except ClientError as exc:
        return str(exc)
    return None


MISSING = _cuda_shm_missing()
KINDS = [
    "system",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(MISSING is not None, reason=f"needs cuda-bindings and a CUDA GPU: {MISSING}"),
        ],
    ),
]
OTHER: dict[ShmKind, ShmKind] = {"system": "cuda", "cuda": "system"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cuda_shm")
    artifact = export_onnx(TwoTowers().eval(), SPEC, root, ExportOptions())
    config = build_config(SPEC, Format.ONNX)  # KIND_CPU
    write_version(root / "repo", SPEC.name, config, {"model.onnx": artifact.path})
    return root / "repo"


@pytest.fixture(scope="module")
def url(repo: Path, triton_server_factory: ServerFactory) -> Iterator[str]:
    server = triton_server_factory(repo)
    yield server.grpc_url
    server.stop()


@pytest.fixture()
def triton(url: str) -> Iterator[TritonClient]:
    with TritonClient(url, timeout=30.0) as c:
        yield c


def _requests(n: int) -> list[InferRequest]:
    return [
        InferRequest(SPEC.name, SPEC.random_inputs(1 + i % SPEC.max_batch_size, seed=i)) for i in range(n)
    ]


def _regions(triton: TritonClient, kind: ShmKind) -> list[str]:
    """Our regions of `kind` that the server knows."""
    with grpcclient.InferenceServerClient(triton.url) as client:
        status = getattr(client, f"get_{kind}_shared_memory_status")(as_json=True)
    return [name for name in status.get("regions", {}) if name.startswith("tritonstack-")]


def _assert_same(got: Mapping[str, Array] | ClientError, want: Mapping[str, Array]) -> None:
    """Equal but for summation order (requests in flight together may be batched); a tensor read
    from the wrong place in the region would be far off."""
    assert isinstance(got, Mapping) and got.keys() == want.keys()
    for name, value in want.items():
        assert got[name].flags.owndata  # a copy: the region is reused by the next request
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)


def test_missing_cuda_bindings_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it fails, as where it is absent
    for name in ("tritonclient.utils.cuda_shared_memory", "tritonstack.client._cuda_shm"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # imported afresh
    for make in (TritonClient, AsyncTritonClient):
        with pytest.raises(ClientError) as err:
            make("127.0.0.1:1", use_shared_memory="cuda")
        message = str(err.value)
        assert "\n" not in message and "cuda-bindings" in message and "tritonstack[cuda]" in message
    assert main(["infer", SPEC.name, "--url", "127.0.0.1:1", "--cuda-shm", "--random", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [({"cuda_device": 1}, "needs use_shared_memory='cuda'"), ({"use_shared_memory": "gpu"}, "or 'cuda'")],
)
def test_shared_memory_options_are_checked(options: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        TritonClient("127.0.0.1:1", **options)  # type: ignore[arg-type]


@pytest.mark.server
@pytest.mark.parametrize("kind", KINDS)
def test_regions_are_registered_once_reused_and_released(
    url: str, triton: TritonClient, kind: ShmKind
) -> None:
    requests = _requests(12)
    with TritonClient(url, use_shared_memory=kind) as shm_client:
        for request in requests:
            _assert_same(shm_client.infer(SPEC.name, request.inputs), triton.infer(SPEC.name, request.inputs))
        assert len(_regions(triton, kind)) == 1  # sequential requests share one region
        x = requests[-1].inputs
        _assert_same(
            shm_client.infer(SPEC.name, x, outputs=["scaled"]), triton.infer(SPEC.name, x, outputs=["scaled"])
        )
        results = shm_client.infer_many(requests, concurrency=4)  # one region per request in flight
        for request, result in zip(requests, results, strict=True):
            _assert_same(result, triton.infer(SPEC.name, request.inputs))
        assert 1 <= len(_regions(triton, kind)) <= 4
        assert _regions(triton, OTHER[kind]) == []
    assert _regions(triton, kind) == []


@pytest.mark.server
@pytest.mark.parametrize("kind", KINDS)
def test_async_regions(url: str, triton: TritonClient, kind: ShmKind) -> None:
    requests = _requests(16)

    async def run() -> list[dict[str, Array] | ClientError]:
        async with AsyncTritonClient(url, use_shared_memory=kind) as aio:
            results = await aio.infer_many(requests, concurrency=8)
            assert 1 <= len(_regions(triton, kind)) <= 8
            return results

    for request, result in zip(requests, asyncio.run(run()), strict=True):
        _assert_same(result, triton.infer(SPEC.name, request.inputs))
    assert _regions(triton, kind) == []


@pytest.mark.server
@pytest.mark.parametrize("kind", KINDS)
def test_restarted_server_gets_the_regions_again(
    repo: Path, triton_server_factory: ServerFactory, kind: ShmKind
) -> None:
    server = triton_server_factory(repo, grpc_port=free_port())
    inputs = SPEC.random_inputs(3)

    async def run() -> None:
        with TritonClient(server.grpc_url, timeout=30.0, use_shared_memory=kind) as triton:
            async with AsyncTritonClient(server.grpc_url, timeout=30.0, use_shared_memory=kind) as aio:
                want = triton.infer(SPEC.name, inputs)
                _assert_same(await aio.infer(SPEC.name, inputs), want)
                server.stop()
                server.start()  # same gRPC port, no region registered
                triton.wait_until_ready(timeout=30)
                _assert_same(triton.infer(SPEC.name, inputs), want)
                _assert_same(await aio.infer(SPEC.name, inputs), want)
                assert len(_regions(triton, kind)) == 2  # one for each client

    try:
        asyncio.run(run())
    finally:
        server.stop()


@pytest.mark.server
@pytest.mark.parametrize("kind", KINDS)
def test_cli_infer_through_shared_memory(url: str, capsys: pytest.CaptureFixture[str], kind: ShmKind) -> None:
    flag = {"system": "--shm", "cuda": "--cuda-shm"}[kind]
    assert main(["infer", SPEC.name, "--url", url, "--random", "2", flag]) == 0
    assert "scaled: float32 [2, 3]" in capsys.readouterr().out
