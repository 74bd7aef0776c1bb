"""The model description through the real Triton: a config written by `build_config`, the JSON
Triton hands our backends (captured from a live stub) and the config its gRPC API returns to the
client all come back to the same `ModelSpec`, a scalar per row included; and what a backend reads
of a GPU instance from that JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format

from tests.conftest import ServerFactory
from tritonstack.client import InvalidInput, TritonClient
from tritonstack.export.deployment import DeploymentOptions, Device, OrtAccelerator
from tritonstack.export.repository import build_config, write_config
from tritonstack.formats import Format
from tritonstack.serve import TritonServer
from tritonstack.serve.batching import Instance
from tritonstack.spec import ModelSpec, TensorSpec, config_from_json, wire_dtype

SPEC = ModelSpec(
    "probe",
    (
        TensorSpec("x", "float32", (4,)),
        TensorSpec("ids", "int64", (3,), high=(5, 10, 1000)),
        TensorSpec("s", "float32", ()),
    ),
    (TensorSpec("y", "float32", (4,)), TensorSpec("t", "float32", ())),
    max_batch_size=8,
)
# As Triton's clients see it: a scalar per row travels as [1].
WIRE_SPEC = ModelSpec(
    SPEC.name,
    (*SPEC.inputs[:2], TensorSpec("s", "float32", (1,))),
    (SPEC.outputs[0], TensorSpec("t", "float32", (1,))),
    SPEC.max_batch_size,
)
ARGS_FILE = "captured_args.json"

# Our BatchedModel under Triton's plain Python backend: it keeps the `args` Triton hands it.
MODEL_PY = f"""import stub_site  # noqa: F401  (first, as in our backends)

import json
from pathlib import Path

from tritonstack.formats import Format
from tritonstack.serve.batching import BatchedModel


class TritonPythonModel(BatchedModel):
    format = Format.ONNX

    def initialize(self, args):
        (Path(args["model_repository"]) / "{ARGS_FILE}").write_text(json.dumps(args))
        super().initialize(args)

    def load(self, instance):
        return lambda feeds: [feeds[0] * 2, feeds[2] + 1]
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("repo") / SPEC.name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(MODEL_PY)
    config = build_config(SPEC, Format.ONNX)  # default deployment: warm-up, threads, batching
    config.ClearField("platform")
    config.backend = "python"
    config.default_model_filename = "model.py"
    write_config(model_dir / "config.pbtxt", config)
    return model_dir


@pytest.fixture(scope="module")
def server(triton_server_factory: ServerFactory, model_dir: Path) -> Iterator[TritonServer]:
    server = triton_server_factory(model_dir.parent)  # loads only once the warm-up passed
    yield server
    server.stop()


@pytest.mark.server
def test_backend_reads_the_spec_from_the_json_triton_hands_it(server: TritonServer, model_dir: Path) -> None:
    args = json.loads((model_dir / ARGS_FILE).read_text())
    instance = Instance.from_args(args, Format.ONNX)
    assert instance.spec == WIRE_SPEC
    assert instance.path == model_dir / "1" / "model.py"
    assert instance.threads == (1, 1) and instance.gpu_id is None
    written = build_config(SPEC, Format.ONNX)
    served = config_from_json(args["model_config"])
    assert dict(served.parameters) == dict(written.parameters)
    assert (list(served.input), list(served.output)) == (list(written.input), list(written.output))


@pytest.mark.server
def test_client_spec_from_the_config_matches_the_model_metadata(server: TritonServer) -> None:
    with TritonClient(server.grpc_url) as client:
        spec = client.model_spec(SPEC.name)
        metadata = client.model_metadata(SPEC.name)
    assert spec == WIRE_SPEC
    described = [(t.name, t.datatype, list(t.shape)) for t in (*metadata.inputs, *metadata.outputs)]
    assert described == [(t.name, wire_dtype(t.dtype), [-1, *t.shape]) for t in (*spec.inputs, *spec.outputs)]


@pytest.mark.server
def test_served_model_runs_and_its_client_checks_ids_from_its_config(server: TritonServer) -> None:
    feeds = WIRE_SPEC.random_inputs(3, seed=1)
    with TritonClient(server.grpc_url) as client:
        outputs = client.infer(SPEC.name, feeds)
        np.testing.assert_allclose(outputs["y"], feeds["x"] * 2)
        np.testing.assert_allclose(outputs["t"], feeds["s"] + 1)
        with pytest.raises(InvalidInput, match="outside"):
            client.infer(SPEC.name, {**feeds, "ids": np.full((3, 3), 7, np.int64)})
    # Past the client's check the backend runs the model, as Triton's native backends do: ids are
    # the graph's business (tests/test_oov.py), and this one ignores them.
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, value in {**feeds, "ids": np.array([[0, 10, 0]] * 3, np.int64)}.items():
        tensor = grpcclient.InferInput(name, list(value.shape), wire_dtype(str(value.dtype)))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    np.testing.assert_allclose(raw.infer(SPEC.name, inputs).as_numpy("y"), feeds["x"] * 2)
    raw.close()


@pytest.mark.parametrize(
    # TorchScript: no inter-op count, which aborts Triton 24.10 (tritonstack/formats.py).
    ("fmt", "threads"),
    [(Format.ONNX, (2, 1)), (Format.TORCHSCRIPT, (2, 0)), (Format.TENSORRT, (0, 0))],
)
def test_a_gpu_instance_as_the_backend_reads_it(fmt: Format, threads: tuple[int, int]) -> None:
    """Triton's `initialize` arguments for a GPU instance (the JSON is the config's protobuf JSON,
    as captured above): the device, the threads under the format's own keys, the accelerator."""
    deployment = DeploymentOptions(
        device=Device.GPU, ort_accelerator=OrtAccelerator.TENSORRT, trt_fp16=True, intra_op_threads=2
    )
    config = build_config(SPEC, fmt, deployment)
    config.ClearField("default_model_filename")
    args = {
        "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
        "model_instance_kind": "GPU",
        "model_instance_device_id": "1",
        "model_repository": "/models/probe",
        "model_version": "3",
        "model_name": SPEC.name,
    }
    instance = Instance.from_args(args, fmt)
    assert (instance.gpu_id, instance.threads) == (1, threads)
    assert instance.path == Path("/models/probe/3") / fmt.filename
    accelerators = [(a.name, dict(a.parameters)) for a in instance.gpu_accelerators]
    if fmt is Format.ONNX:
        assert accelerators == [
            (
                "tensorrt",
                {
                    "precision_mode": "FP16",
                    "max_workspace_size_bytes": str(deployment.trt_workspace_bytes),
                    "trt_engine_cache_enable": "1",
                    "trt_engine_cache_path": deployment.trt_engine_cache,
                },
            )
        ]
    else:
        assert accelerators == []
