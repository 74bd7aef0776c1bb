"""Serves `platform: "onnxruntime_onnx"` models through ONNX Runtime (Triton's Python backend)."""

from __future__ import annotations

import stub_site  # noqa: F401  (first: puts the project and virtualenv on sys.path)

# isort: split

import numpy as np
import onnxruntime as ort

from tritonstack.formats import Format
from tritonstack.serve.batching import BatchedModel, Instance, RunFn, check_dtypes
from tritonstack.spec import Array


class TritonPythonModel(BatchedModel):
    format = Format.ONNX

    def load(self, instance: Instance) -> RunFn:
        options = ort.SessionOptions()
        # As the native backend reads them; 0: ORT's default.
        options.intra_op_num_threads, options.inter_op_num_threads = instance.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = instance.path
        session = ort.InferenceSession(str(path), options, providers=_providers(instance))
        # As the native backend's ValidateOutputs: an output dtype other than the config's fails the load.
        check_dtypes(
            instance.spec, {o.name: _ORT_DTYPES.get(o.type, np.dtype(object)) for o in session.get_outputs()}
        )
        if instance.gpu_id is not None and "CUDAExecutionProvider" in session.get_providers():
            # Inputs in GPU memory stay there: DLPack and IO binding (tritonstack/runtimes/device.py).
            import torch

            from tritonstack.runtimes.device import enabled, onnxruntime_on_device

            if enabled():
                gpu = torch.device("cuda", instance.gpu_id)
                self.device_run = onnxruntime_on_device(session, instance.spec, gpu)
        names = instance.spec.input_names
        outputs = instance.spec.output_names

        def run(feeds: list[Array]) -> list[Array]:
            result: list[Array] = session.run(outputs, dict(zip(names, feeds, strict=True)))
            return result

        return run


Provider = str | tuple[str, dict[str, str | int]]

# ONNX Runtime's names of tensor types (`NodeArg.type`) for the dtypes a Triton config can declare.
_ORT_DTYPES = {
    f"tensor({ort_name})": np.dtype(name)
    for ort_name, name in [
        ("bool", "bool"), ("uint8", "uint8"), ("int8", "int8"), ("int16", "int16"), ("int32", "int32"),
        ("int64", "int64"), ("float16", "float16"), ("float", "float32"), ("double", "float64"),
    ]
}  # fmt: skip


def _providers(instance: Instance) -> list[Provider]:
    """CPU for CPU instances; on a GPU instance the CUDA provider, preceded by TensorRT when the
    config asks for it (Triton's `gpu_execution_accelerator`) and this onnxruntime has it. The
    engine cache goes where the config says, as the native backend passes it (no path: ONNX
    Runtime's default, the server's working directory), never into the version directory."""
    providers: list[Provider] = ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if instance.gpu_id is None or "CUDAExecutionProvider" not in available:
        return providers
    providers.insert(0, ("CUDAExecutionProvider", {"device_id": instance.gpu_id}))
    for accelerator in instance.gpu_accelerators:
        if accelerator.name == "tensorrt" and "TensorrtExecutionProvider" in available:
            params = accelerator.parameters
            trt: dict[str, str | int] = {
                "device_id": instance.gpu_id,
                "trt_fp16_enable": str(params.get("precision_mode") == "FP16"),
                "trt_max_workspace_size": params.get("max_workspace_size_bytes", str(1 << 30)),
                "trt_engine_cache_enable": params.get("trt_engine_cache_enable", "0"),
            }
            if "trt_engine_cache_path" in params:
                trt["trt_engine_cache_path"] = params["trt_engine_cache_path"]
            providers.insert(0, ("TensorrtExecutionProvider", trt))
    return providers
