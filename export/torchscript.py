"""PyTorch -> TorchScript by tracing; graph inputs keep `forward`'s argument names, which
Triton's `pytorch_libtorch` backend matches against the config's input names."""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import warnings
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
    return Artifact(
        Format.TORCHSCRIPT, path, spec, {"torch": torch.__version__, "method": "trace", "fp16": options.fp16}
    )
