"""DLRM (Naumov et al., 2019): bottom MLP on dense features, one embedding per categorical
feature, pairwise dot products between all of them, top MLP, sigmoid."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from tritonstack.recsys.ctr import CtrConfig, hashed_vocab_sizes, tiny_vocab_sizes
from tritonstack.recsys.layers import FusedEmbedding, mlp, strict_upper_index


@dataclasses.dataclass(frozen=True)
class DLRMConfig(CtrConfig):
    """`bottom_dims`: hidden widths of the bottom MLP, which then ends at `embedding_dim`;
    `top_dims`: hidden widths of the top MLP, which then ends at one logit."""

    bottom_dims: tuple[int, ...]
    top_dims: tuple[int, ...]


PRESETS = {
    # ~120 MB of fp32 parameters, nearly all in the tables; MLPs as in the paper's Criteo runs.
    "default": DLRMConfig(
        num_dense=13,
        vocab_sizes=hashed_vocab_sizes(260_000),
        embedding_dim=16,
        bottom_dims=(512, 256, 64),
        top_dims=(512, 256),
    ),
    "tiny": DLRMConfig(
        num_dense=13, vocab_sizes=tiny_vocab_sizes(), embedding_dim=4, bottom_dims=(16,), top_dims=(16,)
    ),
}


class DLRM(nn.Module):
    interaction_index: Tensor

    def __init__(self, config: DLRMConfig) -> None:
        super().__init__()
        d = config.embedding_dim
        vectors = len(config.vocab_sizes) + 1
        self.bottom = mlp(config.num_dense, (*config.bottom_dims, d), last_activation=True)
        self.embeddings = FusedEmbedding(config.vocab_sizes, d)
        self.register_buffer("interaction_index", strict_upper_index(vectors), persistent=False)
        pairs = vectors * (vectors - 1) // 2
        self.top = mlp(d + pairs, (*config.top_dims, 1), last_activation=False)

    def forward(self, dense_features: Tensor, sparse_features: Tensor) -> Tensor:
        """(B, num_dense) float32, (B, tables) int64 -> click probability (B, 1) float32."""
        x = self.bottom(dense_features)
        vectors = torch.cat([x.unsqueeze(1), self.embeddings(sparse_features)], dim=1)
        # All dot products in one batched matmul; the strict upper triangle by a constant index.
        dots = torch.bmm(vectors, vectors.transpose(1, 2)).flatten(1)
        pairs = torch.index_select(dots, 1, self.interaction_index)
        return torch.sigmoid(self.top(torch.cat([x, pairs], dim=1)))
