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
    An id outside its own table's range is not caught here when it still falls inside the
    concatenated table: it reads a row of a neighbouring table. Callers validate ids against
    the spec's per-column `high` bounds; ids beyond the whole table raise in PyTorch.
    """

    offsets: Tensor

    def __init__(self, vocab_sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(sum(vocab_sizes), dim)
        # Rows of unit-norm-ish vectors keep dot-product interactions O(1) at initialisation.
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        starts = torch.tensor((0, *vocab_sizes[:-1]), dtype=torch.int64).cumsum(0)
        self.register_buffer("offsets", starts, persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        """(B, tables) int64 ids -> (B, tables, dim) embeddings."""
        out: Tensor = self.embedding(ids + self.offsets)
        return out


def strict_upper_index(n: int) -> Tensor:
    """Positions of the strict upper triangle of an (n, n) matrix in its row-major flattening."""
    rows, cols = torch.triu_indices(n, n, offset=1)
    index: Tensor = rows * n + cols
    return index
