"""Our Python-based backends are as strict as Triton 24.10's native ones, on the real embedded
Triton: what the native backends refuse to load, ours refuse to load; what fails a request there
fails it here; a failed batched run fails every request of the batch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from torch import nn
from tritonclient.grpc import model_config_pb2 as pb
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerFactory
from tests.reference_models import FRAGILE, MARKER, Fragile
from tritonstack.errors import ModelLoadError
from tritonstack.export.deployment import DeploymentOptions, Device
from tritonstack.export.formats import ExportOptions, exporter
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.serve import TritonServer
from tritonstack.spec import Array, ModelSpec

pytestmark = pytest.mark.server

SPEC = ModelSpec(FRAGILE.name, FRAGILE.inputs, FRAGILE.outputs, max_batch_size=8)  # x, y: float32 (4,)


class DictOut(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x * 2.0}


class ListOut(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x * 2.0]


class DoubleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() * 2.0


def _torchscript(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))  # type: ignore[no-untyped-call]
    return path


def _publish(
    repo: Path,
    name: str,
    fmt: Format,
    artifact: Path,
    parameters: dict[str, str] | None = None,
    delay_us: int = 0,
) -> None:
    """`artifact` as a model of `SPEC` served as `fmt` by one CPU instance (for a plan too, as
    anyone may write it: our exporter refuses to), with extra config `parameters` and no warm-up
    (a model whose every request fails would not load)."""
    deployment = DeploymentOptions(device=Device.GPU, max_queue_delay_us=delay_us, warmup_batch_sizes=())
    config = build_config(SPEC.renamed(name), fmt, deployment)
    config.instance_group[0].kind = pb.ModelInstanceGroup.KIND_CPU
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    write_version(repo, name, config, {fmt.filename: artifact})


def test_models_the_native_backends_refuse_are_refused(
    triton_server_factory: ServerFactory, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    onnx = exporter(Format.ONNX)(DoubleOut().eval(), SPEC, tmp_path, ExportOptions()).path
    _publish(repo, "double_onnx", Format.ONNX, onnx)
    pt = _torchscript(Fragile(), tmp_path / "model.pt")
    _publish(repo, "interop_torchscript", Format.TORCHSCRIPT, pt, parameters={"INTER_OP_THREAD_COUNT": "1"})
    (tmp_path / "model.plan").write_bytes(b"never read: the instance kind is refused first")
    _publish(repo, "plan_on_cpu", Format.TENSORRT, tmp_path / "model.plan")
    with pytest.raises(ModelLoadError) as err:
        triton_server_factory(repo)
    message = str(err.value)
    assert "Triton could not load 3 models" in message
    assert [line.split(":")[0] for line in message.splitlines()[1:]] == [
        "  double_onnx",
        "  interop_torchscript",
        "  plan_on_cpu",
    ]
    assert "configuration expects datatype TYPE_FP32 for 'y', model provides TYPE_FP64" in message
    assert "parameter INTER_OP_THREAD_COUNT would abort Triton 24.10" in message
    assert "TensorRT backend supports only GPU device" in message


@pytest.fixture(scope="module")
def server(
    triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("parity")
    repo = root / "repo"
    for name, module in [("dict_out", DictOut()), ("list_out", ListOut()), ("double_out", DoubleOut())]:
        _publish(repo, name, Format.TORCHSCRIPT, _torchscript(module, root / f"{name}.pt"))
    # A long queue delay, so requests sent together run as one batch.
    fragile = _torchscript(Fragile(), root / "fragile.pt")
    _publish(repo, "fragile", Format.TORCHSCRIPT, fragile, delay_us=2_000_000)
    server = triton_server_factory(repo)
    yield server
    server.stop()


def _infer(url: str, model: str, x: Array) -> Array | str:
    """The output, or the error's message."""
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        try:
            out: Array = client.infer(model, [tensor]).as_numpy("y")
        except InferenceServerException as exc:
            return str(exc)
    return out


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            "dict_out",
            "forward() returns a dict: Triton's pytorch backend takes a Tensor or a tuple of Tensors",
        ),
        (
            "list_out",
            "forward() returns a list: Triton's pytorch backend takes a Tensor or a tuple of Tensors",
        ),
        ("double_out", "configuration expects datatype TYPE_FP32 for output 'y', model provides TYPE_FP64"),
    ],
)
def test_outputs_the_pytorch_backend_refuses_fail_the_request(
    server: TritonServer, model: str, reason: str
) -> None:
    """Never cast nor unpacked: the native backend fails these requests, so ours do."""
    got = _infer(server.grpc_url, model, np.ones((2, 4), np.float32))
    assert isinstance(got, str) and model in got and reason in got, got


def _executions(url: str, model: str) -> int:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("execution_count", 0))


def _together(url: str, requests: list[Array]) -> list[Array | str]:
    start = threading.Barrier(len(requests))

    def call(x: Array) -> Array | str:
        start.wait()
        return _infer(url, "fragile", x)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def test_a_failed_batched_run_fails_every_request_of_the_batch(server: TritonServer) -> None:
    """As in the native backends: no retry one request at a time, so a request batched with a bad
    one fails with it (served alone, it answers)."""
    requests = [np.full((2, 4), float(i), np.float32) for i in range(4)]
    before = _executions(server.grpc_url, "fragile")
    good = _together(server.grpc_url, requests)
    assert _executions(server.grpc_url, "fragile") == before + 1  # one batch of every request
    for x, y in zip(requests, good, strict=True):
        np.testing.assert_array_equal(y, x * 2.0)

    requests[2][1, 3] = MARKER
    before = _executions(server.grpc_url, "fragile")
    failed = _together(server.grpc_url, requests)
    assert _executions(server.grpc_url, "fragile") == before + 1
    # One error, the batched run's, for every request: the marker's RuntimeError in TorchScript.
    assert all(isinstance(r, str) and "[StatusCode.INTERNAL] fragile: " in r for r in failed), failed
    assert len(set(map(str, failed))) == 1, failed
    np.testing.assert_array_equal(_infer(server.grpc_url, "fragile", requests[0]), requests[0] * 2.0)
