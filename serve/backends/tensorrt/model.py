"""Serves `platform: "tensorrt_plan"` models (TensorRT plans) through TensorRT's Python API
(Triton's Python backend). One engine, execution context and CUDA stream per instance, on the
instance's GPU; tensors are bound by name with the request batch's shape. As Triton's tensorrt
backend, it loads only on KIND_GPU instances and only an engine whose dtypes are the config's."""

from __future__ import annotations

import stub_site  # noqa: F401  (first: puts the project and virtualenv on sys.path)

# isort: split

from tritonstack.formats import Format
from tritonstack.runtimes.tensorrt import TensorRTEngine
from tritonstack.serve.batching import BatchedModel, Instance, RunFn, check_dtypes
from tritonstack.spec import Array


class TritonPythonModel(BatchedModel):
    format = Format.TENSORRT

    def load(self, instance: Instance) -> RunFn:
        if instance.gpu_id is None:
            raise ValueError("TensorRT backend supports only GPU device: set instance_group kind KIND_GPU")
        engine = TensorRTEngine(instance.path, instance.gpu_id)
        check_dtypes(instance.spec, engine.dtypes)
        order = [engine.input_names.index(n) for n in instance.spec.input_names]
        outputs = [engine.output_names.index(n) for n in instance.spec.output_names]

        def run(feeds: list[Array]) -> list[Array]:
            by_engine_order = [feeds[order.index(i)] for i in range(len(order))]
            result = engine.infer(by_engine_order)
            return [result[i] for i in outputs]

        return run
