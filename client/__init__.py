"""Typed gRPC clients for models served by Triton, sync and asyncio; importing them does not
import torch.

Errors: a bad argument to a client or a call (urls, timeout, retry policy, TLS files,
shared-memory options) raises `InvalidArgument`, which is both a `UsageError` and a `ValueError`;
a request that does not match the model's tensors raises `InvalidInput` before it is sent; a
failed call raises a `ClientError` subclass (`ModelNotFound`, `ServerUnavailable`,
`DeadlineExceeded`, `InferenceFailed`, `InvalidInput` for Triton's own refusals).
"""

from tritonstack.client._async import AsyncTritonClient
from tritonstack.client._base import DEFAULT_URL, InferRequest, ModelStatus
from tritonstack.client._retry import NO_RETRY, RetryPolicy
from tritonstack.client._sync import TritonClient
from tritonstack.client._validation import check_request
from tritonstack.errors import (
    ClientError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidArgument,
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
    "InvalidArgument",
    "InvalidInput",
    "ModelNotFound",
    "ModelStatus",
    "RetryPolicy",
    "ServerUnavailable",
    "TritonClient",
    "check_request",
]
