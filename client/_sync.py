"""The synchronous client: `ClientBase`'s pure parts around `tritonclient.grpc` calls.

Built for serving-overhead measurements: one channel for the client's lifetime, model specs
fetched once per (name, version) and cached, and nothing on the inference path but the request
checks, the request itself and unpacking the response.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import grpc
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2

from tritonstack.client._base import (
    POLL_INTERVAL_S,
    ClientBase,
    InferRequest,
    ModelStatus,
    statuses,
    version_string,
)
from tritonstack.client._chunks import join_rows
from tritonstack.client._endpoints import Endpoint, ServerMethod, client_method
from tritonstack.client._errors import translate_errors
from tritonstack.client._retry import Deadline
from tritonstack.client._wire import metadata, triton_error, wire_stub
from tritonstack.errors import ClientError, DeadlineExceeded, ModelNotFound, ServerUnavailable
from tritonstack.spec import Array, ModelSpec


def _model_infer(stub: Any, request: Any, *, client_timeout: float, headers: Mapping[str, str] | None) -> Any:
    try:
        return stub.ModelInfer(request, timeout=client_timeout, metadata=metadata(headers))
    except grpc.RpcError as error:
        raise triton_error(error) from error


class TritonClient(ClientBase):
    __doc__ = ClientBase.__doc__

    def _open(self, url: str, **connect: Any) -> Endpoint:
        client = grpcclient.InferenceServerClient(url=url, **connect)
        return Endpoint(url, client, functools.partial(_model_infer, wire_stub(client)))

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unregister and free this client's shared memory regions, then close the channel."""
        for call in self._unregistrations():
            with contextlib.suppress(ClientError):  # a server that is gone has forgotten them
                self._call(call.method, *call.args, deadline=self._deadline(None), retry=False)
        if self._shm is not None:
            self._shm.destroy()
        for endpoint in self._endpoints.all:
            endpoint.client.close()

    def _call(
        self,
        method: ServerMethod,
        *args: Any,
        deadline: Deadline,
        model: str | None = None,
        infer: bool = False,
        retry: bool = True,
        **kwargs: Any,
    ) -> Any:
        """`method` on a server in turn, tried again under the retry policy (client/_retry.py)."""
        failed: dict[Endpoint, ClientError] = {}
        attempt = 0
        while True:
            attempt += 1
            endpoint = self._endpoints.pick(failed)
            try:
                with translate_errors(endpoint.url, model, infer=infer):
                    timeout = deadline.check(self.url, model)
                    result = method(endpoint)(*args, client_timeout=timeout, headers=self.headers, **kwargs)
            except ClientError as error:
                time.sleep(self._after_failure(error, endpoint, failed, attempt, deadline, retry))
            else:
                self._answered(endpoint, failed)
                return result

    def is_live(self, *, timeout: float | None = None) -> bool:
        """Whether the server (one of several) answers; False, not an error, when none can be reached."""
        return self._probe(client_method("is_server_live"), timeout)

    def is_ready(self, *, timeout: float | None = None) -> bool:
        """Whether the server (one of several) is ready for inference; False when none can be reached."""
        return self._probe(client_method("is_server_ready"), timeout)

    def wait_until_ready(self, timeout: float = 60) -> None:
        """Poll until the server is ready, or raise `ServerUnavailable` after `timeout` seconds."""
        deadline = Deadline(timeout)
        live = False
        while (remaining := deadline.remaining()) > 0:
            probe = min(remaining, self.timeout)
            if self.is_ready(timeout=probe):
                return
            live = live or self.is_live(timeout=probe)
            time.sleep(min(POLL_INTERVAL_S, max(deadline.remaining(), 0)))
        raise self._not_ready(timeout, live)

    def list_models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        """Every model in the server's repository, loaded or not."""
        index = self._call(client_method("get_model_repository_index"), deadline=self._deadline(timeout))
        return statuses(index)

    def model_config(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> model_config_pb2.ModelConfig:
        """The model's `ModelConfig` protobuf as the server completed it."""
        return self._config(name, version, self._deadline(timeout))

    def model_metadata(self, name: str, version: int | None = None, *, timeout: float | None = None) -> Any:
        """The model's `ModelMetadataResponse` protobuf."""
        return self._metadata(name, version, self._deadline(timeout))

    def model_spec(self, name: str, version: int | None = None, *, timeout: float | None = None) -> ModelSpec:
        """The served model's spec from its config, fetched once and then cached."""
        return self._spec(name, version, self._deadline(timeout))

    def load_model(self, name: str, *, timeout: float | None = None) -> None:
        """Load (or reload) a model; the server must run with explicit model control."""
        self._forget(name)
        self._call(client_method("load_model"), name, deadline=self._deadline(timeout), model=name)

    def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        """Unload a model; the server must run with explicit model control."""
        self._call(client_method("unload_model"), name, deadline=self._deadline(timeout), model=name)

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
        The arrays returned are read-only views of the response (joined copies when the request
        went in chunks: `max_message_bytes`).
        """
        return self._infer(InferRequest(model, inputs, version, outputs), self._deadline(timeout))

    def infer_many(
        self,
        requests: Sequence[InferRequest],
        *,
        concurrency: int = 8,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[dict[str, Array] | ClientError]:
        """Run requests with at most `concurrency` in flight; results in the requests' order.

        `timeout` is each request's deadline. The first `ClientError` is raised, or with
        `return_exceptions` put in the failed request's place.
        """

        def one(request: InferRequest) -> dict[str, Array] | ClientError:
            try:
                return self._infer(request, self._deadline(timeout))
            except ClientError as error:
                if return_exceptions:
                    return error
                raise

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, requests))

    def statistics(
        self, name: str | None = None, version: int | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Triton's inference statistics for one model, or every model when `name` is None.

        The raw JSON form: counters are uint64, which the protobuf JSON mapping writes as strings.
        """
        stats: dict[str, Any] = self._call(
            client_method("get_inference_statistics"),
            name or "",
            version_string(version),
            as_json=True,
            deadline=self._deadline(timeout),
            model=name,
        )
        return stats

    def _infer(self, request: InferRequest, deadline: Deadline) -> dict[str, Array]:
        try:
            return self._infer_once(request, deadline)
        except ModelNotFound:
            if not self._stale_production(request):
                raise
        return self._infer_once(request, deadline)

    def _infer_once(self, request: InferRequest, deadline: Deadline) -> dict[str, Array]:
        spec = self._spec(request.model, request.version, deadline)
        return join_rows([self._infer_chunk(spec, chunk, deadline) for chunk in self._chunks(spec, request)])

    def _infer_chunk(self, spec: ModelSpec, request: InferRequest, deadline: Deadline) -> dict[str, Array]:
        prepared = self._prepare(spec, request)
        steps = self._infer_steps(request, prepared)
        try:
            call = next(steps)
            while True:
                try:
                    value = self._call(call.method, *call.args, deadline=deadline, **call.kwargs)
                except ClientError as error:
                    call = steps.throw(error)
                else:
                    call = steps.send(value)
        except StopIteration as done:
            outputs: dict[str, Array] = done.value
            return outputs
        finally:
            self._release(prepared)

    def _spec(self, name: str, version: int | None, deadline: Deadline) -> ModelSpec:
        spec = self._cached_spec(name, version)
        if spec is None:
            spec = self._cache_spec(name, version, self._config(name, version, deadline))
        return spec

    def _metadata(self, name: str, version: int | None, deadline: Deadline) -> Any:
        return self._call(
            client_method("get_model_metadata"), name, version_string(version), deadline=deadline, model=name
        )

    def _config(self, name: str, version: int | None, deadline: Deadline) -> model_config_pb2.ModelConfig:
        response = self._call(
            client_method("get_model_config"), name, version_string(version), deadline=deadline, model=name
        )
        config: model_config_pb2.ModelConfig = response.config
        return config

    def _probe(self, method: ServerMethod, timeout: float | None) -> bool:
        """Whether a server says yes: each try goes to the next one in turn."""
        deadline = self._deadline(timeout)
        for _ in self._endpoints.all:
            try:
                if self._call(method, deadline=deadline, retry=False):
                    return True
            except ServerUnavailable:
                continue
            except DeadlineExceeded:
                break
        return False
