"""Model repositories for the reliability, hostile-input and failover tests: every reference
model (tiny preset, briefly trained) in every default format, and a TorchScript model whose
forward raises for a marker value."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tritonstack import recsys
from tritonstack.export.checkpoint import load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import DEFAULT_FORMATS, Format
from tritonstack.recsys.train import train
from tritonstack.spec import ModelSpec, TensorSpec

MARKER = 13.0
FRAGILE = ModelSpec(
    "fragile",
    (TensorSpec("x", "float32", (4,)),),
    (TensorSpec("y", "float32", (4,)),),
    max_batch_size=8,
)


class Fragile(nn.Module):
    """Doubles its input, and raises inside the backend's `execute()` when it sees `MARKER`."""

    def __init__(self) -> None:
        super().__init__()
        self.marker = MARKER  # an attribute: TorchScript cannot read module globals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == self.marker).any()):
            raise RuntimeError("fragile: marker value in the input")
        return x * 2.0


def write_reference_models(
    repo: Path, work: Path, names: tuple[str, ...] = tuple(recsys.ARCHITECTURES), max_batch_size: int = 16
) -> list[str]:
    """Train and export `names` into `repo`; returns the repository's model names."""
    served = []
    for name in names:
        checkpoint = work / f"{name}.pt"
        preset = recsys.get_architecture(name).preset("tiny")
        train(name, preset, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=checkpoint)
        loaded = load_model(checkpoint, max_batch_size=max_batch_size)
        served += [r.model_name for r in export_to_repository(loaded, DEFAULT_FORMATS, repo)]
    return served


def write_fragile_model(repo: Path, work: Path) -> str:
    path = work / "fragile.pt"
    torch.jit.script(Fragile()).save(str(path))  # type: ignore[no-untyped-call]
    write_version(repo, FRAGILE.name, build_config(FRAGILE, Format.TORCHSCRIPT), {"model.pt": path})
    return FRAGILE.name


# The smallest servable model: the client and packaging tests serve it.
TINY_SPEC = ModelSpec(
    "tiny_linear",
    (TensorSpec("x", "float32", (4,)),),
    (TensorSpec("y", "float32", (2,)),),
    max_batch_size=8,
)


class TinyLinear(nn.Linear):
    """`nn.Linear` with its argument named as the spec's input: the exporter keys dynamic axes by name."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
