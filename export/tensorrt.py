"""ONNX -> TensorRT plan with the `tensorrt` builder API (explicit batch, one optimization
profile spanning batch 1 to `max_batch_size`, a persisted timing cache).

TensorRT 10 takes FP16 as a builder flag; TensorRT 11 removed weak typing, so there the network
is strongly typed and its precision is the ONNX graph's own: `--fp16` then builds from the FP16
ONNX export.
"""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from tritonstack.errors import ExportError
from tritonstack.export import onnx as onnx_exporter
from tritonstack.export.formats import ExportOptions
from tritonstack.formats import Artifact, Format
from tritonstack.runtimes.tensorrt import require_tensorrt
from tritonstack.spec import ModelSpec


def export(model: nn.Module, spec: ModelSpec, out_dir: Path, options: ExportOptions) -> Artifact:
    """Export ONNX to a scratch folder, then build `out_dir/model.plan` from it."""
    require_tensorrt()
    import tensorrt as trt

    check_tensorrt_version(trt.__version__, options)

    with tempfile.TemporaryDirectory(prefix="onnx-for-trt-") as tmp:
        # TensorRT 10 takes FP16 as a builder flag over an FP32 graph; 11 takes the FP16 graph.
        graph_fp16 = options.fp16 and _strongly_typed(trt.__version__)
        onnx_artifact = onnx_exporter.export(model, spec, Path(tmp), replace(options, fp16=graph_fp16))
        return build_engine(onnx_artifact.path, spec, out_dir / Format.TENSORRT.filename, options)


def check_tensorrt_version(installed: str, options: ExportOptions) -> None:
    """Refuse, before any build, a plan the target release's TensorRT would not load: one built
    by another TensorRT, unless built version-compatible by the same major version, no newer."""
    release = options.release
    if release.tensorrt_matches(installed):
        return
    if options.tensorrt.version_compatible and release.runs_version_compatible(installed):
        return
    hint = (
        f"install tensorrt=={release.tensorrt}.*"
        if options.tensorrt.version_compatible
        else f"install tensorrt=={release.tensorrt}.*, or build with --tensorrt-version-compatible from "
        f"TensorRT {release.tensorrt.split('.')[0]}.x up to {release.tensorrt} (the server then needs "
        "--backend-config=tensorrt,version-compatible=true)"
    )
    raise ExportError(
        f"TensorRT {installed} builds plans Triton {release.name}'s TensorRT {release.tensorrt} "
        f"cannot load: {hint}"
    )


def build_engine(onnx_path: Path, spec: ModelSpec, plan_path: Path, options: ExportOptions) -> Artifact:
    """Build and write a serialized engine; reuse and update the timing cache when one is set."""
    require_tensorrt()
    import tensorrt as trt

    trt_options = options.tensorrt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = _strongly_typed(trt.__version__)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{spec.name}: TensorRT cannot parse the ONNX graph: {errors}")
    _check_network_dtypes(network, spec)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, trt_options.workspace_bytes)
    if options.fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if trt_options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if trt_options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    profile = builder.create_optimization_profile()
    opt = min(trt_options.opt_batch_size, spec.max_batch_size)
    for tensor in spec.inputs:
        dims = tuple(1 if d == -1 else d for d in tensor.shape)
        profile.set_shape(tensor.name, (1, *dims), (opt, *dims), (spec.max_batch_size, *dims))
    config.add_optimization_profile(profile)

    cache_path = trt_options.timing_cache
    cache = config.create_timing_cache(
        cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    )
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{spec.name}: TensorRT could not build an engine (see the TensorRT log above)")
    plan_path.write_bytes(bytes(memoryview(plan)))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    details = {
        "tensorrt": trt.__version__,
        "fp16": options.fp16,
        "opt_batch_size": opt,
        "version_compatible": trt_options.version_compatible,
        "triton_release": options.triton_release,
    }
    return Artifact(Format.TENSORRT, plan_path, spec, details)


def _check_network_dtypes(network: Any, spec: ModelSpec) -> None:
    """Triton's tensorrt backend loads only an engine whose input and output dtypes are the
    config's (it casts nothing): checked on the parsed network, before the slow build."""
    import tensorrt as trt

    declared = {t.name: np.dtype(t.dtype) for t in (*spec.inputs, *spec.outputs)}
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    for tensor in (*inputs, *outputs):
        got, want = np.dtype(trt.nptype(tensor.dtype)), declared.get(tensor.name)
        if want is not None and got != want:
            raise ExportError(
                f"{spec.name}: TensorRT makes {tensor.name!r} {got} but the config declares {want}: "
                "Triton's tensorrt backend would refuse the plan; export with matching dtypes"
            )


def _strongly_typed(version: str) -> bool:
    """TensorRT 11 removed weak typing: networks are strongly typed, precision is the graph's."""
    return int(version.split(".")[0]) >= 11
