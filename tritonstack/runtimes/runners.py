"""Runners: one interface, `infer(feeds) -> outputs`, for every way to execute a model in process.

Verification and benchmarks loop over runners instead of special-casing each runtime.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from tritonstack.formats import Artifact, Format
from tritonstack.spec import Array, ModelSpec

Arrays = dict[str, Array]


class Runner(Protocol):
    name: str

    def infer(self, feeds: Mapping[str, Array]) -> Arrays: ...


def example_args(spec: ModelSpec, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Valid example inputs as tensors, in `forward`'s argument order."""
    feeds = spec.random_inputs(batch_size, seed)
    return tuple(torch.from_numpy(feeds[name]) for name in spec.input_names)


def output_tensors(result: object, names: Sequence[str] | None = None) -> tuple[torch.Tensor, ...]:
    """`forward`'s result as Triton's pytorch backend takes it: a Tensor, or a tuple of Tensors
    (one per output, in config order). It fails a request whose model returns a list or a dict of
    Tensors, so every runner here refuses them too, with the fix; with `names` (the outputs), a
    result with another number of tensors too."""
    if isinstance(result, torch.Tensor):
        tensors: tuple[torch.Tensor, ...] = (result,)
    elif isinstance(result, tuple) and all(isinstance(t, torch.Tensor) for t in result):
        tensors = result
    else:
        raise TypeError(
            f"forward() returns a {type(result).__name__}: Triton's pytorch backend takes a Tensor or a "
            "tuple of Tensors, one per output in config order (e.g. return out['score'], out['embedding'])"
        )
    if names is not None and len(tensors) != len(names):
        raise TypeError(
            f"forward() returns {len(tensors)} tensors but the model has {len(names)} outputs "
            f"{list(names)}: return one tensor per output"
        )
    return tensors


class _TorchModuleRunner:
    """Runs an `nn.Module` (eager or TorchScript) in float32 with autocast off, on `device`;
    host arrays in and out, so a GPU run pays the same copies as a served one."""

    def __init__(self, name: str, module: nn.Module, spec: ModelSpec, device: str = "cpu") -> None:
        self.name = name
        self._device = torch.device(device)
        # A copy on the GPU: `.to` moves a module in place, and the caller's stays the CPU reference.
        self._module = (
            module if self._device.type == "cpu" else copy.deepcopy(module).to(self._device)
        ).eval()
        self._spec = spec

    def infer(self, feeds: Mapping[str, Array]) -> Arrays:
        args = [
            torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self._device) for n in self._spec.input_names
        ]
        with torch.inference_mode(), torch.autocast(self._device.type, enabled=False):
            out = self._module(*args)
        outs = output_tensors(out)
        return {n: t.detach().cpu().numpy() for n, t in zip(self._spec.output_names, outs, strict=True)}


class TorchRunner(_TorchModuleRunner):
    """Eager PyTorch: the reference every artifact is checked against."""

    def __init__(self, module: nn.Module, spec: ModelSpec, device: str = "cpu") -> None:
        super().__init__("pytorch", module, spec, device)


class TorchScriptRunner(_TorchModuleRunner):
    def __init__(self, path: Path, spec: ModelSpec, device: str = "cpu") -> None:
        module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        super().__init__("torchscript", module, spec, device)


class OnnxRuntimeRunner:
    def __init__(self, path: Path, spec: ModelSpec, intra_op_threads: int = 0, device: str = "cpu") -> None:
        import onnxruntime as ort

        self.name = "onnxruntime"
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list[str] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        self._spec = spec

    def infer(self, feeds: Mapping[str, Array]) -> Arrays:
        outs = self._session.run(self._spec.output_names, {n: feeds[n] for n in self._spec.input_names})
        return dict(zip(self._spec.output_names, outs, strict=True))


class TensorRTRunner:
    def __init__(self, path: Path, spec: ModelSpec, device_id: int = 0) -> None:
        from tritonstack.runtimes.tensorrt import TensorRTEngine

        self.name = "tensorrt"
        self._engine = TensorRTEngine(path, device_id)
        self._spec = spec

    def infer(self, feeds: Mapping[str, Array]) -> Arrays:
        outs = self._engine.infer([feeds[n] for n in self._engine.input_names])
        return dict(zip(self._engine.output_names, outs, strict=True))


def runner_for(artifact: Artifact) -> Runner:
    """The in-process runner of an artifact's own runtime."""
    if artifact.format is Format.ONNX:
        return OnnxRuntimeRunner(artifact.path, artifact.spec)
    if artifact.format is Format.TENSORRT:
        return TensorRTRunner(artifact.path, artifact.spec)
    return TorchScriptRunner(artifact.path, artifact.spec)
