"""Small custom models for the `--arch package.module:callable` path."""

from __future__ import annotations

import torch
from torch import nn

from tritonstack.spec import ModelSpec, TensorSpec


class Scorer(nn.Module):
    """Ids through an embedding, summed, joined with dense features, scored."""

    def __init__(self, vocab: int = 50, width: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.lin = nn.Linear(width + 4, 1)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.lin(torch.cat([self.emb(ids).sum(1), dense], 1)))


def make_scorer(vocab: int = 50, width: int = 8) -> Scorer:
    return Scorer(vocab, width)


class SelfDescribing(Scorer):
    model_spec = ModelSpec(
        "self_describing",
        (TensorSpec("ids", "int64", (3,), high=50), TensorSpec("dense", "float32", (4,))),
        (TensorSpec("score", "float32", (1,)),),
    )


def make_self_describing() -> SelfDescribing:
    return SelfDescribing()


def not_a_module() -> str:
    return "not a module"


SCORE_SPEC = SelfDescribing.model_spec


class DictScorer(Scorer):
    """Returns its score in a dict, which Triton's pytorch backend refuses."""

    model_spec = SCORE_SPEC

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"score": super().forward(ids, dense)}


class ListScorer(Scorer):
    """Returns its score in a list, which Triton's pytorch backend refuses."""

    model_spec = SCORE_SPEC

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return [super().forward(ids, dense)]


class DoubleScorer(Scorer):
    """Returns float64 where its spec declares float32."""

    model_spec = SCORE_SPEC

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return super().forward(ids, dense).double()


def make_dict_scorer() -> DictScorer:
    return DictScorer()


def make_list_scorer() -> ListScorer:
    return ListScorer()


def make_double_scorer() -> DoubleScorer:
    return DoubleScorer()


def make_broken_scorer(vocab: int = 50, width: int = 8) -> Scorer:
    """A factory with a bug of its own: its TypeError is not about the arguments it was given."""
    return Scorer(vocab, str(width))  # type: ignore[arg-type]


NOT_CALLABLE = 3
