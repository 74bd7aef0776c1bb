"""DCN-V2 (Wang et al., 2021), parallel structure: a cross network of full-rank cross layers
and a deep MLP both read x0 = [dense features, embeddings]; one linear layer combines them."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from tritonstack.recsys.config import require
from tritonstack.recsys.ctr import CtrConfig, hashed_vocab_sizes, tiny_vocab_sizes
from tritonstack.recsys.layers import FusedEmbedding, mlp


@dataclasses.dataclass(frozen=True)
class DCNv2Config(CtrConfig):
    """`cross_layers`: number of cross layers; `deep_dims`: widths of the deep MLP."""

    cross_layers: int
    deep_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.deep_dims) > 0, "DCNv2Config.deep_dims needs at least one layer")


PRESETS = {
    # ~85 MB of fp32 parameters, nearly all in the tables.
    "default": DCNv2Config(
        num_dense=13,
        vocab_sizes=hashed_vocab_sizes(165_000),
        embedding_dim=16,
        cross_layers=3,
        deep_dims=(512, 256),
    ),
    "tiny": DCNv2Config(
        num_dense=13, vocab_sizes=tiny_vocab_sizes(), embedding_dim=4, cross_layers=2, deep_dims=(16,)
    ),
}


class DCNv2(nn.Module):
    def __init__(self, config: DCNv2Config) -> None:
        super().__init__()
        width = config.num_dense + len(config.vocab_sizes) * config.embedding_dim
        self.embeddings = FusedEmbedding(config.vocab_sizes, config.embedding_dim)
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.cross_layers))
        self.deep = mlp(width, config.deep_dims, last_activation=True)
        self.head = nn.Linear(width + config.deep_dims[-1], 1)

    def forward(self, dense_features: Tensor, sparse_features: Tensor) -> Tensor:
        """(B, num_dense) float32, (B, tables) int64 -> click probability (B, 1) float32."""
        x0 = torch.cat([dense_features, self.embeddings(sparse_features).flatten(1)], dim=1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return torch.sigmoid(self.head(torch.cat([x, self.deep(x0)], dim=1)))
