"""The one place where tritonclient's failures become the project's `ClientError` tree.

tritonclient raises `InferenceServerException` for everything, with the gRPC status as a
string ("StatusCode.UNAVAILABLE") and Triton's own message; callers want to catch "the server
is down" apart from "my request is wrong", and read one line that says what to do.
"""

from __future__ import annotations

from types import TracebackType

from tritonclient.utils import InferenceServerException

from tritonstack.errors import (
    ClientError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ServerUnavailable,
)

_NOT_FOUND_MARKERS = ("unknown model", "is not found")


def grpc_failure(exc: InferenceServerException) -> tuple[str, str]:
    """tritonclient's failure as its gRPC status name ("UNAVAILABLE") and its message on one line."""
    return str(exc.status() or "").removeprefix("StatusCode."), " ".join(str(exc.message() or exc).split())


def to_client_error(
    exc: InferenceServerException, *, url: str, model: str | None = None, infer: bool = False
) -> ClientError:
    """The `ClientError` for a tritonclient failure; `infer` marks a failure of an inference call,
    where anything unrecognised means the server could not run an accepted request."""
    status, message = grpc_failure(exc)
    subject = f"model {model!r}" if model else "request"
    # NOT_FOUND also answers a shared memory region the server does not know (e.g. it restarted).
    if "shared memory region" in message:
        return ClientError(f"{subject}: Triton at {url} refused a shared memory region: {message}", model)
    # By message first: Triton releases answer an unknown model with NOT_FOUND, UNAVAILABLE or
    # INVALID_ARGUMENT.
    if status == "NOT_FOUND" or any(marker in message for marker in _NOT_FOUND_MARKERS):
        return ModelNotFound(
            f"{subject} not found on Triton at {url} ({message}) — list what is served with "
            "list_models() and check the name, the version and the server's --repo",
            model,
        )
    # Triton refuses a restricted protocol (--grpc-restricted-protocol) with UNAVAILABLE; it is
    # no outage, and retrying cannot help.
    if "protocol is restricted" in message:
        return ClientError(
            f"{subject}: Triton at {url} refused an admin call ({message}) — `tritonstack serve` "
            "closes admin APIs beyond loopback: call it on a loopback-bound server, or serve with "
            "--open-admin-apis on a trusted network",
            model,
        )
    # Triton stops its gRPC service last on SIGTERM, after its models unloaded, cancelling the
    # calls it has not answered: nothing ran, and another server (or the restarted one) can answer.
    if status == "CANCELLED":
        return ServerUnavailable(
            f"{subject}: Triton at {url} cancelled the call while shutting down ({message}) — "
            "retry once it is back, or give several urls",
            model,
        )
    if status == "RESOURCE_EXHAUSTED" and "larger than max" in message:
        return InvalidInput(
            f"{subject}: message over the size limit ({message}) — send smaller batches, or raise the "
            "client's max_message_bytes= if the server accepts more",
            model,
        )
    if status == "UNAVAILABLE":
        return ServerUnavailable(
            f"Triton at {url} is unreachable ({message}) — start it with `tritonstack serve` or check --url",
            model,
        )
    if status == "DEADLINE_EXCEEDED":
        return DeadlineExceeded(
            f"{subject}: no answer from Triton at {url} within the timeout ({message}) — "
            "pass a larger timeout= or check the server's load",
            model,
        )
    if status == "INVALID_ARGUMENT":
        return InvalidInput(f"{subject}: Triton rejected the request: {message}", model)
    if infer:
        return InferenceFailed(f"{subject}: inference failed on Triton at {url}: {message}", model)
    return ClientError(f"Triton at {url}: {message}", model)


class translate_errors:
    """Re-raise tritonclient failures inside the block as `ClientError`s, `from` the original.

    A class, not `contextlib.contextmanager`: it wraps every inference call, and a generator-based
    manager costs about a microsecond more per call.
    """

    __slots__ = ("url", "model", "infer")

    def __init__(self, url: str, model: str | None = None, *, infer: bool = False) -> None:
        self.url = url
        self.model = model
        self.infer = infer

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, InferenceServerException):
            raise to_client_error(exc, url=self.url, model=self.model, infer=self.infer) from exc
