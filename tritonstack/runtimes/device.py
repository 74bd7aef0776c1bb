"""Models run on tensors where they already are, for our backends' GPU instances when Triton
hands them a batch in GPU memory (a client's CUDA shared memory).

Triton's Python backend hands a GPU instance its inputs in host or GPU memory and takes outputs
from either, through DLPack (`pb_utils.Tensor.to_dlpack` / `Tensor.from_dlpack`). Inputs become
torch tensors without a copy (`torch.from_dlpack`), outputs are left on the GPU, so a response in
CUDA shared memory never leaves the device, where the host path copied it to the host, then into
the stub's shared memory, then back. ONNX Runtime takes the same tensors by address through IO
binding, and writes each output of fixed shape into a torch tensor allocated for it. A batch in
host memory takes the host path instead (serve/batching.py says why).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tritonstack.runtimes.runners import output_tensors
from tritonstack.spec import Array, ModelSpec

DeviceRunFn = Callable[[list[torch.Tensor]], list[Any]]  # torch tensors in; torch tensors or arrays out

_NUMPY = {
    torch.bool: np.bool_,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}
_TORCH = {np.dtype(n): t for t, n in _NUMPY.items()}


def enabled() -> bool:
    """Whether GPU instances take this path for batches in GPU memory: `TRITONSTACK_DEVICE_IO=0`
    in the server's environment keeps them on host arrays, to compare the two on a GPU. (CPU
    instances stay on host arrays: through the real stub on the 2-core CPU the DLPack path
    measured slower, nothing to save.)"""
    return os.environ.get("TRITONSTACK_DEVICE_IO", "1") != "0"


def to_host(tensor: Any) -> Array:
    """A Triton input as a host array, copied from the GPU if it is there."""
    if tensor.is_cpu():
        array: Array = tensor.as_numpy()
        return array
    return from_triton(tensor).cpu().numpy()


def from_triton(tensor: Any) -> torch.Tensor:
    """A Triton input (`pb_utils.Tensor`, in host or GPU memory) as a torch tensor, no copy."""
    return torch.utils.dlpack.from_dlpack(tensor)


def join(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Requests' tensors as one batch, where they are (several devices: on the first's)."""
    device = parts[0].device
    return torch.cat([part.to(device) for part in parts])


def torchscript_on_device(module: torch.nn.Module, device: torch.device) -> DeviceRunFn:
    """`module` on `device`; inputs moved there if they are elsewhere, outputs left there."""

    def run(feeds: list[torch.Tensor]) -> list[Any]:
        with torch.inference_mode():
            result = module(*(f.to(device) for f in feeds))
        return [t.contiguous() for t in output_tensors(result)]

    return run


def onnxruntime_on_device(session: Any, spec: ModelSpec, device: torch.device) -> DeviceRunFn:
    """`session` (an ONNX Runtime InferenceSession) through IO binding: inputs bound where they
    are, each output of known shape written into a tensor on `device`; one whose shape is not
    known before the run (a variable dimension) comes back as a host array."""
    ort_device = "cuda" if device.type == "cuda" else "cpu"
    device_id = device.index or 0
    ranks = {o.name: len(o.shape) for o in session.get_outputs()}
    # A shape to allocate: fixed dims, and the graph's rank (a scalar per row is [1] in the config).
    outputs_spec = [
        (
            t.name,
            tuple(t.shape),
            np.dtype(t.dtype),
            -1 not in t.shape and ranks.get(t.name) == len(t.shape) + 1,
        )
        for t in spec.outputs
    ]

    def run(feeds: list[torch.Tensor]) -> list[Any]:
        binding = session.io_binding()
        inputs = [f.contiguous() for f in feeds]  # kept alive until the run is over
        for tensor, value in zip(spec.inputs, inputs, strict=True):
            where = "cuda" if value.is_cuda else "cpu"
            shape = tuple(value.shape)
            binding.bind_input(
                tensor.name, where, value.device.index or 0, _NUMPY[value.dtype], shape, value.data_ptr()
            )
        batch = inputs[0].shape[0]
        outputs: list[torch.Tensor | None] = []
        for name, shape, dtype, known in outputs_spec:
            if not known:
                binding.bind_output(name, ort_device, device_id)
                outputs.append(None)
                continue
            out = torch.empty((batch, *shape), dtype=_TORCH[dtype], device=device)
            binding.bind_output(name, ort_device, device_id, dtype.type, tuple(out.shape), out.data_ptr())
            outputs.append(out)
        if device.type == "cuda":  # torch's kernels that made the inputs end before ORT reads them
            torch.cuda.synchronize(device)
        session.run_with_iobinding(binding)
        variable: list[Array] = binding.copy_outputs_to_cpu() if None in outputs else []
        return [out if out is not None else variable[i] for i, out in enumerate(outputs)]

    return run
