"""The servers behind one client, and which of them takes the next call.

Several urls are several Triton servers of the same repository, one gRPC channel each. Calls go
to them in turn. A server that answers UNAVAILABLE (down, restarting, or draining after SIGTERM)
is skipped for a while, doubling while it keeps failing, so the calls after it do not pay for
it too; it rejoins once the skip ends and a call succeeds there. A server that lacks a model
another one serves (a draining Triton unloads its models before it closes its port) is skipped
the same way once the other one has answered.

One gRPC channel per server rather than one channel balanced by gRPC's `round_robin` policy:
that policy drops a server only once its connection closes, and a draining Triton keeps its
connection open while it refuses new requests; a retry on the same channel may well land on
that server again. Here a retry goes to a server the call has not tried yet.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from tritonstack.errors import InvalidArgument

FIRST_SKIP_S = 0.1
MAX_SKIP_S = 1.0  # the channels' reconnect backoff is capped at 1 s too (client/_base.py)


@dataclass(eq=False)
class Endpoint:
    """One server: tritonclient's client on its channel, and `infer`, which sends a
    `ModelInferRequest` through the generated stub on the same channel."""

    url: str
    client: Any
    infer: Callable[..., Any]
    skip_until: float = 0.0
    failures: int = 0


# What a call runs, looked up on the endpoint it goes to: `client_method(name)` or `INFER`.
ServerMethod = Callable[[Endpoint], Callable[..., Any]]
INFER: ServerMethod = operator.attrgetter("infer")


def client_method(name: str) -> ServerMethod:
    """tritonclient's method `name` on whichever server the call goes to."""
    return operator.attrgetter(f"client.{name}")


def endpoint_urls(url: str | Sequence[str]) -> list[str]:
    """The servers' urls; several must each be HOST:PORT (one is passed to gRPC as given)."""
    if isinstance(url, str):
        return [url]
    if not url:
        raise InvalidArgument("give at least one Triton url HOST:PORT")
    for one in url:
        host, sep, port = one.rpartition(":")
        if not host or not sep or not port.isdigit():
            raise InvalidArgument(f"url {one!r} must be HOST:PORT")
    return list(url)


class Endpoints:
    """The client's servers in turn, skipping those that failed lately; safe to share between
    the sync client's threads (a lost update only shortens or repeats a skip)."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.all = tuple(endpoints)
        self._turn = itertools.count()

    def pick(self, tried: Collection[Endpoint] = ()) -> Endpoint:
        """The next server in turn that is neither skipped nor already `tried` by this call; when
        every one is, the untried one, else the one whose skip ends first."""
        if len(self.all) == 1:
            return self.all[0]
        start = next(self._turn)
        ordered = [self.all[(start + i) % len(self.all)] for i in range(len(self.all))]
        now = time.monotonic()
        for endpoint in ordered:
            if endpoint.skip_until <= now and endpoint not in tried:
                return endpoint
        return min(ordered, key=lambda e: (e in tried, e.skip_until))

    def untried(self, tried: Collection[Endpoint]) -> bool:
        """Whether some server has not failed this call yet."""
        return len(tried) < len(self.all) and any(e not in tried for e in self.all)

    def skip(self, endpoint: Endpoint) -> None:
        """Leave `endpoint` out of the turn for a while: FIRST_SKIP_S, doubled per failure in a
        row up to MAX_SKIP_S."""
        if len(self.all) > 1:
            endpoint.failures += 1
            delay = min(MAX_SKIP_S, FIRST_SKIP_S * 2 ** (endpoint.failures - 1))
            endpoint.skip_until = time.monotonic() + delay

    @staticmethod
    def answered(endpoint: Endpoint) -> None:
        if endpoint.failures:
            endpoint.failures = 0
