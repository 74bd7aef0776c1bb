"""PyTorch -> TorchScript by tracing; graph inputs keep `forward`'s argument names, which
Triton's `pytorch_libtorch` backend matches against the config's input names. The archive's
format version must be one the target release's libtorch reads."""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from tritonstack.errors import ExportError, first_line
from tritonstack.export.formats import ExportOptions
from tritonstack.export.precision import half_precision
from tritonstack.formats import Artifact, Format
from tritonstack.runtimes.runners import example_args
from tritonstack.spec import ModelSpec


def export(model: nn.Module, spec: ModelSpec, out_dir: Path, options: ExportOptions) -> Artifact:
    """Write `out_dir/model.pt`, traced at the example batch size with the batch axis left free."""
    path = out_dir / Format.TORCHSCRIPT.filename
    model = half_precision(model) if options.fp16 else model
    args = example_args(spec, options.example_batch_size)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # A trace check re-runs the model; TracerWarnings name data-dependent control flow,
            # which verification against eager PyTorch then catches at two batch sizes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            traced = torch.jit.trace(model, args, check_trace=False)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path))
    except Exception as exc:
        raise ExportError(f"{spec.name}: TorchScript export failed: {first_line(exc)}") from exc
    names = [i.debugName().split(".")[0] for i in list(traced.graph.inputs())[1:]]
    if names != spec.input_names:
        raise ExportError(
            f"{spec.name}: traced inputs are {names}, expected {spec.input_names}: "
            "name forward()'s arguments after the model's inputs"
        )
    release = options.release
    version = archive_format_version(path)
    if version > release.torchscript_max_format:
        raise ExportError(
            f"{spec.name}: torch {torch.__version__} wrote TorchScript format {version}, but Triton "
            f"{release.name}'s libtorch {release.libtorch} reads up to {release.torchscript_max_format}: "
            "export with an older torch or target a later --triton-release"
        )
    details = {
        "torch": torch.__version__,
        "method": "trace",
        "fp16": options.fp16,
        "torchscript_format": version,
        "triton_release": release.name,
    }
    return Artifact(Format.TORCHSCRIPT, path, spec, details)


def archive_format_version(path: Path) -> int:
    """The format version a TorchScript archive records (`<archive>/version`), which libtorch
    compares with the highest it reads before loading anything else."""
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/version")), None)
        if name is None:
            raise ExportError(f"{path} is not a TorchScript archive: it records no format version")
        return int(archive.read(name).decode().strip())
