"""Export options shared by every exporter, and the exporter behind each format."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tritonstack.errors import UsageError
from tritonstack.formats import Artifact, Format
from tritonstack.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class TensorRTOptions:
    """Builder settings for `--formats tensorrt`."""

    opt_batch_size: int = 64  # the batch the optimization profile tunes for
    workspace_bytes: int = 4 << 30
    timing_cache: Path | None = None  # reused and updated across builds when set
    version_compatible: bool = False  # runs on later TensorRT versions (lean runtime)
    hardware_compatible: bool = False  # runs on any Ampere or newer GPU

    def __post_init__(self) -> None:
        if self.opt_batch_size < 1 or self.workspace_bytes < 1:
            raise UsageError("TensorRT opt batch size and workspace must be positive")


@dataclass(frozen=True)
class ExportOptions:
    """Options shared by every exporter."""

    opset: int = 20
    example_batch_size: int = 2
    fp16: bool = False
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise UsageError(f"ONNX opset {self.opset} is too old: use 17 or newer")
        if self.example_batch_size < 2:
            # torch.export specialises a dimension seen as 1, which would fix the batch axis.
            raise UsageError("example_batch_size must be at least 2 so the batch axis stays dynamic")


Exporter = Callable[["nn.Module", ModelSpec, Path, ExportOptions], Artifact]


def exporter(fmt: Format) -> Exporter:
    """The `export` function of `export/<format>.py`, imported only when used."""
    module = importlib.import_module(f"tritonstack.export.{fmt.value}")
    fn: Exporter = module.export
    return fn
