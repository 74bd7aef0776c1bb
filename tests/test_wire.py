"""The inference wire format (client/_wire.py): requests framed from the arrays' memory and
responses sliced without protobuf's copies read exactly as protobuf writes and reads them."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from tritonstack.client._wire import decode_response, encode_request, infer_request
from tritonstack.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    "mixed",
    (
        TensorSpec("ids", "int64", (3,), high=10),
        TensorSpec("mask", "bool", (2,)),
        TensorSpec("x", "float16", (4, 2)),
        TensorSpec("big", "float32", (40_000,)),  # 160 KB a row: lengths take three varint bytes
    ),
    (TensorSpec("y", "float32", (1,)),),
)


@pytest.mark.parametrize("batch", [1, 7])
def test_an_encoded_request_parses_as_protobufs_own(batch: int) -> None:
    inputs = SPEC.random_inputs(batch, seed=batch)
    inputs["x"] = np.asfortranarray(inputs["x"])  # not C-contiguous: sent in row-major order
    header = infer_request("mixed", "3", SPEC, inputs, ["y"])
    expected = service_pb2.ModelInferRequest()
    expected.CopyFrom(header)
    expected.raw_input_contents.extend(np.ascontiguousarray(inputs[t.name]).tobytes() for t in SPEC.inputs)

    sent = encode_request(header, [inputs[t.name] for t in SPEC.inputs])

    assert service_pb2.ModelInferRequest.FromString(sent) == expected


def test_a_request_without_contents_is_its_header() -> None:
    header = infer_request("mixed", "", SPEC, SPEC.random_inputs(2), None)
    assert encode_request(header) == header.SerializeToString()


def test_a_decoded_response_is_protobufs_message_and_views_of_the_bytes() -> None:
    outputs = [np.arange(12, dtype=np.float32).reshape(4, 3), np.array([[True], [False]])]
    response = service_pb2.ModelInferResponse(model_name="m", model_version="2", id="req-9")
    response.parameters["sequence_end"].bool_param = True
    for name, value in zip(("a", "b"), outputs, strict=True):
        response.outputs.add(name=name, datatype="FP32", shape=value.shape)
        response.raw_output_contents.append(value.tobytes())
    received = response.SerializeToString()

    decoded = decode_response(received)

    without_contents = service_pb2.ModelInferResponse()
    without_contents.CopyFrom(response)
    del without_contents.raw_output_contents[:]
    assert decoded.message == without_contents
    assert [bytes(c) for c in decoded.contents] == [v.tobytes() for v in outputs]
    assert all(c.obj is received for c in decoded.contents)  # slices of the received bytes, no copy
