"""PyTorch -> ONNX with named tensors and a dynamic batch axis, checked by `onnx.checker`, stamped
with an opset and IR version the target Triton release's ONNX Runtime loads."""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import contextlib
import hashlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch
from torch import nn

from tritonstack.errors import ExportError, first_line
from tritonstack.export.formats import ExportOptions
from tritonstack.export.precision import half_precision
from tritonstack.formats import Artifact, Format
from tritonstack.runtimes.runners import example_args
from tritonstack.spec import ModelSpec


def export(model: nn.Module, spec: ModelSpec, out_dir: Path, options: ExportOptions) -> Artifact:
    """Write `out_dir/model.onnx` with the torch.export-based exporter (torch's default since 2.9)
    at `options.resolved_opset`."""
    path = out_dir / Format.ONNX.filename
    model = half_precision(model) if options.fp16 else model
    batch = torch.export.Dim("batch", min=1, max=spec.max_batch_size)
    dynamic_shapes = {t.name: {0: batch} for t in spec.inputs}
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model,
                example_args(spec, options.example_batch_size),
                str(path),
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=options.resolved_opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        ir_version = _stamp_for_release(path, spec, options)
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{spec.name}: ONNX export failed: {first_line(exc)}") from exc
    _check_names(path, spec)
    details = {
        "opset": options.resolved_opset,
        "ir_version": ir_version,
        "onnx": onnx.__version__,
        "fp16": options.fp16,
        "triton_release": options.triton_release,
    }
    return Artifact(Format.ONNX, path, spec, details)


def _stamp_for_release(path: Path, spec: ModelSpec, options: ExportOptions) -> int:
    """Cap the IR version at what the release's ONNX Runtime loads (an IR bump of the exporter
    changes nothing an opset within the release's range uses), and name the graph after its
    content: ONNX Runtime's TensorRT engine cache names engines after the graph's name and
    tensor names, so two models or versions with one architecture but other weights would
    otherwise share (and load) one engine. Returns the IR version written."""
    model = onnx.load(str(path), load_external_data=False)
    model.ir_version = min(model.ir_version, options.release.max_ir_version)
    model.graph.name = ""
    digest = hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()[:16]
    model.graph.name = f"{spec.name}_{digest}"
    onnx.save(model, str(path))
    return int(model.ir_version)


def _check_names(path: Path, spec: ModelSpec) -> None:
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != spec.input_names or outputs != spec.output_names:
        raise ExportError(
            f"{spec.name}: ONNX graph has inputs {inputs} and outputs {outputs}, expected "
            f"{spec.input_names} and {spec.output_names}: does forward() take exactly the spec's inputs?"
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter that is no fault of the model (missing torchvision ops,
    renamed dynamic axes); real problems still raise."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        registration.setLevel(level)
