"""Requests larger than the client's message limit, sent as several along the batch axis.

gRPC refuses a message over the channel's `max_message_bytes` (and can never carry more than
2 GiB); a ranking-size batch of wide rows can be larger. Rows of a batched model are independent
(Triton's dynamic batcher splits and joins them the same way), so such a request is sent in
chunks of whole rows that each fit, request and response, and the outputs are joined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from tritonstack.errors import InvalidInput
from tritonstack.spec import Array, ModelSpec

# Room for a message's header (model, tensor names and shapes): DLRM's takes under 200 bytes.
HEADER_BYTES = 4096


def message_rows(
    spec: ModelSpec, inputs: Mapping[str, Array], wanted: Sequence[str], max_message_bytes: int
) -> int:
    """How many rows of (checked) `inputs` one request may carry so that it and its response
    (outputs with fixed dimensions; a variable one cannot be known before) fit in
    `max_message_bytes`; `InvalidInput` when not even one row does."""
    sent = sum(value[:1].nbytes for value in inputs.values())
    returned = sum(
        math.prod(t.shape) * np.dtype(t.dtype).itemsize
        for t in spec.outputs
        if t.name in wanted and -1 not in t.shape
    )
    row = max(sent, returned, 1)
    rows = (max_message_bytes - HEADER_BYTES) // row
    if rows < 1:
        raise InvalidInput(
            f"{spec.name}: one row takes {row:,} bytes, more than the client's max_message_bytes "
            f"{max_message_bytes:,} allows — raise max_message_bytes= or use shared memory",
            model=spec.name,
        )
    return int(rows)


def split_rows(inputs: Mapping[str, Array], rows: int) -> list[dict[str, Array]]:
    """`inputs` in chunks of at most `rows` rows (views, no copy)."""
    batch = len(next(iter(inputs.values())))
    return [
        {name: value[start : start + rows] for name, value in inputs.items()}
        for start in range(0, batch, rows)
    ]


def join_rows(parts: Sequence[dict[str, Array]]) -> dict[str, Array]:
    """Each output's chunks joined along the batch axis."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
