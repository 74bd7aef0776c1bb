"""Custom models: any `package.module:callable` returning an `nn.Module`, with its tensors
given on the command line (`--input name:dtype:dims[:high]`, `--output name`) or declared by
the module itself as a `model_spec` attribute (a `ModelSpec`)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tritonstack.errors import UsageError, first_line
from tritonstack.runtimes.runners import output_tensors
from tritonstack.spec import ModelSpec, TensorSpec


def parse_input(text: str) -> TensorSpec:
    """`ids:int64:4:1000` -> TensorSpec('ids', 'int64', (4,), high=1000); dims separated by commas,
    and so are per-position bounds (`ids:int64:2:10,20`)."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise UsageError(f"--input {text!r}: expected name:dtype:dims[:high], e.g. dense:float32:13")
    name, dtype, dims = parts[:3]
    try:
        shape = tuple(int(d) for d in dims.split(","))
        highs = tuple(int(h) for h in parts[3].split(",")) if len(parts) == 4 else ()
        high = highs[0] if len(highs) == 1 else highs or None
        return TensorSpec(name, dtype, shape, high)
    except ValueError as exc:
        raise UsageError(f"--input {text!r}: {first_line(exc)}") from None


def format_input(tensor: TensorSpec) -> str:
    """The `--input` text `parse_input` reads back as `tensor`."""
    text = f"{tensor.name}:{tensor.dtype}:{','.join(map(str, tensor.shape))}"
    if tensor.high is None:
        return text
    highs = tensor.high if isinstance(tensor.high, tuple) else (tensor.high,)
    return f"{text}:{','.join(map(str, highs))}"


@dataclass(frozen=True)
class CustomArch:
    target: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[str, ...] = ()

    def build(
        self, config: dict[str, Any], name: str | None, max_batch_size: int
    ) -> tuple[nn.Module, ModelSpec]:
        """Call the factory with `config` as keyword arguments and describe the module's tensors."""
        module = _call_factory(self.target, config)
        model_name = name or self.target.rsplit(":", 1)[-1].lower()
        declared = getattr(module, "model_spec", None)
        if isinstance(declared, ModelSpec) and not self.inputs:
            return module, ModelSpec(model_name, declared.inputs, declared.outputs, max_batch_size)
        if not self.inputs or not self.outputs:
            raise UsageError(
                f"{self.target} does not declare model_spec: pass --input name:dtype:dims and --output name"
            )
        return module, ModelSpec(model_name, self.inputs, self._output_specs(module), max_batch_size)

    def _output_specs(self, module: nn.Module) -> tuple[TensorSpec, ...]:
        """Output dtypes and shapes, read off one run on valid random inputs."""
        probe = ModelSpec("probe", self.inputs, tuple(TensorSpec(n, "float32", (1,)) for n in self.outputs))
        feeds = probe.random_inputs(2)
        with torch.inference_mode():
            out = module.eval()(*(torch.from_numpy(feeds[n]) for n in probe.input_names))
        try:
            outs = output_tensors(out)
        except TypeError as exc:
            raise UsageError(f"{self.target}: {exc}") from None
        if len(outs) != len(self.outputs):
            raise UsageError(
                f"{self.target} returns {len(outs)} outputs but {len(self.outputs)} --output given"
            )
        if any(t.dim() < 2 for t in outs):
            raise UsageError(
                f"{self.target}: return outputs shaped (batch, ...), e.g. (batch, 1), not (batch,)"
            )
        return tuple(
            TensorSpec(n, str(t.numpy().dtype), tuple(t.shape[1:]))
            for n, t in zip(self.outputs, outs, strict=True)
        )


def _call_factory(target: str, config: dict[str, Any]) -> nn.Module:
    module_name, sep, attr = target.partition(":")
    if not sep or not attr:
        raise UsageError(f"--arch {target!r}: a custom model is given as package.module:callable")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(
            f"--arch {target!r}: cannot import it ({first_line(exc)}); is it on PYTHONPATH?"
        ) from None
    try:
        module = factory(**config)
    except TypeError as exc:
        raise UsageError(f"--arch {target!r}: {first_line(exc)} — check --config") from None
    if not isinstance(module, nn.Module):
        raise UsageError(f"--arch {target!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module
