"""The artifact formats: what Triton calls each (platform, file name, thread parameters), in one table.

Every stage reads these facts from here: the exporter names files, the repository writer fills
`platform` and the threads, our backends find their file and threads, the benchmarks pick runtimes.
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
        """The file Triton's native backend loads from a version directory."""
        return _FILENAMES[self]

    @property
    def thread_parameters(self) -> tuple[str, str] | None:
        """The config parameters (intra-op, inter-op) that the native backend reads its thread
        counts from (0 or absent: the runtime's default); None when it reads none."""
        return _THREAD_PARAMETERS.get(self)

    @classmethod
    def parse_list(cls, text: str) -> list[Format]:
        """`"onnx,torchscript"` -> formats; an unknown name is a usage error listing the valid ones."""
        formats = []
        for name in filter(None, (part.strip() for part in text.split(","))):
            try:
                formats.append(cls(name))
            except ValueError as exc:
                valid = ", ".join(f.value for f in cls)
                raise UsageError(f"unknown format {name!r}: choose from {valid}") from exc
        if not formats:
            raise UsageError("no format given: choose from " + ", ".join(f.value for f in cls))
        return formats


_PLATFORMS = {
    Format.ONNX: "onnxruntime_onnx",
    Format.TORCHSCRIPT: "pytorch_libtorch",
    Format.TENSORRT: "tensorrt_plan",
}
_FILENAMES = {Format.ONNX: "model.onnx", Format.TORCHSCRIPT: "model.pt", Format.TENSORRT: "model.plan"}
# Thread counts live in config.pbtxt under the keys Triton's native backends read, so the same
# repository runs with the same threads on them and on ours. The onnxruntime backend sets both on
# each model's own session. The pytorch backend calls at::set_num_threads with the intra-op count
# on every model load, which sets the pool of the whole server process: the TorchScript model
# loaded last decides for all of them (in 24.10). With the inter-op count it calls
# at::set_num_interop_threads, which throws on its second call past every handler (std::terminate,
# until pytorch_backend 25.11): a second TorchScript model, or any reload, aborts Triton 24.10. So
# it is never written, and our pytorch backend refuses a config that sets it.
_THREAD_PARAMETERS = {
    Format.ONNX: ("intra_op_thread_count", "inter_op_thread_count"),
    Format.TORCHSCRIPT: ("INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT"),
}
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
