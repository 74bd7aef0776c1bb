"""The asyncio client: the same surface as `TritonClient`, over `tritonclient.grpc.aio`.

Request building, checks, parsing, the spec cache and the retry decision come from `ClientBase`;
each method here only awaits the call. Use it from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
import tritonclient.grpc.aio as aioclient
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


async def _model_infer(
    stub: Any, request: Any, *, client_timeout: float, headers: Mapping[str, str] | None
) -> Any:
    try:
        return await stub.ModelInfer(request, timeout=client_timeout, metadata=metadata(headers))
    except grpc.RpcError as error:
        raise triton_error(error) from error


class AsyncTritonClient(ClientBase):
    __doc__ = ClientBase.__doc__

    def _open(self, url: str, **connect: Any) -> Endpoint:
        client = aioclient.InferenceServerClient(url=url, **connect)
        return Endpoint(url, client, functools.partial(_model_infer, wire_stub(client)))

    async def __aenter__(self) -> AsyncTritonClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Unregister and free this client's shared memory regions, then close the channel."""
        for call in self._unregistrations():
            with contextlib.suppress(ClientError):  # a server that is gone has forgotten them
                await self._call(call.method, *call.args, deadline=self._deadline(None), retry=False)
        if self._shm is not None:
            self._shm.destroy()
        for endpoint in self._endpoints.all:
            await endpoint.client.close()

    async def _call(
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
                    call = method(endpoint)
                    result = await call(*args, client_timeout=timeout, headers=self.headers, **kwargs)
            except ClientError as error:
                await asyncio.sleep(self._after_failure(error, endpoint, failed, attempt, deadline, retry))
            else:
                self._answered(endpoint, failed)
                return result

    async def is_live(self, *, timeout: float | None = None) -> bool:
        """Whether the server (one of several) answers; False, not an error, when none can be reached."""
        return await self._probe(client_method("is_server_live"), timeout)

    async def is_ready(self, *, timeout: float | None = None) -> bool:
        """Whether the server (one of several) is ready for inference; False when none can be reached."""
        return await self._probe(client_method("is_server_ready"), timeout)

    async def wait_until_ready(self, timeout: float = 60) -> None:
        """Poll until the server is ready, or raise `ServerUnavailable` after `timeout` seconds."""
        deadline = Deadline(timeout)
        live = False
        while (remaining := deadline.remaining()) > 0:
            probe = min(remaining, self.timeout)
            if await self.is_ready(timeout=probe):
                return
            live = live or await self.is_live(timeout=probe)
            await asyncio.sleep(min(POLL_INTERVAL_S, max(deadline.remaining(), 0)))
        raise self._not_ready(timeout, live)

    async def list_models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        """Every model in the server's repository, loaded or not."""
        method = client_method("get_model_repository_index")
        return statuses(await self._call(method, deadline=self._deadline(timeout)))

    async def model_config(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> model_config_pb2.ModelConfig:
        """The model's `ModelConfig` protobuf as the server completed it."""
        return await self._config(name, version, self._deadline(timeout))

    async def model_metadata(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> Any:
        """The model's `ModelMetadataResponse` protobuf."""
        return await self._metadata(name, version, self._deadline(timeout))

    async def model_spec(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> ModelSpec:
        """The served model's spec from its config, fetched once and then cached."""
        return await self._spec(name, version, self._deadline(timeout))

    async def load_model(self, name: str, *, timeout: float | None = None) -> None:
        """Load (or reload) a model; the server must run with explicit model control."""
        self._forget(name)
        await self._call(client_method("load_model"), name, deadline=self._deadline(timeout), model=name)

    async def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        """Unload a model; the server must run with explicit model control."""
        await self._call(client_method("unload_model"), name, deadline=self._deadline(timeout), model=name)

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        *,
        version: int | None = None,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Array]:
        """Run one request; see `TritonClient.infer`."""
        return await self._infer(InferRequest(model, inputs, version, outputs), self._deadline(timeout))

    async def infer_many(
        self,
        requests: Sequence[InferRequest],
        *,
        concurrency: int = 8,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[dict[str, Array] | ClientError]:
        """Run requests with at most `concurrency` in flight; results in the requests' order.

        `timeout` is each request's deadline. The first `ClientError` is raised (the others are
        cancelled), or with `return_exceptions` put in the failed request's place.
        """
        slots = asyncio.Semaphore(max(1, concurrency))

        async def one(request: InferRequest) -> dict[str, Array] | ClientError:
            async with slots:
                try:
                    return await self._infer(request, self._deadline(timeout))
                except ClientError as error:
                    if return_exceptions:
                        return error
                    raise

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def statistics(
        self, name: str | None = None, version: int | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Triton's inference statistics for one model, or every model when `name` is None."""
        stats: dict[str, Any] = await self._call(
            client_method("get_inference_statistics"),
            name or "",
            version_string(version),
            as_json=True,
            deadline=self._deadline(timeout),
            model=name,
        )
        return stats

    async def _infer(self, request: InferRequest, deadline: Deadline) -> dict[str, Array]:
        try:
            return await self._infer_once(request, deadline)
        except ModelNotFound:
            if not self._stale_production(request):
                raise
        return await self._infer_once(request, deadline)

    async def _infer_once(self, request: InferRequest, deadline: Deadline) -> dict[str, Array]:
        spec = await self._spec(request.model, request.version, deadline)
        return join_rows(
            [await self._infer_chunk(spec, chunk, deadline) for chunk in self._chunks(spec, request)]
        )

    async def _infer_chunk(
        self, spec: ModelSpec, request: InferRequest, deadline: Deadline
    ) -> dict[str, Array]:
        prepared = self._prepare(spec, request)
        steps = self._infer_steps(request, prepared)
        try:
            call = next(steps)
            while True:
                try:
                    value = await self._call(call.method, *call.args, deadline=deadline, **call.kwargs)
                except ClientError as error:
                    call = steps.throw(error)
                else:
                    call = steps.send(value)
        except StopIteration as done:
            outputs: dict[str, Array] = done.value
            return outputs
        finally:
            self._release(prepared)

    async def _spec(self, name: str, version: int | None, deadline: Deadline) -> ModelSpec:
        spec = self._cached_spec(name, version)
        if spec is None:
            spec = self._cache_spec(name, version, await self._config(name, version, deadline))
        return spec

    async def _metadata(self, name: str, version: int | None, deadline: Deadline) -> Any:
        return await self._call(
            client_method("get_model_metadata"), name, version_string(version), deadline=deadline, model=name
        )

    async def _config(
        self, name: str, version: int | None, deadline: Deadline
    ) -> model_config_pb2.ModelConfig:
        response = await self._call(
            client_method("get_model_config"), name, version_string(version), deadline=deadline, model=name
        )
        config: model_config_pb2.ModelConfig = response.config
        return config

    async def _probe(self, method: ServerMethod, timeout: float | None) -> bool:
        """Whether a server says yes: each try goes to the next one in turn."""
        deadline = self._deadline(timeout)
        for _ in self._endpoints.all:
            try:
                if await self._call(method, deadline=deadline, retry=False):
                    return True
            except ServerUnavailable:
                continue
            except DeadlineExceeded:
                break
        return False
