"""Inference requests and responses as Triton's gRPC protobufs, built and read directly.

tritonclient's `InferInput` / `InferResult` wrappers rebuild and re-parse every request in Python.
Interleaved with bare protobuf calls on the 2-core CPU machine, they cost about 0.2 ms of a 1 ms
batch-1 request (benchmarks/OVERHEAD.md), so the inference path builds the `ModelInferRequest`
itself and sends it on tritonclient's own channel. Every other call (health, metadata,
shared-memory registration, ...) still goes through tritonclient.

Tensor bytes never pass through protobuf's Python objects: a request is its header (the message
without `raw_input_contents`) serialized by protobuf, followed by each tensor framed as that field
and copied once, from the array, into the bytes gRPC sends; a response's `raw_output_contents`
are read as views of the bytes gRPC received, and only the rest is parsed by protobuf. Through
protobuf, each tensor would be copied into the message, then into its serialization, and each
output into the parsed message, then into a `bytes` object on access: fresh buffers of the
tensor's size that cost more than the copies themselves at ranking-size batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import grpc
import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tritonstack.errors import ClientError, InferenceFailed
from tritonstack.spec import Array, ModelSpec, dtype_from_wire, wire_dtype

InferTensor = service_pb2.ModelInferRequest.InferInputTensor
RequestedOutput = service_pb2.ModelInferRequest.InferRequestedOutputTensor

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_LENGTH_DELIMITED = 2  # protobuf wire type of bytes and message fields
_INPUT_CONTENTS = service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
_OUTPUT_CONTENTS = service_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number
_INPUT_CONTENTS_KEY = bytes([_INPUT_CONTENTS << 3 | _LENGTH_DELIMITED])


class WireStub(NamedTuple):
    """ModelInfer on tritonclient's channel (sync or asyncio) taking and returning the messages'
    bytes, so inference shares the connection, TLS and load balancing of every other call."""

    ModelInfer: Any  # noqa: N815  (named as on gRPC's generated stub)


def wire_stub(client: Any) -> WireStub:
    channel = getattr(client, "_channel", None)
    if channel is None:
        raise ClientError(f"{type(client).__name__} has no _channel: install tritonclient>=2.51")
    return WireStub(channel.unary_unary(MODEL_INFER))


def encode_request(message: service_pb2.ModelInferRequest, contents: Sequence[Array] = ()) -> bytes:
    """`message` serialized, with `contents` appended as its `raw_input_contents` (protobuf
    merges repeated fields in any order): each tensor is copied once, from its array."""
    parts: list[Any] = [message.SerializeToString()]
    for value in contents:
        data = np.ascontiguousarray(value)
        parts += [_INPUT_CONTENTS_KEY, _varint(data.nbytes), data]
    return b"".join(parts)


class Response(NamedTuple):
    """A `ModelInferResponse` as received: `message` without its tensors, and `contents`, the
    `raw_output_contents` in order, as views of the received bytes."""

    message: service_pb2.ModelInferResponse
    contents: list[memoryview]


def decode_response(data: bytes) -> Response:
    """Split the received bytes: `raw_output_contents` fields are sliced out (no copy), the
    other top-level fields are parsed by protobuf."""
    view = memoryview(data)
    header: list[memoryview] = []
    contents: list[memoryview] = []
    at = 0
    while at < len(view):
        start = at
        key, at = _read_varint(view, at)
        field, wire_type = key >> 3, key & 7
        if wire_type == _LENGTH_DELIMITED:
            size, at = _read_varint(view, at)
            if field == _OUTPUT_CONTENTS:
                contents.append(view[at : at + size])
            else:
                header.append(view[start : at + size])
            at += size
        else:  # Triton's response has varints (0) only besides them; fixed64 (1) and fixed32 (5) skip
            at = _read_varint(view, at)[1] if wire_type == 0 else at + {1: 8, 5: 4}[wire_type]
            header.append(view[start:at])
    return Response(service_pb2.ModelInferResponse.FromString(b"".join(header)), contents)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(view: memoryview, at: int) -> tuple[int, int]:
    """The varint at `at` and the offset after it."""
    value = shift = 0
    while True:
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def infer_request(
    model: str, version: str, spec: ModelSpec, inputs: Mapping[str, Array], outputs: Sequence[str] | None
) -> service_pb2.ModelInferRequest:
    """The request without its tensors' bytes (`encode_request` appends them, or shared memory
    carries them). The inputs are already checked."""
    return service_pb2.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=[
            InferTensor(name=t.name, datatype=wire_dtype(t.dtype), shape=inputs[t.name].shape)
            for t in spec.inputs
        ],
        outputs=[] if outputs is None else [RequestedOutput(name=n) for n in outputs],
    )


def place_in_region(tensor: Any, region: str, byte_size: int, offset: int) -> None:
    """Point an input (`InferInputTensor`) or requested output (`InferRequestedOutputTensor`) at a
    registered shared-memory region, as Triton's protocol extension names it."""
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = byte_size
    tensor.parameters["shared_memory_offset"].int64_param = offset


def read_outputs(
    received: Response,
    wanted: Sequence[str],
    region_contents: Array | None = None,
    offsets: Mapping[str, int] | None = None,
) -> dict[str, Array]:
    """{name: array} for the wanted outputs: read-only views of the received bytes, or copies
    from the request's shared-memory region (which is reused once the request is done)."""
    response = received.message
    offsets = offsets or {}
    found: dict[str, Array] = {}
    for index, output in enumerate(response.outputs):
        if output.name not in wanted:
            continue
        dtype = np.dtype(dtype_from_wire(output.datatype))
        shape = list(output.shape)
        offset = offsets.get(output.name)
        if offset is not None and region_contents is not None:
            end = offset + math.prod(shape) * dtype.itemsize
            found[output.name] = region_contents[offset:end].view(dtype).reshape(shape).copy()
        else:
            found[output.name] = np.frombuffer(received.contents[index], dtype).reshape(shape)
    missing = [name for name in wanted if name not in found]
    if missing:
        model = response.model_name
        raise InferenceFailed(f"model {model!r}: the response lacks output(s) {missing}", model)
    return {name: found[name] for name in wanted}


def triton_error(error: grpc.RpcError) -> InferenceServerException:
    """A gRPC failure as tritonclient reports it, so one translation covers every call."""
    code: Any = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return InferenceServerException(msg=details, status=str(code) if code is not None else None)


def metadata(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(headers.items()) if headers else ()
