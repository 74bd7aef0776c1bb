"""Inference requests and responses as Triton's gRPC protobufs, built and read directly.

tritonclient's `InferInput` / `InferResult` wrappers rebuild and re-parse every request in Python.
Interleaved with bare protobuf calls on the 2-core CPU machine, they cost about 0.2 ms of a 1 ms
batch-1 request (benchmarks/OVERHEAD.md), so the inference path builds the `ModelInferRequest`
itself and sends it through the generated stub of tritonclient's own channel. Every other call
(health, metadata, shared-memory registration, ...) still goes through tritonclient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tritonstack.errors import ClientError, InferenceFailed
from tritonstack.spec import Array, ModelSpec, dtype_from_wire, wire_dtype

InferTensor = service_pb2.ModelInferRequest.InferInputTensor
RequestedOutput = service_pb2.ModelInferRequest.InferRequestedOutputTensor


def generated_stub(client: Any) -> Any:
    """The `GRPCInferenceServiceStub` on tritonclient's channel (sync or asyncio), so inference
    shares the connection, TLS and load balancing of every other call."""
    stub = getattr(client, "_client_stub", None)
    if stub is None:
        raise ClientError(f"{type(client).__name__} has no _client_stub: install tritonclient>=2.51")
    return stub


def infer_request(
    model: str,
    version: str,
    spec: ModelSpec,
    inputs: Mapping[str, Array],
    outputs: Sequence[str] | None,
    with_contents: bool = True,
) -> service_pb2.ModelInferRequest:
    """The request, with every input's bytes in `raw_input_contents` unless the inputs travel
    through shared memory (`with_contents=False`). The inputs are already checked."""
    values = [inputs[t.name] for t in spec.inputs]
    return service_pb2.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=[
            InferTensor(name=t.name, datatype=wire_dtype(t.dtype), shape=v.shape)
            for t, v in zip(spec.inputs, values, strict=True)
        ],
        outputs=[] if outputs is None else [RequestedOutput(name=n) for n in outputs],
        raw_input_contents=[v.tobytes() for v in values] if with_contents else [],
    )


def place_in_region(tensor: Any, region: str, byte_size: int, offset: int) -> None:
    """Point an input (`InferInputTensor`) or requested output (`InferRequestedOutputTensor`) at a
    registered shared-memory region, as Triton's protocol extension names it."""
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = byte_size
    tensor.parameters["shared_memory_offset"].int64_param = offset


def read_outputs(
    response: service_pb2.ModelInferResponse,
    wanted: Sequence[str],
    region_contents: Array | None = None,
    offsets: Mapping[str, int] | None = None,
) -> dict[str, Array]:
    """{name: array} for the wanted outputs: from the message, or from the request's
    shared-memory region (copied: the region is reused once the request is done)."""
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
            found[output.name] = np.frombuffer(response.raw_output_contents[index], dtype).reshape(shape)
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
