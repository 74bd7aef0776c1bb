"""A typed gRPC client for Triton over `tritonclient.grpc`.

Built for serving-overhead measurements: one channel for the client's lifetime, model specs
fetched once per (name, version) and cached, and nothing on the inference path but the
request checks, the request itself and unpacking the response.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2

from client._errors import translate_errors
from client._validation import check_outputs, check_request
from tritonstack.errors import ClientError, DeadlineExceeded, ServerUnavailable
from tritonstack.spec import (
    Array,
    ModelSpec,
    TensorSpec,
    dtype_from_wire,
    id_bounds_from_parameters,
    wire_dtype,
)

DEFAULT_URL = "127.0.0.1:8001"

# tritonclient's defaults (unlimited messages; its keepalive values are gRPC's own), plus a cap
# on the reconnect backoff: a channel that found the server down retries after up to 2 minutes
# by default, so `wait_until_ready` would miss a server that came up meanwhile.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class ModelStatus:
    """One entry of the repository index; `version` is Triton's string ("1"), empty for a model
    that is not loaded, and `reason` says why a model is not READY."""

    name: str
    version: str
    state: str
    reason: str


class TritonClient:
    """A synchronous client for one Triton server.

    Every call takes `timeout` in seconds (default: the client's) and raises a `ClientError`
    subclass on failure. Specs are cached for the client's lifetime: after reloading a model
    with a different config, use a new client.
    """

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        self._client = grpcclient.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def is_live(self, *, timeout: float | None = None) -> bool:
        """Whether the server answers; False, not an error, when it cannot be reached."""
        return self._probe(self._client.is_server_live, timeout)

    def is_ready(self, *, timeout: float | None = None) -> bool:
        """Whether the server is ready for inference; False when it cannot be reached."""
        return self._probe(self._client.is_server_ready, timeout)

    def wait_until_ready(self, timeout: float = 60) -> None:
        """Poll until the server is ready, or raise `ServerUnavailable` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        live = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            probe_timeout = min(remaining, self.timeout)
            if self.is_ready(timeout=probe_timeout):
                return
            live = live or self.is_live(timeout=probe_timeout)
            time.sleep(min(_POLL_INTERVAL_S, max(deadline - time.monotonic(), 0)))
        if live:
            raise ServerUnavailable(
                f"Triton at {self.url} is live but not ready after {timeout:g} s — a model is still "
                "loading or failed to load: check the server's log or list_models()"
            )
        raise ServerUnavailable(
            f"Triton at {self.url} did not answer within {timeout:g} s — start it with "
            "`tritonstack serve` or check --url"
        )

    def list_models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        """Every model in the server's repository, loaded or not."""
        with translate_errors(self.url):
            index = self._client.get_model_repository_index(client_timeout=self._timeout(timeout))
        return [ModelStatus(m.name, m.version, m.state, m.reason) for m in index.models]

    def model_config(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> model_config_pb2.ModelConfig:
        """The model's `ModelConfig` protobuf as the server completed it."""
        with translate_errors(self.url, name):
            response = self._client.get_model_config(
                name, _version(version), client_timeout=self._timeout(timeout)
            )
        return response.config

    def model_spec(self, name: str, version: int | None = None, *, timeout: float | None = None) -> ModelSpec:
        """The served model's spec from its metadata and config, fetched once and then cached.

        Shapes exclude the batch dimension and `high` is None: Triton does not know id ranges.
        """
        key = (name, _version(version))
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = self._fetch_spec(name, version, timeout)
        return spec

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        *,
        version: int | None = None,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Array]:
        """Run one request and return {output name: array} for every output, or those named.

        Inputs are checked against the cached spec first (`InvalidInput` before any round trip).
        The arrays returned are read-only views of the response.
        """
        spec = self.model_spec(model, version, timeout=timeout)
        check_request(spec, inputs)
        wanted: Sequence[str]
        if outputs is None:
            wanted, requested = spec.output_names, None
        else:
            check_outputs(spec, outputs)
            wanted, requested = outputs, [grpcclient.InferRequestedOutput(name) for name in outputs]
        request = [_infer_input(t, inputs[t.name]) for t in spec.inputs]
        with translate_errors(self.url, model, infer=True):
            result = self._client.infer(
                model,
                request,
                model_version=_version(version),
                outputs=requested,
                client_timeout=self._timeout(timeout),
            )
        return {name: result.as_numpy(name) for name in wanted}

    def statistics(
        self, name: str | None = None, version: int | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Triton's inference statistics for one model, or every model when `name` is None.

        The raw JSON form: counters are uint64, which the protobuf JSON mapping writes as strings.
        """
        with translate_errors(self.url, name):
            stats: dict[str, Any] = self._client.get_inference_statistics(
                name or "", _version(version), as_json=True, client_timeout=self._timeout(timeout)
            )
        return stats

    def _fetch_spec(self, name: str, version: int | None, timeout: float | None) -> ModelSpec:
        with translate_errors(self.url, name):
            metadata = self._client.get_model_metadata(
                name, _version(version), client_timeout=self._timeout(timeout)
            )
        config = self.model_config(name, version, timeout=timeout)
        max_batch_size = config.max_batch_size
        bounds = id_bounds_from_parameters({k: p.string_value for k, p in config.parameters.items()})
        if max_batch_size < 1:
            raise ClientError(
                f"model {name!r} has max_batch_size {max_batch_size}: this client sends batched "
                "requests only — set max_batch_size >= 1 in its config.pbtxt",
                name,
            )
        try:
            return ModelSpec(
                name,
                tuple(_tensor(t, bounds.get(t.name)) for t in metadata.inputs),
                tuple(_tensor(t) for t in metadata.outputs),
                max_batch_size,
            )
        except ValueError as exc:
            raise ClientError(f"model {name!r} cannot be described as a ModelSpec: {exc}", name) from exc

    def _probe(self, call: Any, timeout: float | None) -> bool:
        try:
            with translate_errors(self.url):
                return bool(call(client_timeout=self._timeout(timeout)))
        except (ServerUnavailable, DeadlineExceeded):
            return False

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout


def _tensor(metadata: Any, high: int | tuple[int, ...] | None = None) -> TensorSpec:
    """A `TensorSpec` from a metadata tensor, whose shape starts with the batch dimension (-1);
    `high` comes from the id bounds the repository writer records in the config's parameters."""
    return TensorSpec(metadata.name, dtype_from_wire(metadata.datatype), tuple(metadata.shape[1:]), high)


def _infer_input(tensor: TensorSpec, value: Array) -> Any:
    infer_input = grpcclient.InferInput(tensor.name, value.shape, wire_dtype(tensor.dtype))
    return infer_input.set_data_from_numpy(value)


def _version(version: int | None) -> str:
    return "" if version is None else str(version)
