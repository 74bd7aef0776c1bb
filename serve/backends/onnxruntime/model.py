"""Serves `platform: "onnxruntime_onnx"` models through ONNX Runtime (Triton's Python backend)."""

from __future__ import annotations

import stub_site  # noqa: F401  (first: puts the project and virtualenv on sys.path)

# isort: split

from pathlib import Path

import onnxruntime as ort

from serve.batching import BatchedModel, Instance, RunFn
from tritonstack.spec import Array


class TritonPythonModel(BatchedModel):
    default_filename = "model.onnx"

    def load(self, path: Path, instance: Instance) -> RunFn:
        options = ort.SessionOptions()
        # Several instances share few cores: one thread each unless the config says otherwise.
        options.intra_op_num_threads = instance.int_parameter("intra_op_num_threads", 1)
        options.inter_op_num_threads = instance.int_parameter("inter_op_num_threads", 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
        if instance.gpu_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": instance.gpu_id}))
        session = ort.InferenceSession(str(path), options, providers=providers)
        names = instance.input_names
        outputs = instance.output_names

        def run(feeds: list[Array]) -> list[Array]:
            result: list[Array] = session.run(outputs, dict(zip(names, feeds, strict=True)))
            return result

        return run
