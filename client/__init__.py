"""Typed gRPC clients for models served by Triton, sync and asyncio; `import client` does not
import torch."""

from client._async import AsyncTritonClient
from client._base import DEFAULT_URL, InferRequest, ModelStatus
from client._retry import NO_RETRY, RetryPolicy
from client._sync import TritonClient
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
    "NO_RETRY",
    "AsyncTritonClient",
    "ClientError",
    "DeadlineExceeded",
    "InferRequest",
    "InferenceFailed",
    "InvalidInput",
    "ModelNotFound",
    "ModelStatus",
    "RetryPolicy",
    "ServerUnavailable",
    "TritonClient",
    "check_request",
]
