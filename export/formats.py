"""The artifact formats, what Triton calls them, and the exporter behind each."""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack.errors import UsageError
from tritonstack.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


class Format(str, enum.Enum):
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TENSORRT = "tensorrt"

    @property
    def platform(self) -> str:
        """The `platform` of `config.pbtxt`: Triton's native backend for this format."""
        return _PLATFORMS[self]

    @property
    def filename(self) -> str:
        return _FILENAMES[self]

    @classmethod
    def parse_list(cls, text: str) -> list[Format]:
        """`"onnx,torchscript"` -> formats; an unknown name is a usage error listing the valid ones."""
        formats = []
        for name in filter(None, (part.strip() for part in text.split(","))):
            try:
                formats.append(cls(name))
            except ValueError:
                valid = ", ".join(f.value for f in cls)
                raise UsageError(f"unknown format {name!r}: choose from {valid}") from None
        if not formats:
            raise UsageError("no format given: choose from " + ", ".join(f.value for f in cls))
        return formats


_PLATFORMS = {
    Format.ONNX: "onnxruntime_onnx",
    Format.TORCHSCRIPT: "pytorch_libtorch",
    Format.TENSORRT: "tensorrt_plan",
}
_FILENAMES = {Format.ONNX: "model.onnx", Format.TORCHSCRIPT: "model.pt", Format.TENSORRT: "model.plan"}
# What `export` and the demo produce unless told otherwise: TensorRT needs a GPU and TensorRT.
DEFAULT_FORMATS = (Format.ONNX, Format.TORCHSCRIPT)


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


@dataclass(frozen=True)
class Artifact:
    """An exported model file and what produced it."""

    format: Format
    path: Path
    spec: ModelSpec
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


Exporter = Callable[["nn.Module", ModelSpec, Path, ExportOptions], Artifact]


def exporter(fmt: Format) -> Exporter:
    """The `export` function of `export/<format>.py`, imported only when used."""
    module = importlib.import_module(f"export.{fmt.value}")
    fn: Exporter = module.export
    return fn
