"""The embedded Triton on real files and real gRPC over loopback: tiny ONNX and TorchScript
models served by our Python-based backends, dynamic batching, failures and shutdown."""

from __future__ import annotations

import ctypes.util
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from torch import nn
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerFactory
from tritonstack.errors import BinaryNotFound, ModelLoadError, PortInUse, ServeError
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.serve import ExternalServer, TritonServer, find_triton
from tritonstack.serve import binary as serve_binary
from tritonstack.serve import server as serve_server
from tritonstack.spec import Array, ModelSpec, TensorSpec, wire_dtype

VOCAB = 10
SPEC = ModelSpec(
    "scorer",
    (TensorSpec("ids", "int64", (2,), high=VOCAB), TensorSpec("dense", "float32", (4,))),
    (TensorSpec("y", "float32", (3,)),),
    max_batch_size=16,
)
MODELS = ["scorer_onnx", "scorer_torchscript"]


class Scorer(nn.Module):
    """Linear + ReLU over dense features plus summed embeddings: ids out of range fail at run time."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 3)
        self.linear = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(dense) + self.emb(ids).sum(1))


@pytest.fixture(scope="module")
def module() -> Scorer:
    torch.manual_seed(0)
    return Scorer().eval()


@pytest.fixture(scope="module")
def repo(module: Scorer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    example = tuple(torch.from_numpy(a) for a in SPEC.random_inputs(2).values())
    onnx_path, ts_path = root / "model.onnx", root / "model.pt"
    batch = torch.export.Dim("batch", max=SPEC.max_batch_size)
    torch.onnx.export(
        module,
        example,
        onnx_path,
        input_names=SPEC.input_names,
        output_names=SPEC.output_names,
        dynamic_shapes=({0: batch}, {0: batch}),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    torch.jit.trace(module, example).save(str(ts_path))  # type: ignore[no-untyped-call]
    repo = root / "repo"
    for name, fmt, path in [
        ("scorer_onnx", Format.ONNX, onnx_path),
        ("scorer_torchscript", Format.TORCHSCRIPT, ts_path),
    ]:
        write_version(repo, name, build_config(SPEC.renamed(name), fmt), {path.name: path})
    return repo


@pytest.fixture(scope="module")
def server(triton_server_factory: ServerFactory, repo: Path) -> Iterator[TritonServer]:
    server = triton_server_factory(repo)
    yield server
    server.stop()


@pytest.fixture()
def client(server: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield client


def _infer(client: grpcclient.InferenceServerClient, model: str, feeds: dict[str, Array]) -> Array:
    inputs = []
    for name, array in feeds.items():
        tensor = grpcclient.InferInput(name, list(array.shape), wire_dtype(str(array.dtype)))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result: Array = client.infer(model, inputs).as_numpy("y")
    return result


def _reference(module: Scorer, feeds: dict[str, Array]) -> Array:
    with torch.inference_mode():
        out: Array = module(*(torch.from_numpy(a) for a in feeds.values())).numpy()
    return out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("batch", [1, 5, SPEC.max_batch_size])
def test_served_outputs_match_pytorch(client, module, model: str, batch: int) -> None:
    feeds = SPEC.random_inputs(batch, seed=batch)
    np.testing.assert_allclose(_infer(client, model, feeds), _reference(module, feeds), rtol=1e-5, atol=1e-6)


def _request_count(server: TritonServer, model: str) -> tuple[int, int]:
    """(requests answered, model executions) so far."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    success = stats.get("inference_stats", {}).get("success", {})
    return int(success.get("count", 0)), int(stats.get("execution_count", 0))


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_requests_are_batched_and_get_their_own_rows(server, module, model: str) -> None:
    requests = [SPEC.random_inputs(1 + i % 4, seed=100 + i) for i in range(32)]
    clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in requests]
    start = threading.Barrier(len(requests))

    def call(i: int) -> Array:
        start.wait()
        return _infer(clients[i], model, requests[i])

    before = _request_count(server, model)
    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(call, range(len(requests))))
    after = _request_count(server, model)
    for client in clients:
        client.close()
    for feeds, got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, _reference(module, feeds), rtol=1e-5, atol=1e-6)
    answered, executions = after[0] - before[0], after[1] - before[1]
    assert answered == len(requests)
    assert executions < answered, f"dynamic batching formed no batch ({executions} executions)"


@pytest.mark.parametrize("model", MODELS)
def test_bad_requests_fail_and_the_server_keeps_serving(client, server, module, model: str) -> None:
    wrong_shape: dict[str, Array] = {"ids": np.zeros((2, 3), np.int64), "dense": np.zeros((2, 4), np.float32)}
    with pytest.raises(InferenceServerException, match="shape"):
        _infer(client, model, wrong_shape)
    # An id past this plain embedding passes Triton's checks and fails in the runtime (with every
    # request batched with it: tests/test_backend_parity.py); the instance keeps serving.
    bad = SPEC.random_inputs(2, seed=0)
    bad["ids"][0, 0] = VOCAB + 5
    with pytest.raises(InferenceServerException, match=model):
        _infer(client, model, bad)
    requests = [SPEC.random_inputs(2, seed=i) for i in range(12)]

    def call(feeds: dict[str, Array]) -> Array:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            return _infer(c, model, feeds)

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(call, requests))
    for feeds, got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, _reference(module, feeds), rtol=1e-5, atol=1e-6)
    assert client.is_server_ready() and client.is_model_ready(model)


def test_addresses_are_loopback_and_external_server_reaches_it(server) -> None:
    assert server.grpc_url.startswith("127.0.0.1:")
    assert server.http_url.startswith("127.0.0.1:")
    assert server.metrics_url.startswith("http://127.0.0.1:")
    ExternalServer(server.grpc_url).wait_ready(timeout=5)
    assert "Started GRPCInferenceService" in server.log_tail(50)


def test_external_server_that_is_not_there() -> None:
    with pytest.raises(ServeError, match="no ready Triton"):
        ExternalServer(f"127.0.0.1:{serve_server.free_port()}").wait_ready(timeout=0.5)


def test_requested_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse, match=f"grpc port {port}.*--grpc-port"):
            TritonServer(tmp_path, grpc_port=port).start()


@pytest.mark.server
def test_bind_failure_reported_by_triton_is_port_in_use(tmp_path: Path, monkeypatch) -> None:
    """A port taken between our check and Triton's bind: Triton's own failure becomes PortInUse,
    and stop() leaves no process behind."""
    monkeypatch.setattr(serve_server, "port_is_free", lambda host, port: True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = TritonServer(tmp_path, http_port=busy.getsockname()[1], log_path=tmp_path / "log")
        with pytest.raises(PortInUse, match="could not bind"):
            server.start()
    assert server.pid is None


def test_stop_leaves_no_process(triton_server_factory: ServerFactory, tmp_path: Path) -> None:
    server = triton_server_factory(tmp_path)
    pid = server.pid
    assert pid is not None
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # neither Triton nor a stub of its process group is left


@pytest.mark.server
def test_broken_model_is_named_with_triton_reason(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    write_version(
        tmp_path / "repo",
        "broken_onnx",
        build_config(SPEC.renamed("broken_onnx"), Format.ONNX),
        {"model.onnx": bad},
    )
    server = TritonServer(tmp_path / "repo", log_path=tmp_path / "log")
    with pytest.raises(
        ModelLoadError, match=r"could not load 1 model \(log .*\):\n  broken_onnx: .*Protobuf parsing failed"
    ):
        server.start()
    assert server.pid is None


def test_missing_binary_is_binary_not_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(serve_binary, "pytriton_dir", lambda: None)
    with pytest.raises(BinaryNotFound, match=r"not installed; fix: pip install 'tritonstack\[serve\]'"):
        TritonServer(tmp_path).start()
    (tmp_path / "tritonserver" / "bin").mkdir(parents=True)
    with pytest.raises(BinaryNotFound, match="tritonserver binary is missing"):
        find_triton(tmp_path)


def test_missing_libpython_is_binary_not_found(monkeypatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(BinaryNotFound, match=r"shared libpython3\.\d+\.so.*apt-get install libpython3"):
        find_triton()


def test_numpy_2_is_refused_before_it_scrambles_tensors(monkeypatch) -> None:
    monkeypatch.setattr(np, "__version__", "2.5.2")
    with pytest.raises(
        BinaryNotFound, match=r"numpy 1\.x, and numpy 2\.5\.2 is installed; fix: pip install 'numpy<2'"
    ):
        find_triton()
