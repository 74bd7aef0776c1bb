"""TensorRT at run time: load the library, deserialise a plan, run it with named bindings.

Shared by in-process verification (`tritonstack.runtimes.runners`) and the `tensorrt` Python-based backend,
so both execute a plan the same way. Device buffers come from torch's CUDA allocator; one
execution context and one CUDA stream per engine instance.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from tritonstack.errors import ExportError, first_line
from tritonstack.spec import Array

INSTALL_HINT = (
    "TensorRT and an NVIDIA GPU are needed for --formats tensorrt: pip install 'tritonstack[tensorrt]' "
    "(from NVIDIA's index: --extra-index-url https://pypi.nvidia.com) on a machine with CUDA; "
    "the other formats export without it"
)


def require_tensorrt() -> None:
    """Raise an `ExportError` saying what is missing and how to get it, unless TensorRT and a
    CUDA GPU are both there.

    Type stubs alone (`tensorrt-stubs`) make `import tensorrt` succeed as an empty namespace
    package, so the check is for the real builder class.
    """
    module: ModuleType | None = None
    cause: ImportError | None = None
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        if not (isinstance(exc, ModuleNotFoundError) and exc.name == "tensorrt"):
            # Installed, but it does not load: a library or a dependency of its own is missing.
            raise ExportError(f"TensorRT cannot be imported ({first_line(exc)}). {INSTALL_HINT}") from exc
        cause = exc
    if not hasattr(module, "Builder"):
        raise ExportError(f"TensorRT is not installed. {INSTALL_HINT}") from cause
    if not torch.cuda.is_available():
        raise ExportError(f"no CUDA GPU is visible. {INSTALL_HINT}")


class TensorRTEngine:
    """A deserialised plan with its own execution context and CUDA stream."""

    def __init__(self, plan: Path, device_id: int = 0) -> None:
        require_tensorrt()
        import tensorrt as trt

        self._device = torch.device("cuda", device_id)
        logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self._device):
            engine: trt.ICudaEngine | None = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
            if engine is None:
                raise ExportError(f"{plan} is not a TensorRT plan for this GPU and TensorRT version")
            self._context = engine.create_execution_context()
            self._stream = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == is_input]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) != is_input]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._torch_dtypes = {n: _torch_dtype(d) for n, d in self.dtypes.items()}

    def infer(self, feeds: Sequence[Array]) -> list[Array]:
        """Inputs in `input_names` order (host arrays of the engine's dtypes: never cast, as in
        Triton's tensorrt backend); outputs in `output_names` order (host arrays).

        One host-to-device copy per input and one device-to-host copy per output per call.
        """
        for name, array in zip(self.input_names, feeds, strict=True):
            if array.dtype != self.dtypes[name]:
                raise TypeError(f"input {name!r} is {array.dtype}, the engine takes {self.dtypes[name]}")
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            inputs = [
                torch.from_numpy(np.ascontiguousarray(a)).to(self._device, non_blocking=True) for a in feeds
            ]
            for name, tensor in zip(self.input_names, inputs, strict=True):
                self._context.set_input_shape(name, tuple(tensor.shape))
                self._context.set_tensor_address(name, tensor.data_ptr())
            outputs = []
            for name in self.output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=self._torch_dtypes[name], device=self._device)
                self._context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            host = [o.to("cpu", non_blocking=True) for o in outputs]
            self._stream.synchronize()
        return [h.numpy() for h in host]


def _torch_dtype(numpy_type: Any) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=numpy_type)).dtype
