"""Tensor specs: validation, random inputs within id ranges, id bounds and the production version
through config parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tritonstack.spec import (
    ModelSpec,
    TensorSpec,
    config_dtype,
    dtype_from_wire,
    id_bounds_from_parameters,
    id_bounds_parameters,
    ids_out_of_range,
    production_version_from_parameters,
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


def test_id_bounds_round_trip_through_parameters() -> None:
    params = id_bounds_parameters(SPEC)
    assert params == {"tritonstack.id_high.ids": "5,10,1000", "tritonstack.id_high.user": "7"}
    assert id_bounds_from_parameters({**params, "other": "x"}) == {"ids": (5, 10, 1000), "user": 7}


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
    assert production_version_from_parameters({"tritonstack.production_version": "3"}) == 3
    assert production_version_from_parameters({"tritonstack.id_high.ids": "5"}) is None
    assert production_version_from_parameters({"tritonstack.production_version": "v3"}) is None


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_id_check_catches_negative_and_high_ids_of_every_width(dtype: type[np.signedinteger[Any]]) -> None:
    bounds = np.asarray((5, 10, 1000))
    assert ids_out_of_range("ids", np.array([[4, 9, 999]], dtype=dtype), bounds) is None
    negative = ids_out_of_range("ids", np.array([[0, 0, -1]], dtype=dtype), bounds)
    assert "id -1 at index [0, 2]" in str(negative)
    minimum = np.iinfo(dtype).min  # as unsigned, the largest wrap-around
    assert ids_out_of_range("ids", np.array([[minimum, 0, 0]], dtype=dtype), bounds) is not None
    assert "outside [0, 10)" in str(ids_out_of_range("ids", np.array([[0, 10, 0]], dtype=dtype), bounds))
