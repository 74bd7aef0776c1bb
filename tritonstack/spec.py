"""One description of a model's tensors, shared by every stage.

Exporters name graph inputs and outputs from a `ModelSpec`, the repository writer turns it
into `config.pbtxt` (`ModelSpec.to_config`), the client reads it back from a served model's
config (`ModelSpec.from_config`), our backends from the config JSON Triton hands them
(`config_from_json`), and the benchmarks generate inputs from it. Shapes never include the batch
dimension (Triton's convention when `max_batch_size > 0`); `-1` marks a variable dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import RepositoryError

Array = npt.NDArray[Any]

# A model's config in a Triton model repository: `<repository>/<model>/config.pbtxt`.
CONFIG_NAME = "config.pbtxt"

# The largest batch Triton may form when nothing else is said (CLI, API and exporters alike).
DEFAULT_MAX_BATCH_SIZE = 256

# numpy dtype name -> Triton wire datatype (as in model metadata and ModelInferRequest).
_WIRE_DTYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
SUPPORTED_DTYPES = tuple(_WIRE_DTYPES)


def wire_dtype(dtype: str) -> str:
    """Triton's datatype name for a numpy dtype name (`float32` -> `FP32`)."""
    return _WIRE_DTYPES[dtype]


def config_dtype(dtype: str) -> str:
    """The `config.pbtxt` enum name for a numpy dtype name (`float32` -> `TYPE_FP32`)."""
    return "TYPE_" + _WIRE_DTYPES[dtype]


def dtype_from_wire(wire: str) -> str:
    """The numpy dtype name for a Triton datatype name (`FP32` or `TYPE_FP32` -> `float32`)."""
    wire = wire.removeprefix("TYPE_")
    for name, w in _WIRE_DTYPES.items():
        if w == wire:
            return name
    raise ValueError(f"unsupported Triton datatype {wire!r}")


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor without its batch dimension.

    `high` bounds integer ids: valid values are `0 <= v < high`, either one bound for every
    element or one per position of the last dimension (e.g. one per embedding table).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    high: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"tensor name {self.name!r} must be a Python identifier")
        if self.dtype not in _WIRE_DTYPES:
            raise ValueError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {SUPPORTED_DTYPES}")
        if any(d == 0 or d < -1 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: dims must be positive or -1, got {self.shape}")
        if isinstance(self.high, tuple) and (not self.shape or len(self.high) != self.shape[-1]):
            raise ValueError(f"tensor {self.name!r}: {len(self.high)} bounds do not match shape {self.shape}")

    @property
    def is_integer(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.integer)

    def random(self, batch_size: int, rng: np.random.Generator) -> Array:
        """A random batch of valid values: ids within `high`, floats from a standard normal."""
        shape = (batch_size, *(1 if d == -1 else d for d in self.shape))
        if self.dtype == "bool":
            return rng.integers(0, 2, size=shape).astype(bool)
        if self.is_integer:
            high = np.asarray(self.high if self.high is not None else 100, dtype=np.int64)
            return (rng.random(shape) * high).astype(self.dtype)
        return rng.standard_normal(shape).astype(self.dtype)


@dataclass(frozen=True)
class ModelSpec:
    """A servable model: its name, tensors and the largest batch Triton may form."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE

    def __post_init__(self) -> None:
        if not self.inputs or not self.outputs:
            raise ValueError(f"model {self.name!r} needs at least one input and one output")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name!r}: tensor names must be unique, got {names}")
        if self.max_batch_size < 1:
            raise ValueError(f"model {self.name!r}: max_batch_size must be >= 1")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def random_inputs(self, batch_size: int, seed: int = 0) -> dict[str, Array]:
        """Valid random inputs for every input tensor, reproducible from `seed`."""
        rng = np.random.default_rng(seed)
        return {t.name: t.random(batch_size, rng) for t in self.inputs}

    def renamed(self, name: str) -> ModelSpec:
        return ModelSpec(name, self.inputs, self.outputs, self.max_batch_size)

    def to_config(self) -> pb.ModelConfig:
        """The model's part of its `config.pbtxt`: name, largest batch, tensors and id bounds.
        Platform and deployment (instances, batching, warm-up) are the exporter's to add."""
        config = pb.ModelConfig(name=self.name, max_batch_size=self.max_batch_size)
        for tensor in self.inputs:
            _fill_tensor(config.input.add(), tensor)
        for tensor in self.outputs:
            _fill_tensor(config.output.add(), tensor)
        for key, value in _id_bounds_parameters(self).items():
            config.parameters[key].string_value = value
        return config

    @classmethod
    def from_config(cls, config: pb.ModelConfig) -> ModelSpec:
        """The spec of a model config, as Triton's clients see the model: shapes are the config's
        `dims`, so a scalar per row (dims [1] reshaped to []) reads back as (1,), the shape a
        request must carry and Triton's model metadata reports. `ValueError` when the config is
        not one a `ModelSpec` can describe (no batching, unsupported types or names)."""
        bounds = _id_bounds_from_parameters(string_parameters(config))
        return cls(
            config.name,
            tuple(_tensor_spec(t, bounds.get(t.name)) for t in config.input),
            tuple(_tensor_spec(t) for t in config.output),
            config.max_batch_size,
        )


def _fill_tensor(msg: pb.ModelInput | pb.ModelOutput, tensor: TensorSpec) -> None:
    msg.name = tensor.name
    msg.data_type = pb.DataType.Value(config_dtype(tensor.dtype))
    if tensor.shape:
        msg.dims.extend(tensor.shape)
    else:
        # Triton wants at least one dim: a scalar per batch row travels as [1], reshaped to [].
        msg.dims.append(1)
        msg.reshape.SetInParent()


def _tensor_spec(
    msg: pb.ModelInput | pb.ModelOutput, high: int | tuple[int, ...] | None = None
) -> TensorSpec:
    return TensorSpec(msg.name, dtype_from_wire(pb.DataType.Name(msg.data_type)), tuple(msg.dims), high)


def read_config(path: Path | str) -> pb.ModelConfig:
    """A `config.pbtxt` (protobuf text), checked against Triton's schema."""
    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path} is not a valid Triton model config: {exc}") from exc


def config_from_json(text: str) -> pb.ModelConfig:
    """The `ModelConfig` of the JSON Triton hands a backend (`args["model_config"]` in
    `initialize`); fields this protobuf does not know are skipped."""
    return json_format.Parse(text, pb.ModelConfig(), ignore_unknown_fields=True)


def string_parameters(config: pb.ModelConfig) -> dict[str, str]:
    """A config's `parameters` as plain strings."""
    return {key: value.string_value for key, value in config.parameters.items()}


def as_feeds(spec: ModelSpec, arrays: Mapping[str, Array]) -> list[Array]:
    """Arrays in the order of the spec's inputs (the order of `forward`'s arguments)."""
    return [arrays[name] for name in spec.input_names]


# Id bounds travel in config.pbtxt's string `parameters` (Triton's native backends ignore unknown
# keys), so a client can refuse an out-of-range id before sending it. The graphs themselves do not
# need them: the reference models embed an id outside its table as zeros (recsys/layers.py).
_ID_HIGH_PREFIX = "tritonstack.id_high."


def _id_bounds_parameters(spec: ModelSpec) -> dict[str, str]:
    """Config parameters recording each integer input's `high`, e.g. `"1000,20,7"`."""
    return {
        _ID_HIGH_PREFIX + t.name: ",".join(map(str, t.high if isinstance(t.high, tuple) else (t.high,)))
        for t in spec.inputs
        if t.high is not None
    }


def _id_bounds_from_parameters(parameters: Mapping[str, str]) -> dict[str, int | tuple[int, ...]]:
    """The inverse of `_id_bounds_parameters`: input name -> one bound, or one per column."""
    bounds: dict[str, int | tuple[int, ...]] = {}
    for key, value in parameters.items():
        if key.startswith(_ID_HIGH_PREFIX):
            highs = tuple(int(v) for v in value.split(","))
            bounds[key.removeprefix(_ID_HIGH_PREFIX)] = highs[0] if len(highs) == 1 else highs
    return bounds


def ids_out_of_range(name: str, values: Array, high: int | tuple[int, ...] | Array) -> str | None:
    """A one-line description of the first id outside `[0, high)`, or None when all are valid."""
    bound = np.asarray(high, dtype=np.int64)
    if values.dtype.kind == "i":
        # One comparison on the hot path: viewed as unsigned, a negative id wraps past every bound.
        unsigned = values.view(f"u{values.dtype.itemsize}")
        if not (unsigned >= bound.astype(np.uint64)).any():
            return None
    bad = (values < 0) | (values >= bound)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    limit = int(bound) if bound.ndim == 0 else int(bound[index[-1]])
    return (
        f"input {name!r} has id {int(values[index])} at index {list(index)} outside [0, {limit}) — "
        f"ids must satisfy 0 <= id < {limit}"
    )


# `tritonstack models promote` records the production version here too: Triton itself sends a request
# without a version to the highest loaded version, whatever its status, so our clients read this to
# send unversioned requests to production instead (export/registry.py).
PRODUCTION_VERSION_PARAMETER = "tritonstack.production_version"


def production_version(config: pb.ModelConfig) -> int | None:
    """The production version a config records, or None when none is."""
    value = string_parameters(config).get(PRODUCTION_VERSION_PARAMETER, "")
    return int(value) if value.isdigit() else None
