"""What our Python-based backends share: reading the model config, running every request of one
`execute()` call as one batch, and turning failures into per-request errors.

Dynamic batching only pays if the backend runs the requests Triton hands it together: inputs are
concatenated along the batch axis, the model runs once, outputs are split back by each request's
batch size. As in Triton's native backends, a batched run that fails fails every request of the
batch, and an output whose dtype differs from the config's is an error, never cast.
A backend subclasses `BatchedModel` and implements `load`. Runs inside the Python backend's stub.

Inputs reach the runtime as host arrays; an instance whose `load` also sets `device_run` (GPU
instances: tritonstack/runtimes/device.py) runs a batch whose inputs Triton put in GPU memory (a
client's CUDA shared memory) on torch tensors where they are, through DLPack, and its outputs go
back as DLPack tensors left on the GPU. A batch that arrived in host memory (the gRPC messages,
system shared memory) takes the host path on every instance: measured on an H200, GPU outputs
handed back through the stub cost more than the stub's own copy to the host (benchmarks/README.md).
Requests are joined into one batch only when there are several.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import first_line
from tritonstack.formats import Format
from tritonstack.spec import (
    SUPPORTED_DTYPES,
    ModelSpec,
    config_dtype,
    config_from_json,
    string_parameters,
)

log = logging.getLogger(__name__)

# Host arrays in and out, or (`device_run`) torch tensors in, torch tensors or arrays out.
RunFn = Callable[[list[Any]], Sequence[Any]]


@dataclass(frozen=True)
class Instance:
    """One model instance as Triton describes it in `initialize(args)`: the model's spec and
    config, the format it is served as, and where the instance runs."""

    spec: ModelSpec
    config: pb.ModelConfig
    format: Format
    gpu_id: int | None  # set for a KIND_GPU instance
    path: Path  # the artifact: `<model dir>/<version>/<default_model_filename>`

    @classmethod
    def from_args(cls, args: dict[str, str], fmt: Format) -> Instance:
        """`args` as Triton hands them to `initialize`; a config without a file name names the
        one Triton's native backend for `fmt` loads."""
        config = config_from_json(args["model_config"])
        gpu = args.get("model_instance_kind") == "GPU"
        return cls(
            spec=ModelSpec.from_config(config),
            config=config,
            format=fmt,
            gpu_id=int(args.get("model_instance_device_id", "0")) if gpu else None,
            path=Path(args["model_repository"])
            / args["model_version"]
            / (config.default_model_filename or fmt.filename),
        )

    @property
    def threads(self) -> tuple[int, int]:
        """(intra-op, inter-op) threads as the format's native backend reads them from the
        config; 0 (or absent): the runtime's default."""
        if self.format.thread_parameters is None:
            return 0, 0
        parameters = string_parameters(self.config)
        intra, inter = (int(parameters.get(key, "0")) for key in self.format.thread_parameters)
        return intra, inter

    @property
    def gpu_accelerators(self) -> Any:
        """The config's `optimization.execution_accelerators.gpu_execution_accelerator` (each
        with a `name` and string `parameters`)."""
        return self.config.optimization.execution_accelerators.gpu_execution_accelerator


def check_dtypes(spec: ModelSpec, model_dtypes: dict[str, np.dtype[Any]]) -> None:
    """Refuse to load a model whose tensors' dtypes differ from the config's, as Triton's native
    onnxruntime (outputs) and tensorrt (inputs and outputs) backends do; `model_dtypes` maps the
    artifact's tensor names to their dtypes."""
    for tensor in (*spec.inputs, *spec.outputs):
        want, got = np.dtype(tensor.dtype), model_dtypes.get(tensor.name)
        if got is not None and got != want:
            raise TypeError(
                f"configuration expects datatype {_type_name(want)} for {tensor.name!r}, model provides "
                f"{_type_name(got)}: export the model again, or declare {_type_name(got)} in config.pbtxt"
            )


def split_rows(outputs: Sequence[Any], sizes: list[int]) -> list[list[Any]]:
    """Per-request outputs from batched ones (arrays or torch tensors): request i gets the next
    `sizes[i]` rows, as views."""
    total = sum(sizes)
    for out in outputs:
        if tuple(out.shape[:1]) != (total,):
            raise ValueError(f"model returned {tuple(out.shape[:1])} rows for a batch of {total}")
    starts = [0, *np.cumsum(sizes).tolist()]
    return [[out[start:end] for out in outputs] for start, end in zip(starts, starts[1:], strict=False)]


class BatchedModel:
    """`TritonPythonModel` behaviour shared by our backends; subclasses set the `format` they
    serve and implement `load`."""

    format: Format
    # Set by `load` for a GPU instance: the run function for batches Triton put in GPU memory,
    # taking torch tensors where they are.
    device_run: RunFn | None = None

    def load(self, instance: Instance) -> RunFn:
        """Load `instance.path`; return a function from inputs (config order, host arrays) to outputs."""
        raise NotImplementedError

    def initialize(self, args: dict[str, str]) -> None:
        # Only the stub can import it, so it is looked up here, not at module import.
        self._pb = importlib.import_module("triton_python_backend_utils")
        self._instance = Instance.from_args(args, self.format)
        spec = self._instance.spec
        self._output_dtypes = [np.dtype(t.dtype) for t in spec.outputs]
        self._run = self.load(self._instance)
        self._to_host: Callable[[Any], Any] = lambda tensor: tensor.as_numpy()
        if self._instance.gpu_id is not None or self.device_run is not None:
            from tritonstack.runtimes import device  # torch: only where tensors may be on a GPU

            # A GPU instance may get inputs in GPU memory (FORCE_CPU_ONLY_INPUT_TENSORS=no).
            self._to_host = device.to_host
            self._device = device
        dlpack = " (DLPack for inputs in GPU memory)" if self.device_run else ""
        log.info("%s: loaded %s%s", spec.name, self._instance.path, dlpack)

    def execute(self, requests: list[Any]) -> list[Any]:
        tensors: list[list[Any] | Exception] = []
        for request in requests:
            try:
                tensors.append(self._inputs(request))
            except Exception as exc:  # becomes this request's error
                tensors.append(exc)
        good = [t for t in tensors if not isinstance(t, Exception)]
        if not good:
            return [self._error(t) for t in tensors if isinstance(t, Exception)]
        try:
            device_run = self.device_run if self.device_run and self.takes_device_path(good) else None
            on_device = device_run is not None
            to_feed = self._device.from_triton if on_device else self._to_host
            feeds = [[to_feed(t) for t in request] for request in good]
            join = self._device.join if on_device else np.concatenate
            batch = feeds[0] if len(feeds) == 1 else [join(parts) for parts in zip(*feeds, strict=True)]
            outputs = self._outputs((device_run or self._run)(batch), on_device)
            rows = iter(split_rows(outputs, [f[0].shape[0] for f in feeds]))
        except Exception as exc:  # fails every request of the batch, as Triton's native backends do
            return [self._error(t if isinstance(t, Exception) else exc) for t in tensors]
        return [self._error(t) if isinstance(t, Exception) else self._response(next(rows)) for t in tensors]

    def finalize(self) -> None:
        del self._run
        self.device_run = None

    def takes_device_path(self, requests: list[list[Any]]) -> bool:
        """Whether a batch (each request's Triton tensors) runs on `device_run`: when any input
        arrived in GPU memory."""
        return any(not tensor.is_cpu() for request in requests for tensor in request)

    def _inputs(self, request: Any) -> list[Any]:
        """The request's input tensors (Triton's) in config order."""
        tensors = {tensor.name(): tensor for tensor in request.inputs()}
        ordered = []
        for name in self._instance.spec.input_names:
            tensor = tensors.get(name)
            if tensor is None:
                raise ValueError(f"missing input {name!r}")
            ordered.append(tensor)
        return ordered

    def _outputs(self, results: Sequence[Any], on_device: bool) -> list[Any]:
        """The run's outputs, checked against the config's dtypes; torch tensors kept on the device path."""
        outputs = [o if on_device and not isinstance(o, np.ndarray) else np.asarray(o) for o in results]
        names = self._instance.spec.output_names
        for name, out, want in zip(names, outputs, self._output_dtypes, strict=True):
            got = _dtype(out)
            if got != want:
                raise TypeError(
                    f"configuration expects datatype {_type_name(want)} for output {name!r}, "
                    f"model provides {_type_name(got)}"
                )
        return outputs

    def _response(self, outputs: list[Any]) -> Any:
        names = self._instance.spec.output_names
        tensors = [
            self._pb.Tensor(n, np.ascontiguousarray(o))
            if isinstance(o, np.ndarray)
            else self._pb.Tensor.from_dlpack(n, o)  # rows of a contiguous tensor: contiguous
            for n, o in zip(names, outputs, strict=True)
        ]
        return self._pb.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: Exception) -> Any:
        message = f"{self._instance.spec.name}: {type(exc).__name__}: {first_line(exc)}"
        return self._pb.InferenceResponse(error=self._pb.TritonError(message))


def _dtype(value: Any) -> np.dtype[Any]:
    """An array's dtype, or a torch tensor's as numpy names it (`torch.float32` -> float32)."""
    return value.dtype if isinstance(value, np.ndarray) else np.dtype(str(value.dtype).removeprefix("torch."))


def _type_name(dtype: np.dtype[Any]) -> str:
    """`TYPE_FP32` for float32, as Triton's configs and messages name it; numpy's name otherwise."""
    return config_dtype(dtype.name) if dtype.name in SUPPORTED_DTYPES else dtype.name
