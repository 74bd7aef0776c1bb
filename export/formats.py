"""Export options shared by every exporter, and the exporter behind each format."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tritonstack.errors import UsageError
from tritonstack.export.flags import nested, option
from tritonstack.formats import Artifact, Format
from tritonstack.releases import DEFAULT_RELEASE, TritonRelease, triton_release
from tritonstack.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class TensorRTOptions:
    """Builder settings for `--formats tensorrt`."""

    opt_batch_size: int = option(64, "the batch size TensorRT's optimization profile tunes for", metavar="N")
    workspace_bytes: int = option(4 << 30, "TensorRT builder workspace limit in bytes", metavar="BYTES")
    timing_cache: Path | None = option(
        None, "TensorRT timing cache file, read and updated across builds (default: none)", metavar="PATH"
    )
    version_compatible: bool = option(False, "build a plan later TensorRT versions run (lean runtime)")
    hardware_compatible: bool = option(False, "build a plan that runs on any Ampere or newer GPU")

    def __post_init__(self) -> None:
        if self.opt_batch_size < 1 or self.workspace_bytes < 1:
            raise UsageError("--tensorrt-opt-batch-size and --tensorrt-workspace-bytes must be positive")


@dataclass(frozen=True)
class ExportOptions:
    """Options shared by every exporter."""

    triton_release: str = option(
        DEFAULT_RELEASE,
        "the NVIDIA Triton release (YY.MM) the artifacts must load in: its ONNX Runtime's highest "
        "opset, its libtorch's TorchScript format, its TensorRT version",
        metavar="YY.MM",
    )
    opset: int | None = option(
        None, "ONNX opset, 17 or newer (default: the highest --triton-release loads)", metavar="N"
    )
    example_batch_size: int = option(
        2, "batch size of the example inputs the exporters trace with (2 or more)", metavar="N"
    )
    fp16: bool = option(False, "half-precision artifacts (float32 inputs and outputs)")
    tensorrt: TensorRTOptions = nested(TensorRTOptions, prefix="tensorrt-")

    def __post_init__(self) -> None:
        release = self.release  # an unknown release is a usage error here
        if self.opset is not None and self.opset < 17:
            raise UsageError(f"--opset {self.opset}: ONNX opset too old, use 17 or newer")
        if self.opset is not None and self.opset > release.max_opset:
            raise UsageError(
                f"--opset {self.opset}: Triton {release.name}'s ONNX Runtime {release.onnxruntime} loads "
                f"opsets up to {release.max_opset}: use --opset {release.max_opset} or a later "
                "--triton-release"
            )
        if self.example_batch_size < 2:
            # torch.export specialises a dimension seen as 1, which would fix the batch axis.
            raise UsageError("--example-batch-size must be at least 2 so the batch axis stays dynamic")

    @property
    def release(self) -> TritonRelease:
        return triton_release(self.triton_release)

    @property
    def resolved_opset(self) -> int:
        """The opset ONNX exports use: `opset`, or the highest the target release loads."""
        return self.opset if self.opset is not None else self.release.max_opset


Exporter = Callable[["nn.Module", ModelSpec, Path, ExportOptions], Artifact]


def exporter(fmt: Format) -> Exporter:
    """The `export` function of `export/<format>.py`, imported only when used."""
    module = importlib.import_module(f"tritonstack.export.{fmt.value}")
    fn: Exporter = module.export
    return fn
