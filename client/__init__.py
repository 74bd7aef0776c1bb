"""Typed gRPC clients for models served by Triton, sync and asyncio; `import client` does not
import torch."""

from tritonstack.client._async import AsyncTritonClient
from tritonstack.client._base import DEFAULT_URL, InferRequest, ModelStatus
from tritonstack.client._retry import NO_RETRY, RetryPolicy
from tritonstack.client._sync import TritonClient
from tritonstack.client._validation import check_request
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
