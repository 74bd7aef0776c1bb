"""Ranking-size batches end to end on the CPU: DLRM exported with `--max-batch-size 16384` and
served at that batch (a 4.26 MB request, as for the default preset: the request's size depends
on the inputs, not the tables), and a model with wider rows whose requests pass the client's
message limit and go in chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tests.conftest import ServerFactory
from tests.reference_models import write_reference_models
from tritonstack.client import AsyncTritonClient, InvalidInput, TritonClient
from tritonstack.client._chunks import HEADER_BYTES
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.spec import Array, ModelSpec, TensorSpec, read_config

pytestmark = pytest.mark.server

BATCH = 16384
MB = 2**20
WIDE = ModelSpec(
    "wide",
    (TensorSpec("x", "float32", (512,)),),  # 2 KiB a row: 32 MiB a request at batch 16384
    (TensorSpec("y", "float32", (512,)),),
    max_batch_size=BATCH,
)


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


@pytest.fixture(scope="module")
def served(
    triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("big_batch")
    repo = root / "repo"
    write_reference_models(repo, root, ("dlrm",), max_batch_size=BATCH)
    torch.jit.script(Double()).save(str(root / "wide.pt"))  # type: ignore[no-untyped-call]
    write_version(repo, WIDE.name, build_config(WIDE, Format.TORCHSCRIPT), {"model.pt": root / "wide.pt"})
    server = triton_server_factory(repo)
    yield repo, server.grpc_url
    server.stop()


def _requests(client: TritonClient, model: str, expected: int | None = None) -> int:
    """Requests the model answered; Triton counts one once it is released, which can be after
    the client has its answer, so wait (briefly) for `expected`."""
    deadline = time.monotonic() + 5
    while True:
        stats = client.statistics(model)["model_stats"][0]["inference_stats"]["success"]
        count = int(stats.get("count", 0))
        if count == expected or expected is None or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


@pytest.mark.parametrize("model", ["dlrm_onnx", "dlrm_torchscript"])
def test_dlrm_at_batch_16384_matches_the_artifact_in_process(served: tuple[Path, str], model: str) -> None:
    repo, url = served
    config = read_config(repo / model / "config.pbtxt")
    assert config.max_batch_size == BATCH
    spec = ModelSpec.from_config(config)
    inputs = spec.random_inputs(BATCH, seed=1)
    assert sum(v.nbytes for v in inputs.values()) == 4_259_840

    with TritonClient(url, timeout=120) as triton:
        before = _requests(triton, model)
        served_out = triton.infer(model, inputs)["probability"]
        assert _requests(triton, model, before + 1) == before + 1  # one request: it fits in one message

    if model.endswith("onnx"):
        session = ort.InferenceSession(
            str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        expected = session.run(None, inputs)[0]
    else:
        module = torch.jit.load(str(repo / model / "1" / "model.pt")).eval()  # type: ignore[no-untyped-call]
        with torch.inference_mode():
            expected = module(*(torch.from_numpy(inputs[n]) for n in spec.input_names)).numpy()
    assert served_out.shape == (BATCH, 1)
    np.testing.assert_allclose(served_out, expected, rtol=1e-5, atol=1e-6)


def test_a_request_over_the_message_limit_goes_in_chunks(served: tuple[Path, str]) -> None:
    _, url = served
    x = np.random.default_rng(2).standard_normal((BATCH, 512)).astype(np.float32)
    with TritonClient(url, timeout=120, max_message_bytes=8 * MB) as triton:
        before = _requests(triton, WIDE.name)
        y = triton.infer(WIDE.name, {"x": x})["y"]
        # 32 MiB each way under an 8 MiB limit: five requests of at most 4094 rows
        assert _requests(triton, WIDE.name, before + 5) == before + 5
    np.testing.assert_array_equal(y, x * 2)


def test_the_async_client_chunks_too(served: tuple[Path, str]) -> None:
    _, url = served
    x = np.random.default_rng(3).standard_normal((3000, 512)).astype(np.float32)

    async def run() -> dict[str, Array]:
        async with AsyncTritonClient(url, timeout=60, max_message_bytes=2 * MB) as triton:
            return await triton.infer(WIDE.name, {"x": x})

    np.testing.assert_array_equal(asyncio.run(run())["y"], x * 2)


def test_a_row_over_the_message_limit_is_refused_before_sending(served: tuple[Path, str]) -> None:
    _, url = served
    with TritonClient(url, timeout=30, max_message_bytes=HEADER_BYTES + 2047) as triton:
        before = _requests(triton, WIDE.name)
        with pytest.raises(InvalidInput, match="one row takes 2,048 bytes.*raise max_message_bytes="):
            triton.infer(WIDE.name, {"x": np.zeros((4, 512), np.float32)})
        assert _requests(triton, WIDE.name) == before
