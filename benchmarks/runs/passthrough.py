"""A model with DLRM's request shape (13 dense floats, 26 ids per row) and next to no compute, for
measuring what moving a request costs at ranking-size batches (benchmarks/runs/cpu-transport.sh)."""

from __future__ import annotations

import torch
from torch import nn


class PassThrough(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))  # a weight, so the checkpoint has one to load

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return dense[:, :1] * self.scale + sparse[:, :1].to(dense.dtype)


def build() -> PassThrough:
    return PassThrough()
