"""What our Python-based backends share: reading the model config, running every request of one
`execute()` call as one batch, and turning failures into per-request errors.

Dynamic batching only pays if the backend runs the requests Triton hands it together: inputs are
concatenated along the batch axis, the model runs once, outputs are split back by each request's
batch size. If that batched run fails, the requests run one by one so only the bad ones fail.
A backend subclasses `BatchedModel` and implements `load`. Runs inside the Python backend's stub.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritonstack.errors import first_line
from tritonstack.spec import Array, dtype_from_wire, id_bounds_from_parameters, ids_out_of_range

log = logging.getLogger(__name__)

RunFn = Callable[[list[Array]], Sequence[Array]]


@dataclass(frozen=True)
class Instance:
    """One model instance as Triton describes it in `initialize(args)`."""

    model_name: str
    input_names: list[str]
    output_names: list[str]
    output_dtypes: list[np.dtype[Any]]
    parameters: dict[str, str]
    gpu_id: int | None  # set for a KIND_GPU instance
    id_bounds: dict[str, int | tuple[int, ...]]
    # optimization.execution_accelerators.gpu_execution_accelerator: [{"name", "parameters"}]
    gpu_accelerators: list[dict[str, Any]]

    def int_parameter(self, key: str, default: int) -> int:
        return int(self.parameters.get(key, default))


def parse_args(args: dict[str, str]) -> Instance:
    config = json.loads(args["model_config"])
    gpu = args.get("model_instance_kind") == "GPU"
    parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    return Instance(
        model_name=args["model_name"],
        input_names=[t["name"] for t in config["input"]],
        output_names=[t["name"] for t in config["output"]],
        output_dtypes=[np.dtype(dtype_from_wire(t["data_type"])) for t in config["output"]],
        parameters=parameters,
        gpu_id=int(args.get("model_instance_device_id", "0")) if gpu else None,
        id_bounds=id_bounds_from_parameters(parameters),
        gpu_accelerators=config.get("optimization", {})
        .get("execution_accelerators", {})
        .get("gpu_execution_accelerator", []),
    )


def model_path(args: dict[str, str], default_filename: str) -> Path:
    """`<model dir>/<version>/<default_model_filename>`, the file Triton's native backend loads."""
    config = json.loads(args["model_config"])
    filename = config.get("default_model_filename") or default_filename
    return Path(args["model_repository"]) / args["model_version"] / filename


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
    """`TritonPythonModel` behaviour shared by our backends; subclasses implement `load`."""

    default_filename = "model"

    def load(self, path: Path, instance: Instance) -> RunFn:
        """Load the artifact; return a function from input arrays (config order) to output arrays."""
        raise NotImplementedError

    def initialize(self, args: dict[str, str]) -> None:
        # Only the stub can import it, so it is looked up here, not at module import.
        self._pb = importlib.import_module("triton_python_backend_utils")
        self._instance = parse_args(args)
        # Arrays once, not per request: the id check runs on every request's ids.
        self._bounds = {name: np.asarray(high) for name, high in self._instance.id_bounds.items()}
        path = model_path(args, self.default_filename)
        self._run = self.load(path, self._instance)
        log.info("%s: loaded %s", self._instance.model_name, path)

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds: list[list[Array] | Exception] = []
        for request in requests:
            try:
                feeds.append(self._inputs(request))
            except Exception as exc:  # becomes this request's error
                feeds.append(exc)
        good = [f for f in feeds if not isinstance(f, Exception)]
        if len(good) > 1:
            try:
                sizes = [f[0].shape[0] for f in good]
                batch = [np.concatenate(parts) for parts in zip(*good, strict=True)]
                rows = iter(split_rows(self._outputs(batch), sizes))
                return [
                    self._error(f) if isinstance(f, Exception) else self._response(next(rows)) for f in feeds
                ]
            except Exception:  # retried one by one below, so only bad requests fail
                log.debug("%s: batched run failed, running requests one by one", self._instance.model_name)
        return [self._run_one(f) for f in feeds]

    def finalize(self) -> None:
        del self._run

    def _inputs(self, request: Any) -> list[Array]:
        """The request's inputs in config order, ids checked against their tables."""
        tensors = {tensor.name(): tensor for tensor in request.inputs()}
        arrays = []
        for name in self._instance.input_names:
            tensor = tensors.get(name)
            if tensor is None:
                raise ValueError(f"missing input {name!r}")
            array: Array = tensor.as_numpy()
            high = self._bounds.get(name)
            problem = ids_out_of_range(name, array, high) if high is not None else None
            if problem:
                raise ValueError(problem)
            arrays.append(array)
        return arrays

    def _outputs(self, feeds: list[Array]) -> list[Array]:
        outputs = self._run(feeds)
        return [np.asarray(o, dtype=d) for o, d in zip(outputs, self._instance.output_dtypes, strict=True)]

    def _run_one(self, feeds: list[Array] | Exception) -> Any:
        if isinstance(feeds, Exception):
            return self._error(feeds)
        try:
            return self._response(self._outputs(feeds))
        except Exception as exc:  # the instance keeps serving
            return self._error(exc)

    def _response(self, outputs: list[Array]) -> Any:
        names = self._instance.output_names
        tensors = [self._pb.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(names, outputs, strict=True)]
        return self._pb.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: Exception) -> Any:
        message = f"{self._instance.model_name}: {type(exc).__name__}: {first_line(exc)}"
        return self._pb.InferenceResponse(error=self._pb.TritonError(message))
