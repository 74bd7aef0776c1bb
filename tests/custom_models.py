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


# User-style models that are not recommendation models, exported with `--arch module:callable`
# and benchmarked from their repository configs alone (tests/test_bench_models.py).


class ConvNet(nn.Module):
    """A small CNN on 3x32x32 images: logits over 10 classes."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(image).mean(dim=(2, 3)))
        return logits


def make_conv() -> ConvNet:
    return ConvNet()


class TokenClassifier(nn.Module):
    """A one-layer transformer encoder over token ids, mean-pooled into class logits."""

    def __init__(self, vocab: int = 100, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.encoder = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=32, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.encoder(self.embed(tokens)).mean(dim=1))
        return logits


def make_transformer() -> TokenClassifier:
    return TokenClassifier()


class MixedIO(nn.Module):
    """Several inputs and outputs of mixed dtypes and ranks: a float32 image (rank 4 with the batch),
    int64 ids with a range, a bool mask and a float16 scale in; a float32 score, an int64 count and
    float16 features out."""

    def __init__(self, vocab: int = 30) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 4)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.score = nn.Linear(8, 1)

    def forward(
        self, image: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seen = self.embed(ids) * mask.unsqueeze(-1).float()
        features = torch.cat([self.conv(image).mean(dim=(2, 3)), seen.sum(1)], 1) * scale.float()
        return torch.sigmoid(self.score(features)), mask.sum(1, keepdim=True), features.half()


def make_mixed_io() -> MixedIO:
    return MixedIO()
