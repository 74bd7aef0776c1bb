"""The project's errors. Every user-facing failure is one of these, with a one-line message
that names the problem and the fix; the CLI prints that line and exits 2.

    TritonstackError
    ├── UsageError              bad arguments or options
    │   └── InvalidArgument     a bad argument to a Python API; also a ValueError
    ├── CheckpointError         missing, truncated, unsafe or mismatched checkpoint
    ├── ExportError             an exporter failed
    │   └── VerificationError   an artifact disagrees with PyTorch beyond tolerance
    ├── RepositoryError         the model repository cannot be written or read
    ├── ServeError              the Triton server cannot start or load a model
    │   ├── BinaryNotFound
    │   ├── PortInUse
    │   └── ModelLoadError
    └── ClientError             a call to Triton failed
        ├── InvalidInput        request names, dtypes or shapes do not match the model
        ├── ModelNotFound
        ├── ServerUnavailable
        ├── DeadlineExceeded
        └── InferenceFailed     the server accepted the request but could not run it
"""

from __future__ import annotations


class TritonstackError(Exception):
    """Base of every error the project raises on purpose."""


class UsageError(TritonstackError):
    pass


class InvalidArgument(UsageError, ValueError):
    """A bad argument to a Python API (a client option, a model config field): a `UsageError` for
    the CLI, and a `ValueError` for callers that catch what Python raises for a bad value."""


class CheckpointError(TritonstackError):
    pass


class ExportError(TritonstackError):
    pass


class VerificationError(ExportError):
    pass


class RepositoryError(TritonstackError):
    pass


class ServeError(TritonstackError):
    pass


class BinaryNotFound(ServeError):
    pass


class PortInUse(ServeError):
    pass


class ModelLoadError(ServeError):
    pass


class ClientError(TritonstackError):
    """A failed call; `model` names the model when the call had one."""

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class InvalidInput(ClientError):
    pass


class ModelNotFound(ClientError):
    pass


class ServerUnavailable(ClientError):
    pass


class DeadlineExceeded(ClientError):
    pass


class InferenceFailed(ClientError):
    pass


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none: foreign errors
    (exporters, runtimes) often carry pages of context that a one-line report cannot show."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
