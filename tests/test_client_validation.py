"""The client's pure parts, no server: argument and request checks, and error mapping."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonstack.client import AsyncTritonClient, RetryPolicy, TritonClient, check_request
from tritonstack.client._errors import to_client_error, translate_errors
from tritonstack.client._validation import check_outputs, describe
from tritonstack.errors import (
    ClientError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidArgument,
    InvalidInput,
    ModelNotFound,
    ServerUnavailable,
    UsageError,
)
from tritonstack.serve import free_port
from tritonstack.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    "dlrm_onnx",
    inputs=(
        TensorSpec("dense_features", "float32", (13,)),
        TensorSpec("sparse_features", "int64", (3,), high=(10, 20, 30)),
    ),
    outputs=(TensorSpec("probability", "float32", (1,)),),
    max_batch_size=8,
)
URL = "127.0.0.1:8001"

Feeds = dict[str, Any]


def feeds(batch: int = 2) -> Feeds:
    return SPEC.random_inputs(batch)


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"url": []}, "at least one Triton url"),
    ({"url": [URL, "localhost"]}, "'localhost' must be HOST:PORT"),
    ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ({"timeout": float("nan")}, "got nan"),
    ({"root_certificates": "ca.pem"}, "need ssl=True"),
    ({"ssl": True, "private_key": "client.key"}, "needs both private_key and certificate_chain"),
    ({"ssl": True, "root_certificates": "no-such-ca.pem"}, "no-such-ca.pem is not a file"),
    ({"use_shared_memory": "gpu"}, "use_shared_memory='gpu'"),
    ({"cuda_device": 1}, "needs use_shared_memory='cuda'"),
]


@pytest.mark.parametrize("client", [TritonClient, AsyncTritonClient])
@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGUMENTS)
def test_bad_arguments_raise_one_type(
    client: type[TritonClient], kwargs: dict[str, Any], message: str
) -> None:
    """Every bad argument is an `InvalidArgument`: a `UsageError` (one line in the CLI) and a
    `ValueError` (what callers catching Python's own type expect), raised before connecting."""
    with pytest.raises(InvalidArgument, match=message) as err:
        client(**kwargs)
    assert isinstance(err.value, UsageError) and isinstance(err.value, ValueError)


def test_bad_call_arguments_raise_before_sending() -> None:
    with pytest.raises(InvalidArgument, match="attempts >= 1"):
        RetryPolicy(attempts=0)
    with TritonClient(f"127.0.0.1:{free_port()}") as triton:
        for timeout in (0.0, -1.0):
            with pytest.raises(InvalidArgument, match=f"got {timeout}"):
                triton.infer(SPEC.name, feeds(), timeout=timeout)
            with pytest.raises(InvalidArgument, match=f"got {timeout}"):
                triton.list_models(timeout=timeout)


def test_valid_requests_pass() -> None:
    check_request(SPEC, feeds(1))
    check_request(SPEC, feeds(SPEC.max_batch_size))
    ids = np.array([[0, 0, 0], [9, 19, 29]], np.int64)
    check_request(SPEC, {**feeds(), "sparse_features": ids})


def test_variable_dims_accept_any_size() -> None:
    spec = ModelSpec("seq", (TensorSpec("tokens", "int32", (-1, 4)),), (TensorSpec("y", "float32", (1,)),))
    check_request(spec, {"tokens": np.zeros((2, 7, 4), np.int32)})


def _rename(f: Feeds) -> Feeds:
    return {"dense": f["dense_features"], "sparse_features": f["sparse_features"]}


CASES: list[tuple[str, Callable[[Feeds], Feeds], str]] = [
    (
        "unknown-name",
        _rename,
        "dlrm_onnx: unknown input 'dense' — expected inputs: dense_features (FP32 [-1, 13]), "
        "sparse_features (INT64 [-1, 3])",
    ),
    (
        "missing",
        lambda f: {"dense_features": f["dense_features"]},
        "dlrm_onnx: missing input 'sparse_features' — expected inputs: dense_features (FP32 [-1, 13]), "
        "sparse_features (INT64 [-1, 3])",
    ),
    (
        "not-an-array",
        lambda f: {**f, "dense_features": f["dense_features"].tolist()},
        "dlrm_onnx: input 'dense_features' is a list, not a numpy array — pass np.asarray(...)",
    ),
    (
        "dtype",
        lambda f: {**f, "dense_features": f["dense_features"].astype(np.float64)},
        "dlrm_onnx: input 'dense_features' has dtype float64, model expects float32 — "
        "cast with .astype(np.float32)",
    ),
    (
        "int-dtype",
        lambda f: {**f, "sparse_features": f["sparse_features"].astype(np.int32)},
        "input 'sparse_features' has dtype int32, model expects int64 — cast with .astype(np.int64)",
    ),
    (
        "no-batch-dim",
        lambda f: {**f, "dense_features": f["dense_features"][0]},
        "input 'dense_features' has shape [13], model expects [-1, 13] — add the batch dimension, "
        "e.g. dense_features[None] for one example",
    ),
    (
        "extra-dim",
        lambda f: {**f, "dense_features": f["dense_features"][:, :, None]},
        "input 'dense_features' has shape [2, 13, 1], model expects [-1, 13] — reshape it; "
        "the first dimension is the batch",
    ),
    (
        "wrong-dim",
        lambda f: {**f, "dense_features": f["dense_features"][:, :5]},
        "input 'dense_features' has shape [2, 5], model expects [-1, 13] — dimension 1 must be 13, not 5",
    ),
    (
        "batch-0",
        lambda f: {k: v[:0] for k, v in f.items()},
        "input 'dense_features' has batch size 0 — send at least one example",
    ),
    (
        "batch-mismatch",
        lambda f: {**f, "sparse_features": f["sparse_features"][:1]},
        "inputs have different batch sizes (dense_features=2, sparse_features=1) — "
        "every input needs the same batch size",
    ),
    (
        "batch-above-max",
        lambda f: feeds(9),
        "batch size 9 exceeds the model's max_batch_size 8 — split the request into chunks of at most 8",
    ),
    (
        "id-above-its-column-bound",
        lambda f: {**f, "sparse_features": np.array([[0, 0, 0], [9, 20, 0]], np.int64)},
        "input 'sparse_features' has id 20 at index [1, 1] outside [0, 20) — ids must satisfy 0 <= id < 20",
    ),
    (
        "negative-id",
        lambda f: {**f, "sparse_features": np.array([[0, 0, -1], [0, 0, 0]], np.int64)},
        "input 'sparse_features' has id -1 at index [0, 2] outside [0, 30)",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_one_precise_line(mutate: Callable[[Feeds], Feeds], message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_request(SPEC, mutate(feeds()))
    text = str(err.value)
    assert message in text
    assert text.startswith("dlrm_onnx: ") and "\n" not in text
    assert err.value.model == "dlrm_onnx"


def test_a_single_bound_applies_to_every_id() -> None:
    spec = ModelSpec("ids", (TensorSpec("ids", "int32", (2,), high=5),), (TensorSpec("y", "float32", (1,)),))
    check_request(spec, {"ids": np.array([[0, 4]], np.int32)})
    with pytest.raises(InvalidInput, match=r"id 5 at index \[0, 0\] outside \[0, 5\)"):
        check_request(spec, {"ids": np.array([[5, 0]], np.int32)})


def test_ids_are_unchecked_without_a_bound() -> None:
    spec = ModelSpec("ids", (TensorSpec("ids", "int64", (2,)),), (TensorSpec("y", "float32", (1,)),))
    check_request(spec, {"ids": np.array([[-3, 10**12]], np.int64)})


def test_bool_cast_hint_names_a_numpy_type() -> None:
    spec = ModelSpec("mask", (TensorSpec("m", "bool", (2,)),), (TensorSpec("y", "float32", (1,)),))
    with pytest.raises(InvalidInput, match=r"cast with \.astype\(np\.bool_\)"):
        check_request(spec, {"m": np.zeros((1, 2), np.int8)})


def test_unknown_output() -> None:
    check_outputs(SPEC, ["probability"])
    with pytest.raises(
        InvalidInput, match=r"unknown output 'prob' — model outputs: probability \(FP32 \[-1, 1\]\)"
    ):
        check_outputs(SPEC, ["prob"])


def test_describe_shows_the_batch_dimension() -> None:
    assert describe(SPEC.inputs[1]) == "sparse_features (INT64 [-1, 3])"


ERRORS = [
    (
        "StatusCode.UNAVAILABLE",
        "failed to connect to all addresses",
        False,
        ServerUnavailable,
        ["127.0.0.1:8001", "failed to connect", "tritonstack serve", "--url"],
    ),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", True, DeadlineExceeded, ["Deadline Exceeded"]),
    (
        "StatusCode.NOT_FOUND",
        "Request for unknown model: 'm' is not found",
        True,
        ModelNotFound,
        ["'m'", "is not found"],
    ),
    # Other Triton releases answer an unknown model with other codes: the message decides.
    ("StatusCode.INVALID_ARGUMENT", "Request for unknown model: 'm' is not found", True, ModelNotFound, []),
    ("StatusCode.UNAVAILABLE", "Request for unknown model: 'm' has no version 3", True, ModelNotFound, []),
    (
        "StatusCode.INVALID_ARGUMENT",
        "[request id: <id_unknown>] unexpected shape for input 'x'",
        True,
        InvalidInput,
        ["Triton rejected the request", "unexpected shape for input 'x'"],
    ),
    ("StatusCode.INTERNAL", "onnx runtime error 6", True, InferenceFailed, ["inference failed", "error 6"]),
    ("StatusCode.INTERNAL", "onnx runtime error 6", False, ClientError, ["error 6"]),
    (None, "got unexpected datatype", True, InferenceFailed, ["got unexpected datatype"]),
    # Not an unknown model, not an outage: a region the server forgot, or an admin API closed.
    ("StatusCode.NOT_FOUND", "Unable to find shared memory region: 'r'", True, ClientError, ["region: 'r'"]),
    (
        "StatusCode.UNAVAILABLE",
        "This protocol is restricted, expecting header 'triton-grpc-protocol-k'",
        False,
        ClientError,
        ["refused an admin call", "beyond loopback", "--open-admin-apis"],
    ),
    # gRPC's own size limit, on either side: too big a batch, not an outage.
    (
        "StatusCode.RESOURCE_EXHAUSTED",
        "Sent message larger than max (1073741857 vs. 67108864)",
        True,
        InvalidInput,
        ["size limit", "max_message_bytes="],
    ),
]


@pytest.mark.parametrize(("status", "message", "infer", "kind", "fragments"), ERRORS)
def test_error_mapping(
    status: str | None, message: str, infer: bool, kind: type[ClientError], fragments: list[str]
) -> None:
    error = to_client_error(InferenceServerException(message, status=status), url=URL, model="m", infer=infer)
    assert type(error) is kind
    assert error.model == "m"
    for fragment in fragments:
        assert fragment in str(error)


def test_mapped_messages_are_one_line() -> None:
    exc = InferenceServerException("first\n  second", status="StatusCode.INTERNAL")
    assert "first second" in str(to_client_error(exc, url=URL, infer=True))


def test_translate_errors_chains_the_original() -> None:
    original = InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")
    with pytest.raises(DeadlineExceeded) as err, translate_errors(URL, "m", infer=True):
        raise original
    assert err.value.__cause__ is original


def test_translate_errors_leaves_other_errors_alone() -> None:
    with pytest.raises(KeyError), translate_errors(URL):
        raise KeyError("x")


def test_import_does_not_load_torch() -> None:
    code = "import client, sys; assert 'torch' not in sys.modules, 'client imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
