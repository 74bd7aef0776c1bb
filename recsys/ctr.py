"""What DLRM and DCN-V2 share: Criteo-style inputs (dense floats + one id per table), their
config fields and their tensor specs."""

from __future__ import annotations

import dataclasses

from tritonstack.recsys.config import Config, require
from tritonstack.spec import TensorSpec

# Distinct values per categorical column of the Criteo Kaggle display-advertising data set.
CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip


def hashed_vocab_sizes(max_rows: int) -> tuple[int, ...]:
    """Criteo's cardinalities with large columns hashed down to `max_rows` rows, as is usual."""
    return tuple(min(v, max_rows) for v in CRITEO_KAGGLE_CARDINALITIES)


def tiny_vocab_sizes() -> tuple[int, ...]:
    """26 small tables of different sizes, for tests."""
    return tuple(5 + 2 * i for i in range(len(CRITEO_KAGGLE_CARDINALITIES)))


@dataclasses.dataclass(frozen=True)
class CtrConfig(Config):
    """Inputs: `num_dense` float features and one id per table of `vocab_sizes` rows, each
    embedded in `embedding_dim` floats."""

    num_dense: int
    vocab_sizes: tuple[int, ...]
    embedding_dim: int

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.vocab_sizes) > 0, f"{type(self).__name__}.vocab_sizes needs at least one table")


def ctr_inputs(config: CtrConfig) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("dense_features", "float32", (config.num_dense,)),
        TensorSpec("sparse_features", "int64", (len(config.vocab_sizes),), high=config.vocab_sizes),
    )
