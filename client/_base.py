"""What the sync and asyncio clients share: connection settings, the spec cache, building and
checking requests, parsing responses, and the retry decision. Everything here is pure; the two
clients differ only in how they make a call (`client/_sync.py`, `client/_async.py`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from tritonstack.client._chunks import message_rows, split_rows
from tritonstack.client._endpoints import (
    INFER,
    Endpoint,
    Endpoints,
    ServerMethod,
    client_method,
    endpoint_urls,
)
from tritonstack.client._region import Region
from tritonstack.client._retry import DEFAULT_RETRY, Deadline, RetryPolicy, checked_timeout
from tritonstack.client._shm import ShmKind, ShmPool, aligned, shm_pool
from tritonstack.client._validation import check_outputs, check_request
from tritonstack.client._wire import (
    decode_response,
    encode_request,
    infer_request,
    place_in_region,
    read_outputs,
)
from tritonstack.errors import ClientError, InvalidArgument, ModelNotFound, ServerUnavailable
from tritonstack.spec import Array, ModelSpec, production_version

DEFAULT_URL = "127.0.0.1:8001"
# The largest request or response a client sends or accepts (tritonclient's default is 2 GiB,
# Triton's own limit); a larger request goes in chunks that fit (client/_chunks.py): DLRM's batch of
# 16384 takes 4.26 MB, one of 2 KiB rows 32 MiB.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20
POLL_INTERVAL_S = 0.1
# Triton's words for a region it does not know (NOT_FOUND or INVALID_ARGUMENT, by release); an
# inference's message names no kind of region, a status call's names "system" or "cuda".
_FORGOTTEN_REGION = re.compile(r"Unable to find (system |cuda )?shared memory region")


@dataclass(frozen=True)
class ModelStatus:
    """One entry of the repository index; `version` is Triton's string ("1"), empty for a model
    that is not loaded, and `reason` says why a model is not READY."""

    name: str
    version: str
    state: str
    reason: str


@dataclass(frozen=True)
class Call:
    """A call to make with these arguments on whichever server takes it; the caller adds the
    deadline."""

    method: ServerMethod
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


InferSteps = Generator[Call, Any, dict[str, Array]]


@dataclass(frozen=True)
class InferRequest:
    """One request of `infer_many`, the arguments of `infer`."""

    model: str
    inputs: Mapping[str, Array]
    version: int | None = None
    outputs: Sequence[str] | None = None


@dataclass(frozen=True)
class Prepared:
    """A checked request as the wire takes it (a serialized `ModelInferRequest`), and the output
    names to read back; with shared memory, the region it holds and where each output lands in it."""

    request: bytes
    wanted: Sequence[str]
    region: Region | None = None
    output_offsets: dict[str, int] = field(default_factory=dict)

    def parse(self, response: bytes) -> dict[str, Array]:
        # The region is read once for all its outputs: for CUDA, that is one device-to-host copy.
        contents = self.region.contents() if self.region is not None and self.output_offsets else None
        return read_outputs(decode_response(response), self.wanted, contents, self.output_offsets)


def channel_args(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Each server's channel: messages capped at `max_message_bytes` both ways (gRPC refuses a
    larger request before sending it); a cap on the reconnect backoff: a channel that found the
    server down retries after up to 2 minutes by default, so a restarted server would go unnoticed
    that long. And a connection of its own: gRPC shares one per address between channels with the
    same arguments, so a new client would inherit another client's backoff after a restart and
    fail at once."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.use_local_subchannel_pool", 1),
    ]


def tls_options(
    ssl: bool, root_certificates: str | None, private_key: str | None, certificate_chain: str | None
) -> dict[str, Any]:
    """tritonclient's TLS arguments, checked: tritonclient would ignore certificate files without
    `ssl` (silently sending plaintext) and fail on a missing one with a bare `FileNotFoundError`."""
    files = {
        "root_certificates": root_certificates,
        "private_key": private_key,
        "certificate_chain": certificate_chain,
    }
    given = {option: path for option, path in files.items() if path is not None}
    if given and not ssl:
        raise InvalidArgument(
            f"{', '.join(given)} need ssl=True (--ssl): without it the connection is plaintext"
        )
    if (private_key is None) != (certificate_chain is None):
        raise InvalidArgument("a client certificate needs both private_key and certificate_chain (PEM files)")
    for option, path in given.items():
        if not os.path.isfile(path):
            raise InvalidArgument(f"{option} {path} is not a file: pass a PEM file")
    return {"ssl": ssl, **files}


class ClientBase:
    """The state and pure parts of a client for one Triton server, or several serving the same
    repository (a list of urls: calls go to them in turn, and a call one of them cannot answer
    is tried on another; client/_endpoints.py).

    A bad argument (urls, timeout, retry policy, TLS files, shared-memory options) raises
    `InvalidArgument`, which is a `UsageError` and a `ValueError`, before anything is sent; inputs
    that do not match the model raise `InvalidInput`, also before they are sent.

    Every call takes `timeout` in seconds (default: the client's): one deadline for the call and
    its retries under `retry`. Failures raise a `ClientError` subclass. `ssl` connects over TLS,
    verifying the server against `root_certificates` (a PEM file; default: the system's); a server
    requiring client certificates (mutual TLS) needs `private_key` and `certificate_chain` (PEM
    files) and closes the connection of a client without them, which fails as
    `ServerUnavailable`. `headers` go with every call. Requests and responses are capped at
    `max_message_bytes`: a larger request goes in chunks of rows that fit (client/_chunks.py),
    and one whose single row cannot fit is refused as `InvalidInput` before it is sent;
    `use_shared_memory` passes tensors through shared memory (same host, one url only): True or
    "system" for system shared memory, "cuda" for memory on GPU `cuda_device` (needs
    cuda-bindings: `pip install 'tritonstack[cuda]'`). Specs are cached for the client's
    lifetime: `load_model` drops the model's. Through shared memory the messages carry no
    tensors, and no request is split.

    `infer` without a version goes to the production version that `tritonstack models promote`
    records in the model's config, read with the spec (no extra round trip); Triton alone would
    pick the highest loaded version. When that version is not found (a later promote moved
    production and Triton unloaded it), the client reads the config again and retries once. An
    explicit version goes where it says.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        headers: Mapping[str, str] | None = None,
        use_shared_memory: bool | ShmKind = False,
        cuda_device: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        tls = tls_options(ssl, root_certificates, private_key, certificate_chain)
        urls = endpoint_urls(url)
        if use_shared_memory and len(urls) > 1:
            raise InvalidArgument("use_shared_memory needs one url: each server registers its own regions")
        self.url = ",".join(urls)
        self.timeout = checked_timeout(timeout)
        self.retry = retry
        self.headers = dict(headers) if headers else None
        self.max_message_bytes = max_message_bytes
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        self._production: dict[str, str] = {}  # model -> version for unversioned requests
        self._shm = shm_pool(use_shared_memory, cuda_device)
        options = channel_args(max_message_bytes)
        self._endpoints = Endpoints([self._open(u, channel_args=options, **tls) for u in urls])

    def _open(self, url: str, **connect: Any) -> Endpoint:
        """The server at `url`: tritonclient's client (both take these keyword arguments) and
        ModelInfer on its channel (`client/_wire.py`: a serialized request in, the response's
        bytes out), which takes `client_timeout` and `headers` as tritonclient does and raises
        gRPC failures as tritonclient's."""
        raise NotImplementedError

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def _after_failure(
        self,
        error: ClientError,
        endpoint: Endpoint,
        failed: dict[Endpoint, ClientError],
        attempt: int,
        deadline: Deadline,
        retry: bool,
    ) -> float:
        """Seconds to wait before the call's next try (none when a server it has not failed on
        is left), or re-raise `error`; an unavailable server leaves the turn for a while."""
        if isinstance(error, ServerUnavailable):
            self._endpoints.skip(endpoint)
        failed[endpoint] = error
        if not retry:
            raise error
        return self.retry.delay(error, attempt, deadline.remaining(), self._endpoints.untried(failed))

    def _answered(self, endpoint: Endpoint, failed: dict[Endpoint, ClientError]) -> None:
        """The call succeeded on `endpoint`: a server that did not find its model while this one
        did (a draining Triton unloads its models first) leaves the turn for a while too."""
        self._endpoints.answered(endpoint)
        for other, error in failed.items():
            if isinstance(error, ModelNotFound) and other is not endpoint:
                self._endpoints.skip(other)

    def _stale_production(self, request: InferRequest) -> bool:
        """Whether an unversioned request went to a production version this client cached, and
        found it gone: `models promote` moved production. Then the model's cache is dropped, so
        that the next try reads the config again."""
        if request.version is not None or not self._production.get(request.model):
            return False
        self._forget(request.model)
        return True

    def _chunks(self, spec: ModelSpec, request: InferRequest) -> list[InferRequest]:
        """The request as sent: whole, or in chunks of rows when its message or response would
        pass `max_message_bytes` (then the whole request is checked first)."""
        values = request.inputs.values()
        if self._shm is not None or not all(isinstance(v, np.ndarray) and v.ndim for v in values):
            return [request]  # shared memory: small messages; not arrays: `_prepare` says why
        wanted = spec.output_names if request.outputs is None else request.outputs
        rows = message_rows(spec, request.inputs, wanted, self.max_message_bytes)
        if len(next(iter(values))) <= rows:
            return [request]
        check_request(spec, request.inputs)
        return [replace(request, inputs=part) for part in split_rows(request.inputs, rows)]

    def _prepare(self, spec: ModelSpec, request: InferRequest) -> Prepared:
        """Check the request against the spec (`InvalidInput` before any round trip) and build it."""
        check_request(spec, request.inputs)
        if request.outputs is not None:
            check_outputs(spec, request.outputs)
        version = self._routed_version(request)
        if self._shm is not None:
            return prepare_in_shared_memory(self._shm, spec, request, version)
        wanted = spec.output_names if request.outputs is None else request.outputs
        message = infer_request(request.model, version, spec, request.inputs, request.outputs)
        return Prepared(encode_request(message, [request.inputs[t.name] for t in spec.inputs]), wanted)

    def _release(self, prepared: Prepared) -> None:
        if self._shm is not None and prepared.region is not None:
            self._shm.release(prepared.region)

    def _infer_steps(self, request: InferRequest, prepared: Prepared) -> InferSteps:
        """The calls of one inference, for the sync or async client to make (each sends back the
        call's result, or throws its `ClientError` in): register the request's shared-memory
        region where needed, infer, parse; once more if the server forgot the region."""
        while True:  # again only after the server forgot the region; the deadline bounds it
            region = prepared.region
            if region is not None and not region.registered:
                name, args = region.registration()
                yield Call(client_method(name), args, {})
                region.registered = True
            infer = Call(INFER, (prepared.request,), {"model": request.model, "infer": True})
            try:
                result = yield infer
            except ClientError as error:
                if self._server_forgot_region(prepared, error):
                    continue
                raise
            return prepared.parse(result)

    def _routed_version(self, request: InferRequest) -> str:
        """The version to ask for: the request's, else the model's production version; "" (no
        production version recorded) leaves the choice to Triton."""
        if request.version is not None:
            return str(request.version)
        return self._production.get(request.model, "")

    def _server_forgot_region(self, prepared: Prepared, error: ClientError) -> bool:
        """Whether `error` says the server no longer knows the request's region (it restarted);
        then every region is marked for registering again."""
        if self._shm is None or prepared.region is None or not _FORGOTTEN_REGION.search(str(error)):
            return False
        for region in self._shm.regions:
            region.registered = False
        return True

    def _unregistrations(self) -> list[Call]:
        """The calls that unregister this client's registered regions, for `close`."""
        regions = self._shm.regions if self._shm is not None else []
        calls = [r.unregistration() for r in regions if r.registered]
        return [Call(client_method(name), args, {}) for name, args in calls]

    def _forget(self, name: str) -> None:
        """Drop what is cached about the model (its specs and production version)."""
        self._specs = {key: spec for key, spec in self._specs.items() if key[0] != name}
        self._production.pop(name, None)

    def _cached_spec(self, name: str, version: int | None) -> ModelSpec | None:
        return self._specs.get((name, version_string(version)))

    def _cache_spec(self, name: str, version: int | None, config: model_config_pb2.ModelConfig) -> ModelSpec:
        """The spec from the model's config (`ModelSpec.from_config`: shapes without the batch
        dimension as requests carry them, `high` from the id bounds the repository writer records),
        and the production version `models promote` records there."""
        if config.max_batch_size < 1:
            raise ClientError(
                f"model {name!r} has max_batch_size {config.max_batch_size}: this client sends batched "
                "requests only — set max_batch_size >= 1 in its config.pbtxt",
                name,
            )
        try:
            spec = ModelSpec.from_config(config)
        except ValueError as exc:
            raise ClientError(f"model {name!r} cannot be described as a ModelSpec: {exc}", name) from exc
        self._specs[(name, version_string(version))] = spec
        self._production[name] = version_string(production_version(config))
        return spec

    def _not_ready(self, timeout: float, live: bool) -> ServerUnavailable:
        if live:
            return ServerUnavailable(
                f"Triton at {self.url} is live but not ready after {timeout:g} s — a model is still "
                "loading or failed to load: check the server's log or list_models()"
            )
        return ServerUnavailable(
            f"Triton at {self.url} did not answer within {timeout:g} s — start it with "
            "`tritonstack serve` or check --url"
        )


def prepare_in_shared_memory(pool: ShmPool, spec: ModelSpec, request: InferRequest, version: str) -> Prepared:
    """The (checked) request with its inputs written to one region of `pool`, outputs placed
    after them; an output with a variable dimension has no size to reserve and comes back in the
    response message instead."""
    values = [np.ascontiguousarray(request.inputs[t.name]) for t in spec.inputs]
    batch = values[0].shape[0]
    wanted = spec.output_names if request.outputs is None else list(request.outputs)
    out_bytes = {
        t.name: batch * math.prod(t.shape) * np.dtype(t.dtype).itemsize
        for t in spec.outputs
        if t.name in wanted and -1 not in t.shape
    }
    offsets = _offsets([v.nbytes for v in values] + list(out_bytes.values()))
    region = pool.acquire(offsets[-1])
    region.write(values, offsets[: len(values)])
    message = infer_request(request.model, version, spec, request.inputs, wanted)
    for tensor, value, offset in zip(message.inputs, values, offsets, strict=False):
        place_in_region(tensor, region.name, value.nbytes, offset)
    output_offsets = dict(zip(out_bytes, offsets[len(values) :], strict=False))
    for output in message.outputs:
        if output.name in output_offsets:
            place_in_region(output, region.name, out_bytes[output.name], output_offsets[output.name])
    return Prepared(encode_request(message), wanted, region, output_offsets)


def _offsets(sizes: list[int]) -> list[int]:
    """Where each tensor starts (aligned), then the total size."""
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + aligned(size))
    return offsets


def statuses(index: Any) -> list[ModelStatus]:
    return [ModelStatus(m.name, m.version, m.state, m.reason) for m in index.models]


def version_string(version: int | None) -> str:
    return "" if version is None else str(version)
