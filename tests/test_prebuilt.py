"""The bench's prebuilt requests (benchmarks/prebuilt.py) against the embedded Triton: tensors in
the message or in registered system shared memory, answers equal to the model's, regions gone
from the server and from /dev/shm once released."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc.aio as grpcaio
from torch import nn

from tests.conftest import ServerFactory
from tritonstack.benchmarks.prebuilt import prebuilt
from tritonstack.client._wire import MODEL_INFER, decode_response, read_outputs
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.spec import Array, ModelSpec, TensorSpec

pytestmark = pytest.mark.server

SPEC = ModelSpec(
    "scaled",
    (TensorSpec("x", "float32", (4,)), TensorSpec("ids", "int64", (2,), high=7)),
    (TensorSpec("y", "float32", (4,)),),
    max_batch_size=16,
)


class Scaled(nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + ids.sum(1, keepdim=True).float()


@pytest.fixture(scope="module")
def url(triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prebuilt")
    torch.jit.script(Scaled()).save(str(root / "model.pt"))  # type: ignore[no-untyped-call]
    write_version(
        root / "repo", SPEC.name, build_config(SPEC, Format.TORCHSCRIPT), {"model.pt": root / "model.pt"}
    )
    server = triton_server_factory(root / "repo")
    yield server.grpc_url
    server.stop()


def _expected(feeds: dict[str, Array]) -> Array:
    expected: Array = feeds["x"] * 2 + feeds["ids"].sum(1, keepdims=True).astype(np.float32)
    return expected


@pytest.mark.parametrize("shared_memory", ["none", "system"])
def test_prebuilt_requests_answer_as_the_model(url: str, shared_memory: str) -> None:
    batches = [SPEC.random_inputs(5, seed=i) for i in range(3)]

    async def run() -> tuple[list[Array], dict[str, object], list[str]]:
        client = grpcaio.InferenceServerClient(url)
        channel = grpc.aio.insecure_channel(url)
        built = prebuilt(SPEC.name, "", SPEC, batches, shared_memory)  # type: ignore[arg-type]
        names = [r.name for r in built.regions.regions] if built.regions is not None else []
        try:
            await built.register(client)
            send = channel.unary_unary(MODEL_INFER)
            answers = []
            for i, payload in enumerate(built.payloads):
                response = await send(payload)
                if built.regions is None:
                    answers.append(read_outputs(decode_response(response), ["y"])["y"])
                else:
                    region = built.regions.regions[i]
                    offsets = built.output_offsets[i] if built.output_offsets else {}
                    contents = region.contents()
                    answers.append(read_outputs(decode_response(response), ["y"], contents, offsets)["y"])
        finally:
            await built.unregister(client)
            built.destroy()
            status = await client.get_system_shared_memory_status(as_json=True)
            await channel.close()
            await client.close()
        return answers, status, names

    answers, status, names = asyncio.run(run())
    for feeds, answer in zip(batches, answers, strict=True):
        np.testing.assert_allclose(answer, _expected(feeds), rtol=1e-6)
    assert len(names) == (3 if shared_memory == "system" else 0)  # a region per batch
    assert not status.get("regions")  # unregistered
    assert not any((Path("/dev/shm") / name).exists() for name in names)  # and freed
