"""Out-of-range ids of every kind, for the tests that feed them to models past every check of ours."""

from __future__ import annotations

import numpy as np

from tritonstack.spec import Array, ModelSpec, TensorSpec

INT64 = np.iinfo(np.int64)


def oov_values(high: tuple[int, ...], column: int) -> list[int]:
    """Every kind of id outside table `column`: negative (under a plain fused lookup, the previous
    table's last row), its table's size (the next table's first row), past the fused table, and
    int64's extremes."""
    return [-1, high[column], sum(high), sum(high) + 1000, INT64.max, INT64.min]


def hostile_batch(spec: ModelSpec, seed: int = 0) -> dict[str, Array]:
    """Copies of one valid row: row 0 as it is; then, for every id input and column, one row per
    kind of out-of-range id in that column; last, a row whose every id is out of range."""
    id_inputs = [t for t in spec.inputs if t.high is not None]
    rows = 1 + sum(len(bounds(t)) * len(oov_values(bounds(t), 0)) for t in id_inputs) + 1
    feeds = {name: np.repeat(value, rows, 0) for name, value in spec.random_inputs(1, seed).items()}
    row = 1
    for tensor in id_inputs:
        high = bounds(tensor)
        for column in range(len(high)):
            for value in oov_values(high, column):
                feeds[tensor.name][row, column] = value
                row += 1
        feeds[tensor.name][-1] = -1
    return feeds


def bounds(tensor: TensorSpec) -> tuple[int, ...]:
    high = tensor.high
    assert high is not None
    return high if isinstance(high, tuple) else (high,) * tensor.shape[-1]
