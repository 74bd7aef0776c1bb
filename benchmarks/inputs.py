"""The pool of distinct inputs a cell cycles through, generated from the model's spec.

One request sent again and again keeps the same embedding rows in cache, which flatters models
whose cost is random gathers; traffic sends different ids every time. A pool of distinct random
batches (ids within their ranges, floats from a standard normal) is generated once per model and
batch size from a recorded seed, so a run can be repeated, and is capped in bytes so memory stays
bounded at big batches. Served cells and in-process baselines cycle through the same pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tritonstack.benchmarks.config import PoolRule
from tritonstack.spec import Array, ModelSpec

Feeds = dict[str, Array]


@dataclass(frozen=True)
class Pool:
    """The distinct batches of one (model, batch size), and how they were made."""

    spec: ModelSpec
    batch_size: int
    size: int
    seed: int

    @classmethod
    def for_rule(cls, spec: ModelSpec, batch_size: int, rule: PoolRule) -> Pool:
        """As many batches as `rule.size`, fewer where they would pass `rule.max_mb` (at least one)."""
        fit = int(rule.max_mb * 2**20 // request_bytes(spec, batch_size))
        return cls(spec, batch_size, max(1, min(rule.size, fit)), rule.seed)

    def batches(self) -> Iterator[Feeds]:
        """The pool's batches, generated in order: the same every time for the same pool."""
        rng = np.random.default_rng((self.seed, self.batch_size))
        for _ in range(self.size):
            yield {t.name: t.random(self.batch_size, rng) for t in self.spec.inputs}

    def describe(self) -> dict[str, object]:
        """What the results say about the pool."""
        per_request = request_bytes(self.spec, self.batch_size)
        return {
            "requests": self.size,
            "seed": self.seed,
            "bytes_per_request": per_request,
            "bytes": per_request * self.size,
            "inputs": {
                t.name: {
                    "dtype": t.dtype,
                    "shape": [self.batch_size, *(1 if d == -1 else d for d in t.shape)],
                    "high": t.high,
                }
                for t in self.spec.inputs
            },
        }


def request_bytes(spec: ModelSpec, batch_size: int) -> int:
    """Bytes of one batch's input tensors (variable dims generated as 1)."""
    return sum(
        batch_size * int(np.prod([1 if d == -1 else d for d in t.shape])) * np.dtype(t.dtype).itemsize
        for t in spec.inputs
    )
