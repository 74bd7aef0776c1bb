"""Tensor specs: validation, random inputs within id ranges, the conversions to and from a
model config (id bounds included), and the production version a config records."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.spec import (
    SUPPORTED_DTYPES,
    ModelSpec,
    TensorSpec,
    config_dtype,
    config_from_json,
    dtype_from_wire,
    ids_out_of_range,
    production_version,
    wire_dtype,
)

SPEC = ModelSpec(
    "m",
    (
        TensorSpec("ids", "int64", (3,), high=(5, 10, 1000)),
        TensorSpec("user", "int32", (1,), high=7),
        TensorSpec("dense", "float32", (4,)),
    ),
    (TensorSpec("p", "float32", (1,)),),
    max_batch_size=8,
)


def test_random_inputs_respect_id_ranges() -> None:
    feeds = SPEC.random_inputs(500, seed=3)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (500, 3)
    assert (feeds["ids"] < np.array([5, 10, 1000])).all() and (feeds["ids"] >= 0).all()
    assert feeds["ids"][:, 2].max() > 10  # each column uses its own range
    assert feeds["user"].max() < 7 and feeds["dense"].dtype == np.float32
    np.testing.assert_array_equal(SPEC.random_inputs(4, seed=1)["ids"], SPEC.random_inputs(4, seed=1)["ids"])


def test_id_bounds_travel_as_config_parameters() -> None:
    config = SPEC.to_config()
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert parameters == {"tritonstack.id_high.ids": "5,10,1000", "tritonstack.id_high.user": "7"}
    config.parameters["other"].string_value = "x"
    assert [t.high for t in ModelSpec.from_config(config).inputs] == [(5, 10, 1000), 7, None]
    # One column's own bound is the one bound for every element: it reads back as such.
    single = ModelSpec("m", (TensorSpec("u", "int32", (1,), high=(7,)),), SPEC.outputs)
    assert ModelSpec.from_config(single.to_config()).inputs[0].high == 7


def test_config_fields_from_spec() -> None:
    config = SPEC.to_config()
    assert (config.name, config.max_batch_size) == ("m", 8)
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("ids", "TYPE_INT64", [3]),
        ("user", "TYPE_INT32", [1]),
        ("dense", "TYPE_FP32", [4]),
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("p", [1])]
    # The model's part only: platform and deployment are the exporter's.
    assert not config.platform and not config.instance_group and not config.HasField("dynamic_batching")


_DIMS = st.lists(st.integers(1, 64) | st.just(-1), min_size=1, max_size=3).map(tuple)
_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def _specs(draw: st.DrawFn) -> ModelSpec:
    names = draw(st.lists(_NAMES, min_size=2, max_size=6, unique=True))
    split = draw(st.integers(1, len(names) - 1))

    def tensor(name: str, is_input: bool) -> TensorSpec:
        dtype = draw(st.sampled_from(SUPPORTED_DTYPES))
        shape = draw(_DIMS)
        high: int | tuple[int, ...] | None = None
        if is_input and np.issubdtype(np.dtype(dtype), np.integer) and draw(st.booleans()):
            high = draw(st.integers(1, 10**9))
            if shape[-1] > 1 and draw(st.booleans()):  # one bound per column
                high = tuple(draw(st.integers(1, 10**9)) for _ in range(shape[-1]))
        return TensorSpec(name, dtype, shape, high)

    return ModelSpec(
        draw(_NAMES),
        tuple(tensor(n, True) for n in names[:split]),
        tuple(tensor(n, False) for n in names[split:]),
        draw(st.integers(1, 4096)),
    )


@given(_specs())
def test_spec_round_trips_through_config_and_its_json(spec: ModelSpec) -> None:
    config = spec.to_config()
    assert ModelSpec.from_config(config) == spec
    # The JSON Triton hands a backend is this protobuf's JSON form (enum names, field names as
    # in the .proto); the backend reads it back to the same spec.
    text = json_format.MessageToJson(config, preserving_proto_field_name=True)
    assert config_from_json(text) == config


def test_scalar_tensors_read_back_as_requests_carry_them() -> None:
    """A scalar per row is dims [1] reshaped to []: Triton's clients send it as [batch, 1] (its
    model metadata says [-1, 1]), so that is the shape the spec of a config gives."""
    spec = ModelSpec("s", (TensorSpec("x", "float32", ()),), (TensorSpec("y", "int64", ()),))
    back = ModelSpec.from_config(spec.to_config())
    assert [t.shape for t in (*back.inputs, *back.outputs)] == [(1,), (1,)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: setattr(c, "max_batch_size", 0), "max_batch_size"),
        (lambda c: setattr(c.input[0], "data_type", pb.TYPE_STRING), "STRING"),
        (lambda c: setattr(c.output[0], "name", "input.1"), "identifier"),
    ],
)
def test_configs_a_spec_cannot_describe(change: Any, message: str) -> None:
    config = SPEC.to_config()
    change(config)
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_config(config)


def test_config_json_ignores_fields_this_protobuf_does_not_know() -> None:
    text = (
        '{"name": "m", "max_batch_size": 4, "a_new_field": {"x": 1}, "input": [{"name": "x", "dims": ["2"]}]}'
    )
    config = config_from_json(text)
    assert (config.name, config.max_batch_size, list(config.input[0].dims)) == ("m", 4, [2])


def test_ids_out_of_range_names_the_first_bad_id() -> None:
    good = np.array([[4, 9, 999]])
    assert ids_out_of_range("ids", good, (5, 10, 1000)) is None
    problem = ids_out_of_range("ids", np.array([[4, 10, 0]]), (5, 10, 1000))
    assert problem is not None and "id 10 at index [0, 1] outside [0, 10)" in problem
    assert ids_out_of_range("u", np.array([[-1]]), 7) is not None


def test_dtype_names() -> None:
    assert wire_dtype("float32") == "FP32" and config_dtype("int64") == "TYPE_INT64"
    assert dtype_from_wire("TYPE_FP16") == dtype_from_wire("FP16") == "float16"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TensorSpec("bad name", "float32", (1,)), "identifier"),
        (lambda: TensorSpec("x", "complex64", (1,)), "dtype"),
        (lambda: TensorSpec("x", "float32", (0,)), "positive"),
        (lambda: TensorSpec("x", "int64", (3,), high=(1, 2)), "bounds"),
        (lambda: ModelSpec("m", SPEC.inputs, (TensorSpec("ids", "float32", (1,)),)), "unique"),
        (lambda: ModelSpec("m", SPEC.inputs, SPEC.outputs, max_batch_size=0), "max_batch_size"),
    ],
)
def test_invalid_specs(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_production_version_parameter() -> None:
    config = SPEC.to_config()
    assert production_version(config) is None  # only id bounds recorded
    config.parameters["tritonstack.production_version"].string_value = "3"
    assert production_version(config) == 3
    config.parameters["tritonstack.production_version"].string_value = "v3"
    assert production_version(config) is None


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_id_check_catches_negative_and_high_ids_of_every_width(dtype: type[np.signedinteger[Any]]) -> None:
    bounds = np.asarray((5, 10, 1000))
    assert ids_out_of_range("ids", np.array([[4, 9, 999]], dtype=dtype), bounds) is None
    negative = ids_out_of_range("ids", np.array([[0, 0, -1]], dtype=dtype), bounds)
    assert "id -1 at index [0, 2]" in str(negative)
    minimum = np.iinfo(dtype).min  # as unsigned, the largest wrap-around
    assert ids_out_of_range("ids", np.array([[minimum, 0, 0]], dtype=dtype), bounds) is not None
    assert "outside [0, 10)" in str(ids_out_of_range("ids", np.array([[0, 10, 0]], dtype=dtype), bounds))
