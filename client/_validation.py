"""Request checks against a `ModelSpec`, before anything goes on the wire.

Triton would refuse most of these too, but with a message about protobuf fields and after a
round trip; here the caller gets one line naming the tensor, the problem and the fix. Pure
functions, so the sync client and a later async one share them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from tritonstack.errors import InvalidInput
from tritonstack.spec import SUPPORTED_DTYPES, Array, ModelSpec, TensorSpec, ids_out_of_range, wire_dtype

# Compared by identity-fast `==` on the hot path; `ndarray.dtype.name` builds a string per call.
_DTYPES = {name: np.dtype(name) for name in SUPPORTED_DTYPES}


def describe(tensor: TensorSpec) -> str:
    """`dense_features (FP32 [-1, 13])`: the batch dimension shown as -1, as Triton shows it."""
    return f"{tensor.name} ({wire_dtype(tensor.dtype)} {_dims(tensor)})"


@dataclass(frozen=True)
class _Expected:
    """What one input must be, in the form the fast check compares against."""

    name: str
    dtype: np.dtype[Any]
    dims: tuple[int, ...]
    bound: Array | None  # id bounds as an array, built once


@functools.lru_cache(maxsize=256)
def _expected(spec: ModelSpec) -> tuple[_Expected, ...]:
    return tuple(
        _Expected(
            t.name,
            _DTYPES[t.dtype],
            t.shape,
            np.asarray(t.high, dtype=np.int64) if t.high is not None and t.is_integer else None,
        )
        for t in spec.inputs
    )


def _passes(spec: ModelSpec, inputs: Mapping[str, Any]) -> bool:
    """Whether `inputs` are valid, in as few operations as possible: it runs on every request.
    False only means "look closer"; `check_request` then names the problem."""
    expected = _expected(spec)
    if len(inputs) != len(expected):
        return False
    batch = -1
    for want in expected:
        value = inputs.get(want.name)
        if not isinstance(value, np.ndarray) or value.dtype != want.dtype:
            return False
        shape = value.shape
        if len(shape) != len(want.dims) + 1 or batch not in (-1, shape[0]):
            return False
        if any(d != -1 and got != d for got, d in zip(shape[1:], want.dims, strict=True)):
            return False
        batch = shape[0]
        if want.bound is not None and ids_out_of_range(want.name, value, want.bound) is not None:
            return False
    return 0 < batch <= spec.max_batch_size


def check_request(spec: ModelSpec, inputs: Mapping[str, Any]) -> None:
    """Raise `InvalidInput` naming the first problem with `inputs` for `spec`.

    Order: names, then each input's type, dtype and shape, then batch sizes across inputs,
    then id ranges (the only check that reads the data).
    """
    if _passes(spec, inputs):
        return
    expected = spec.input_names
    for name in inputs:
        if name not in expected:
            _fail(spec, f"unknown input {name!r} — expected inputs: {_listing(spec.inputs)}")
    for tensor in spec.inputs:
        if tensor.name not in inputs:
            _fail(spec, f"missing input {tensor.name!r} — expected inputs: {_listing(spec.inputs)}")
    batches = {t.name: _check_tensor(spec, t, inputs[t.name]) for t in spec.inputs}
    sizes = set(batches.values())
    if len(sizes) > 1:
        found = ", ".join(f"{name}={size}" for name, size in batches.items())
        _fail(spec, f"inputs have different batch sizes ({found}) — every input needs the same batch size")
    batch = sizes.pop()
    if batch > spec.max_batch_size:
        _fail(
            spec,
            f"batch size {batch} exceeds the model's max_batch_size {spec.max_batch_size} — "
            f"split the request into chunks of at most {spec.max_batch_size}",
        )
    for tensor in spec.inputs:
        if tensor.high is not None and tensor.is_integer:
            problem = ids_out_of_range(tensor.name, inputs[tensor.name], tensor.high)
            if problem:
                _fail(spec, problem)


def check_outputs(spec: ModelSpec, names: Iterable[str]) -> None:
    """Raise `InvalidInput` when a requested output is not one of the model's."""
    known = spec.output_names
    for name in names:
        if name not in known:
            _fail(spec, f"unknown output {name!r} — model outputs: {_listing(spec.outputs)}")


def _check_tensor(spec: ModelSpec, tensor: TensorSpec, value: Any) -> int:
    """Type, dtype and shape of one input; returns its batch size."""
    name = tensor.name
    if not isinstance(value, np.ndarray):
        _fail(spec, f"input {name!r} is a {type(value).__name__}, not a numpy array — pass np.asarray(...)")
    if value.dtype != _DTYPES[tensor.dtype]:
        cast = "np.bool_" if tensor.dtype == "bool" else f"np.{tensor.dtype}"
        _fail(
            spec,
            f"input {name!r} has dtype {value.dtype.name}, model expects {tensor.dtype} — "
            f"cast with .astype({cast})",
        )
    shape = value.shape
    if len(shape) != len(tensor.shape) + 1:
        _bad_shape(
            spec,
            tensor,
            shape,
            f"add the batch dimension, e.g. {name}[None] for one example"
            if len(shape) == len(tensor.shape)
            else "reshape it; the first dimension is the batch",
        )
    for axis, (got, want) in enumerate(zip(shape[1:], tensor.shape, strict=True), start=1):
        if want != -1 and got != want:
            _bad_shape(spec, tensor, shape, f"dimension {axis} must be {want}, not {got}")
    if shape[0] == 0:
        _fail(spec, f"input {name!r} has batch size 0 — send at least one example")
    return int(shape[0])


def _bad_shape(spec: ModelSpec, tensor: TensorSpec, shape: tuple[int, ...], fix: str) -> NoReturn:
    _fail(spec, f"input {tensor.name!r} has shape {list(shape)}, model expects {_dims(tensor)} — {fix}")


def _dims(tensor: TensorSpec) -> str:
    return "[" + ", ".join(map(str, (-1, *tensor.shape))) + "]"


def _listing(tensors: tuple[TensorSpec, ...]) -> str:
    return ", ".join(map(describe, tensors))


def _fail(spec: ModelSpec, problem: str) -> NoReturn:
    raise InvalidInput(f"{spec.name}: {problem}", model=spec.name)
