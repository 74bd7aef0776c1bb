"""Deadlines and the retry policy shared by the sync and asyncio clients.

A call's timeout is one deadline for all its attempts: a retried call still answers within the
time the caller gave it. `ServerUnavailable` (UNAVAILABLE: refused, reset, shutting down) is
retried; with several servers, so is `ModelNotFound` on a server the call has not tried yet (a
draining Triton unloads its models before it closes its port). Anything else would be refused
again, and a deadline is already spent.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from tritonstack.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidArgument,
    ModelNotFound,
    ServerUnavailable,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` tries; before try n+1 a random wait in [0, min(max_delay, base_delay·2^(n-1))]
    ("full jitter": clients that failed together do not come back together)."""

    attempts: int = 4
    base_delay: float = 0.05
    max_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise InvalidArgument(f"invalid retry policy {self}: attempts >= 1, delays >= 0")

    def delay(
        self, error: ClientError, attempt: int, remaining: float, another_server: bool = False
    ) -> float:
        """Seconds to wait before retrying after `attempt` failed tries, or re-raise `error`.
        `another_server`: the next try goes to a server that has not failed this call, at once."""
        retried = (ServerUnavailable, ModelNotFound) if another_server else ServerUnavailable
        if not isinstance(error, retried) or attempt >= self.attempts:
            raise error
        if another_server:
            return 0.0
        wait = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if wait >= remaining:
            raise error
        return wait


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def checked_timeout(seconds: float) -> float:
    """`seconds` if it is a usable timeout: a zero or negative one could only ever time out."""
    if not seconds > 0:  # NaN too
        raise InvalidArgument(f"timeout must be a positive number of seconds, got {seconds!r}")
    return seconds


class Deadline:
    """A point in time; each attempt gets what is left of it as its gRPC timeout."""

    __slots__ = ("seconds", "_end")

    def __init__(self, seconds: float) -> None:
        self.seconds = checked_timeout(seconds)
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def check(self, url: str, model: str | None) -> float:
        """The seconds left, or `DeadlineExceeded` when none are (an expired deadline sends nothing)."""
        left = self.remaining()
        if left <= 0:
            subject = f"model {model!r}" if model else "request"
            raise DeadlineExceeded(
                f"{subject}: no answer from Triton at {url} within {self.seconds:g} s — "
                "pass a larger timeout= or check the server's load",
                model,
            )
        return left
