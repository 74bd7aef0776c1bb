"""The artifact formats: what Triton calls each (platform, backend, file name), in one table.

Every stage reads these facts from here: the exporter names files, the repository writer fills
`platform`, our backends and the repository lint check them, the benchmarks pick runtimes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonstack.errors import UsageError
from tritonstack.spec import ModelSpec


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
class Artifact:
    """An exported model file and what produced it."""

    format: Format
    path: Path
    spec: ModelSpec
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size
