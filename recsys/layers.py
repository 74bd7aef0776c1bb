"""Building blocks shared by the architectures, chosen to export as few, cheap ONNX nodes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def mlp(in_dim: int, dims: Sequence[int], *, last_activation: bool) -> nn.Sequential:
    """Linear layers of widths `dims` with ReLU between them, and after the last if asked."""
    layers: list[nn.Module] = []
    for i, out_dim in enumerate(dims):
        layers.append(nn.Linear(in_dim, out_dim))
        if last_activation or i < len(dims) - 1:
            layers.append(nn.ReLU())
        in_dim = out_dim
    return nn.Sequential(*layers)


class FusedEmbedding(nn.Module):
    """One embedding table per column of an id tensor, stored as a single concatenated table.

    Column `j`'s ids are shifted by the row offset of table `j`, so every lookup is one
    `nn.Embedding` call (one ONNX Gather instead of one per table; TorchRec does the same).

    Out-of-vocabulary ids: an id outside its own table (`id < 0` or `id >= vocab_sizes[j]`)
    embeds as the zero vector, whatever it is: negative, past its own table, past the whole
    fused table. It never reads another table's row, and the gather never sees an index outside
    the fused table (so no runtime error, and no device-side assert on CUDA). The rule is part of
    the exported graphs, so every backend that runs them gives the same answer; it adds no
    parameters, so existing checkpoints load unchanged.
    """

    offsets: Tensor
    vocab_sizes: Tensor

    def __init__(self, vocab_sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(sum(vocab_sizes), dim)
        # Rows of unit-norm-ish vectors keep dot-product interactions O(1) at initialisation.
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        sizes = torch.tensor(vocab_sizes, dtype=torch.int64)
        self.register_buffer("offsets", sizes.cumsum(0) - sizes, persistent=False)
        self.register_buffer("vocab_sizes", sizes, persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        """(B, tables) int64 ids -> (B, tables, dim) embeddings; out-of-vocabulary ids -> zeros."""
        oov = (ids < 0) | (ids >= self.vocab_sizes)
        rows = torch.where(oov, self.offsets, ids + self.offsets)  # an OOV id reads a safe row...
        out: Tensor = self.embedding(rows).masked_fill(oov.unsqueeze(-1), 0.0)  # ...then zeroed
        return out


def strict_upper_index(n: int) -> Tensor:
    """Positions of the strict upper triangle of an (n, n) matrix in its row-major flattening."""
    rows, cols = torch.triu_indices(n, n, offset=1)
    index: Tensor = rows * n + cols
    return index
