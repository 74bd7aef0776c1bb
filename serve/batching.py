"""What our Python-based backends share: reading the model config, running every request of one
`execute()` call as one batch, and turning failures into per-request errors.

Dynamic batching only pays if the backend runs the requests Triton hands it together: inputs are
concatenated along the batch axis, the model runs once, outputs are split back by each request's
batch size. As in Triton's native backends, a batched run that fails fails every request of the
batch, and an output whose dtype differs from the config's is an error, never cast.
A backend subclasses `BatchedModel` and implements `load`. Runs inside the Python backend's stub.
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
    Array,
    ModelSpec,
    config_dtype,
    config_from_json,
    string_parameters,
)

log = logging.getLogger(__name__)

RunFn = Callable[[list[Array]], Sequence[Array]]


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


def split_rows(outputs: Sequence[Array], sizes: list[int]) -> list[list[Array]]:
    """Per-request outputs from batched ones: request i gets the next `sizes[i]` rows."""
    total = sum(sizes)
    for out in outputs:
        if out.shape[:1] != (total,):
            raise ValueError(f"model returned {out.shape[:1]} rows for a batch of {total}")
    bounds = np.cumsum(sizes)[:-1]
    per_output = [np.split(out, bounds) for out in outputs]
    return [list(parts) for parts in zip(*per_output, strict=True)]


class BatchedModel:
    """`TritonPythonModel` behaviour shared by our backends; subclasses set the `format` they
    serve and implement `load`."""

    format: Format

    def load(self, instance: Instance) -> RunFn:
        """Load `instance.path`; return a function from input arrays (config order) to output arrays."""
        raise NotImplementedError

    def initialize(self, args: dict[str, str]) -> None:
        # Only the stub can import it, so it is looked up here, not at module import.
        self._pb = importlib.import_module("triton_python_backend_utils")
        self._instance = Instance.from_args(args, self.format)
        spec = self._instance.spec
        self._output_dtypes = [np.dtype(t.dtype) for t in spec.outputs]
        self._run = self.load(self._instance)
        log.info("%s: loaded %s", spec.name, self._instance.path)

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds: list[list[Array] | Exception] = []
        for request in requests:
            try:
                feeds.append(self._inputs(request))
            except Exception as exc:  # becomes this request's error
                feeds.append(exc)
        good = [f for f in feeds if not isinstance(f, Exception)]
        if not good:
            return [self._error(f) for f in feeds if isinstance(f, Exception)]
        try:
            batch = (
                good[0] if len(good) == 1 else [np.concatenate(parts) for parts in zip(*good, strict=True)]
            )
            rows = iter(split_rows(self._outputs(batch), [f[0].shape[0] for f in good]))
        except Exception as exc:  # fails every request of the batch, as Triton's native backends do
            return [self._error(f if isinstance(f, Exception) else exc) for f in feeds]
        return [self._error(f) if isinstance(f, Exception) else self._response(next(rows)) for f in feeds]

    def finalize(self) -> None:
        del self._run

    def _inputs(self, request: Any) -> list[Array]:
        """The request's inputs in config order."""
        tensors = {tensor.name(): tensor for tensor in request.inputs()}
        arrays = []
        for name in self._instance.spec.input_names:
            tensor = tensors.get(name)
            if tensor is None:
                raise ValueError(f"missing input {name!r}")
            arrays.append(tensor.as_numpy())
        return arrays

    def _outputs(self, feeds: list[Array]) -> list[Array]:
        outputs = [np.asarray(o) for o in self._run(feeds)]
        names = self._instance.spec.output_names
        for name, out, want in zip(names, outputs, self._output_dtypes, strict=True):
            if out.dtype != want:
                raise TypeError(
                    f"configuration expects datatype {_type_name(want)} for output {name!r}, "
                    f"model provides {_type_name(out.dtype)}"
                )
        return outputs

    def _response(self, outputs: list[Array]) -> Any:
        names = self._instance.spec.output_names
        tensors = [self._pb.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(names, outputs, strict=True)]
        return self._pb.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: Exception) -> Any:
        message = f"{self._instance.spec.name}: {type(exc).__name__}: {first_line(exc)}"
        return self._pb.InferenceResponse(error=self._pb.TritonError(message))


def _type_name(dtype: np.dtype[Any]) -> str:
    """`TYPE_FP32` for float32, as Triton's configs and messages name it; numpy's name otherwise."""
    return config_dtype(dtype.name) if dtype.name in SUPPORTED_DTYPES else dtype.name
