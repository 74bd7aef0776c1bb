"""Two-tower retrieval model: a user tower and an item tower map categorical fields to one
embedding each; the score is their dot product, so item embeddings can be precomputed."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from tritonstack.recsys.config import Config, require
from tritonstack.recsys.layers import FusedEmbedding, mlp


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig(Config):
    """Field 0 of `user_vocab_sizes` / `item_vocab_sizes` is the user / item id, the rest are
    small categorical fields. Each field is embedded in `field_dim` floats; each tower's MLP has
    hidden widths `hidden_dims` and ends at `embedding_dim`, L2-normalised if `normalize`."""

    user_vocab_sizes: tuple[int, ...]
    item_vocab_sizes: tuple[int, ...]
    field_dim: int
    hidden_dims: tuple[int, ...]
    embedding_dim: int
    normalize: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.user_vocab_sizes) > 0, "TwoTowerConfig.user_vocab_sizes needs the user id field")
        require(len(self.item_vocab_sizes) > 0, "TwoTowerConfig.item_vocab_sizes needs the item id field")


PRESETS = {
    # ~45 MB of fp32 parameters, nearly all in the user and item id tables.
    "default": TwoTowerConfig(
        # user id, age bucket, gender, country, device type
        user_vocab_sizes=(240_000, 10, 3, 250, 8),
        # item id, category, brand, price bucket
        item_vocab_sizes=(100_000, 500, 5_000, 20),
        field_dim=32,
        hidden_dims=(256, 128),
        embedding_dim=64,
    ),
    "tiny": TwoTowerConfig(
        user_vocab_sizes=(100, 4, 3),
        item_vocab_sizes=(60, 5),
        field_dim=8,
        hidden_dims=(16,),
        embedding_dim=8,
    ),
}


class Tower(nn.Module):
    def __init__(self, vocab_sizes: tuple[int, ...], config: TwoTowerConfig) -> None:
        super().__init__()
        self.normalize = config.normalize
        self.embeddings = FusedEmbedding(vocab_sizes, config.field_dim)
        in_dim = len(vocab_sizes) * config.field_dim
        self.mlp = mlp(in_dim, (*config.hidden_dims, config.embedding_dim), last_activation=False)

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.mlp(self.embeddings(features).flatten(1))
        return nn.functional.normalize(out, dim=1) if self.normalize else out


class TwoTower(nn.Module):
    def __init__(self, config: TwoTowerConfig) -> None:
        super().__init__()
        self.user_tower = Tower(config.user_vocab_sizes, config)
        self.item_tower = Tower(config.item_vocab_sizes, config)

    def user_embedding(self, user_features: Tensor) -> Tensor:
        """(B, user fields) int64 -> (B, embedding_dim) float32."""
        out: Tensor = self.user_tower(user_features)
        return out

    def item_embedding(self, item_features: Tensor) -> Tensor:
        """(B, item fields) int64 -> (B, embedding_dim) float32."""
        out: Tensor = self.item_tower(item_features)
        return out

    def forward(self, user_features: Tensor, item_features: Tensor) -> Tensor:
        """Score (B, 1): the dot product of the user and item embeddings (a logit)."""
        user = self.user_embedding(user_features)
        item = self.item_embedding(item_features)
        return torch.sum(user * item, dim=1, keepdim=True)
