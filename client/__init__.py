"""A typed gRPC client for models served by Triton; `import client` does not import torch."""

from client._client import DEFAULT_URL, ModelStatus, TritonClient
from client._validation import check_request
from tritonstack.errors import (
    ClientError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ServerUnavailable,
)

__all__ = [
    "DEFAULT_URL",
    "ClientError",
    "DeadlineExceeded",
    "InferenceFailed",
    "InvalidInput",
    "ModelNotFound",
    "ModelStatus",
    "ServerUnavailable",
    "TritonClient",
    "check_request",
]
