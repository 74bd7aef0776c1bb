"""Synthetic, learnable training data made on the fly from a seeded random "teacher".

Ids follow a power law, as real traffic does, so frequent ids repeat within a short run and
their effect can be learnt. Labels are Bernoulli draws from the teacher's click probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from tritonstack.recsys.ctr import CtrConfig
from tritonstack.recsys.two_tower import TwoTowerConfig

# ids = floor(vocab * u**ZIPF_POWER), u uniform: a tenth of the draws hit the first 0.1% of ids.
ZIPF_POWER = 3.0


class Batch(NamedTuple):
    inputs: tuple[Tensor, ...]  # in the order of the model's forward arguments
    labels: Tensor  # (B, 1) float32, 0 or 1


class Teacher(Protocol):
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch: ...


class CtrTeacher:
    """Click logit = a latent value per id of every table + a linear function of dense features."""

    def __init__(self, config: CtrConfig, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.num_dense = config.num_dense
        self.tables = _LatentTables(config.vocab_sizes, 1, gen)
        self.sparse_scale = 1.5 / len(config.vocab_sizes) ** 0.5
        self.dense_weight = torch.randn(config.num_dense, 1, generator=gen) * 1.5 / config.num_dense**0.5

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        dense = torch.randn(batch_size, self.num_dense, generator=generator)
        ids = self.tables.ids(batch_size, generator)
        logits = self.tables(ids).sum(dim=(1, 2)).unsqueeze(1) * self.sparse_scale + dense @ self.dense_weight
        return Batch((dense, ids), _draw_labels(logits, generator))


class PairTeacher:
    """A user and an item, drawn independently, click with a logit that grows with the dot
    product of latent vectors summed over each side's fields."""

    LATENT_DIM = 8
    LOGIT_SCALE = 3.0

    def __init__(self, config: TwoTowerConfig, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.users = _LatentTables(config.user_vocab_sizes, self.LATENT_DIM, gen)
        self.items = _LatentTables(config.item_vocab_sizes, self.LATENT_DIM, gen)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        users = self.users.ids(batch_size, generator)
        items = self.items.ids(batch_size, generator)
        u = self.users(users).sum(1) / users.shape[1] ** 0.5
        v = self.items(items).sum(1) / items.shape[1] ** 0.5
        logits = (u * v).sum(1, keepdim=True) * self.LOGIT_SCALE / self.LATENT_DIM**0.5
        return Batch((users, items), _draw_labels(logits, generator))


class _LatentTables:
    """A standard-normal vector of `dim` floats per id of each table."""

    def __init__(self, vocab_sizes: Sequence[int], dim: int, gen: torch.Generator) -> None:
        self.vocab = torch.tensor(vocab_sizes, dtype=torch.int64)
        self.offsets = self.vocab.cumsum(0) - self.vocab
        self.values = torch.randn(int(self.vocab.sum()), dim, generator=gen)

    def ids(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(B, tables) power-law ids, each within its table."""
        u = torch.rand(batch_size, len(self.vocab), generator=generator, dtype=torch.float64)
        return torch.minimum((u**ZIPF_POWER * self.vocab).long(), self.vocab - 1)

    def __call__(self, ids: Tensor) -> Tensor:
        return self.values[ids + self.offsets]


def _draw_labels(logits: Tensor, generator: torch.Generator) -> Tensor:
    return torch.bernoulli(torch.sigmoid(logits), generator=generator)
