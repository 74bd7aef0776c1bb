"""Tensors handed to the runtime where they are (tritonstack/runtimes/device.py), as our backends'
GPU instances run: in process on the CPU (and on CUDA where there is a GPU), and through the real
Triton stub, whose DLPack plumbing (`torch.from_dlpack` of its input tensors, `Tensor.from_dlpack`
of outputs, requests joined and split as torch tensors) is the same on a CPU instance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tests.conftest import ServerFactory
from tritonstack.client import ClientError, InferRequest, TritonClient
from tritonstack.client._shm import shm_pool
from tritonstack.export.deployment import DeploymentOptions, Device
from tritonstack.export.formats import ExportOptions
from tritonstack.export.onnx import export as export_onnx
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.runtimes import device
from tritonstack.serve.batching import BatchedModel, split_rows
from tritonstack.spec import Array, ModelSpec, TensorSpec

SPEC = ModelSpec(
    "mixed",
    (TensorSpec("ids", "int64", (3,), high=10), TensorSpec("x", "float32", (4,))),
    (TensorSpec("score", "float32", (2,)), TensorSpec("count", "int64", (1,))),
    max_batch_size=64,
)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lin(self.emb(ids).sum(1) + x), ids.sum(1, keepdim=True)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Mixed]:
    root = tmp_path_factory.mktemp("device_io")
    torch.manual_seed(0)
    model = Mixed().eval()
    scripted = root / "model.pt"
    torch.jit.script(model).save(str(scripted))  # type: ignore[no-untyped-call]
    onnx = export_onnx(model, SPEC, root, ExportOptions()).path
    return scripted, onnx, model


def _expected(model: Mixed, inputs: dict[str, Array]) -> list[Array]:
    with torch.inference_mode():
        return [t.numpy() for t in model(*(torch.from_numpy(inputs[n]) for n in SPEC.input_names))]


def test_onnxruntime_binds_tensors_by_address(artifacts: tuple[Path, Path, Mixed]) -> None:
    _, onnx, model = artifacts
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    run = device.onnxruntime_on_device(session, SPEC, torch.device("cpu"))
    inputs = SPEC.random_inputs(5, seed=1)
    x_strided = torch.from_numpy(np.asfortranarray(inputs["x"]))  # not contiguous: bound as a copy
    outputs = run([torch.from_numpy(inputs["ids"]), x_strided])
    assert all(isinstance(o, torch.Tensor) for o in outputs)
    for got, want in zip(outputs, _expected(model, inputs), strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_torchscript_leaves_outputs_where_it_ran(artifacts: tuple[Path, Path, Mixed]) -> None:
    scripted, _, model = artifacts
    run = device.torchscript_on_device(torch.jit.load(str(scripted)).eval(), torch.device("cpu"))  # type: ignore[no-untyped-call]
    inputs = SPEC.random_inputs(5, seed=2)
    outputs = run([torch.from_numpy(inputs[n]) for n in SPEC.input_names])
    for got, want in zip(outputs, _expected(model, inputs), strict=True):
        assert got.is_contiguous()
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_joined_and_split_as_torch_tensors() -> None:
    parts = [torch.arange(6).reshape(3, 2), torch.arange(6, 10).reshape(2, 2)]
    joined = device.join(parts)
    (first, second) = split_rows([joined], [3, 2])
    assert torch.equal(first[0], parts[0]) and torch.equal(second[0], parts[1])
    assert second[0].is_contiguous()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_torchscript_on_the_gpu_takes_host_or_device_inputs(artifacts: tuple[Path, Path, Mixed]) -> None:
    scripted, _, model = artifacts
    cuda = torch.device("cuda", 0)
    run = device.torchscript_on_device(torch.jit.load(str(scripted), map_location=cuda).eval(), cuda)  # type: ignore[no-untyped-call]
    inputs = SPEC.random_inputs(7, seed=3)
    host = [torch.from_numpy(inputs[n]) for n in SPEC.input_names]
    for feeds in (host, [t.to(cuda) for t in host], [host[0], host[1].to(cuda)]):
        outputs = run(feeds)
        assert all(o.is_cuda for o in outputs)
        for got, want in zip(outputs, _expected(model, inputs), strict=True):
            np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-4, atol=1e-5)


class _Tensor:
    """What `takes_device_path` reads of a Triton tensor: where it is. (Triton hands a tensor in
    GPU memory only to a GPU instance, which this machine cannot run.)"""

    def __init__(self, on_gpu: bool) -> None:
        self.on_gpu = on_gpu

    def is_cpu(self) -> bool:
        return not self.on_gpu


def test_only_a_batch_with_inputs_in_gpu_memory_takes_the_device_path() -> None:
    model = BatchedModel()
    assert not model.takes_device_path([[_Tensor(False), _Tensor(False)], [_Tensor(False), _Tensor(False)]])
    assert model.takes_device_path([[_Tensor(True), _Tensor(True)]])
    assert model.takes_device_path([[_Tensor(False), _Tensor(False)], [_Tensor(False), _Tensor(True)]])


# Python-backend models that serve the TorchScript artifact through BatchedModel on a CPU instance.
# The first sends every batch down the DLPack path, as a GPU instance does with inputs in GPU memory:
# the stub's tensors, the join of several requests, the split and the responses. The second routes
# as our backends do, with a device path that fails: batches arriving in host memory never take it.
_MODEL_PY = """import stub_site  # noqa: F401

import torch

from tritonstack.formats import Format
from tritonstack.runtimes import device
from tritonstack.serve.batching import BatchedModel


class TritonPythonModel(BatchedModel):
    format = Format.TORCHSCRIPT

    def load(self, instance):
        module = torch.jit.load(str(instance.path.with_name("model.pt"))).eval()
        self.device_run = {device_run}

        def run(feeds):
            with torch.inference_mode():
                return [t.numpy() for t in module(*(torch.from_numpy(f) for f in feeds))]

        return run
{routing}"""
_DLPACK = _MODEL_PY.format(
    device_run='device.torchscript_on_device(module, torch.device("cpu"))',
    routing="\n    def takes_device_path(self, requests):\n        return True\n",
)
_ROUTED = _MODEL_PY.format(
    device_run="self.fail",
    routing="""
    def fail(self, feeds):
        raise RuntimeError("a batch in host memory took the device path")
""",
)


@pytest.fixture(scope="module")
def url(
    triton_server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: tuple[Path, Path, Mixed],
) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("dlpack_repo")
    for name, source in (("dlpack", _DLPACK), ("routed", _ROUTED)):
        config = build_config(replace(SPEC, name=name), Format.TORCHSCRIPT)
        config.ClearField("platform")
        config.backend = "python"
        config.ClearField("default_model_filename")  # the Python backend runs model.py, which loads model.pt
        config.dynamic_batching.max_queue_delay_microseconds = 200_000  # requests sent together: one batch
        model_py = tmp_path_factory.mktemp(name) / "model.py"
        model_py.write_text(source)
        write_version(repo, name, config, {"model.pt": artifacts[0], "model.py": model_py})
    server = triton_server_factory(repo)
    yield server.grpc_url
    server.stop()


@pytest.mark.server
@pytest.mark.parametrize("name", ["dlpack", "routed"])
def test_requests_through_the_stub(url: str, artifacts: tuple[Path, Path, Mixed], name: str) -> None:
    model = artifacts[2]
    requests = [SPEC.random_inputs(batch, seed=batch) for batch in (1, 3, 8, 2, 5, 4)]
    with TritonClient(url, timeout=30) as triton:
        results = triton.infer_many([InferRequest(name, r) for r in requests], concurrency=6)
        stats = triton.statistics(name)["model_stats"][0]
    for inputs, result in zip(requests, results, strict=True):
        assert isinstance(result, dict)
        for name, want in zip(SPEC.output_names, _expected(model, inputs), strict=True):
            np.testing.assert_allclose(result[name], want, rtol=1e-6, atol=1e-6)
    assert int(stats["execution_count"]) < len(requests)  # some requests ran joined in one batch


def test_the_device_path_can_be_switched_off_for_a_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device.enabled()
    monkeypatch.setenv("TRITONSTACK_DEVICE_IO", "0")
    assert not device.enabled()


def _gpu_serving_missing() -> str | None:
    """Why a GPU instance cannot be served and fed from CUDA shared memory here, or None."""
    if not torch.cuda.is_available():
        return "needs an NVIDIA GPU"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "needs onnxruntime-gpu"
    try:
        shm_pool("cuda")
    except ClientError as exc:
        return str(exc)
    return None


GPU_SERVING_MISSING = _gpu_serving_missing()


@pytest.fixture(scope="module")
def gpu_url(
    triton_server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: tuple[Path, Path, Mixed],
) -> Iterator[str]:
    """Both artifacts on KIND_GPU instances of our real backends."""
    scripted, onnx, _ = artifacts
    repo = tmp_path_factory.mktemp("gpu_repo")
    gpu = DeploymentOptions(device=Device.GPU)
    for fmt, artifact in ((Format.ONNX, onnx), (Format.TORCHSCRIPT, scripted)):
        name = f"mixed_{fmt.value}"
        config = build_config(replace(SPEC, name=name), fmt, gpu)
        write_version(repo, name, config, {fmt.filename: artifact})
    server = triton_server_factory(repo)
    yield server.grpc_url
    server.stop()


@pytest.mark.gpu
@pytest.mark.server
@pytest.mark.skipif(GPU_SERVING_MISSING is not None, reason=f"{GPU_SERVING_MISSING}")
@pytest.mark.parametrize("fmt", [Format.ONNX, Format.TORCHSCRIPT])
def test_a_gpu_instance_answers_alike_from_host_and_gpu_memory(
    gpu_url: str, artifacts: tuple[Path, Path, Mixed], fmt: Format
) -> None:
    """Requests in the gRPC messages take the host path, requests in CUDA shared memory the DLPack
    path (serve/batching.py): both answer as PyTorch does, alone and batched together."""
    model, name = artifacts[2], f"mixed_{fmt.value}"
    requests = [SPEC.random_inputs(batch, seed=batch) for batch in (1, 3, 8, 2, 5, 4)]
    with (
        TritonClient(gpu_url, timeout=60) as host,
        TritonClient(gpu_url, timeout=60, use_shared_memory="cuda") as gpu,
    ):
        for client in (host, gpu):
            results = client.infer_many([InferRequest(name, r) for r in requests], concurrency=6)
            for inputs, result in zip(requests, results, strict=True):
                assert isinstance(result, dict)
                for output, want in zip(SPEC.output_names, _expected(model, inputs), strict=True):
                    np.testing.assert_allclose(result[output], want, rtol=1e-4, atol=1e-5)
