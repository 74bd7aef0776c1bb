"""Custom models: any `package.module:callable` returning an `nn.Module`, with its tensors
given on the command line (`--input name:dtype:dims[:high]`, `--output name`) or declared by
the module itself as a `model_spec` attribute (a `ModelSpec`)."""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tritonstack.errors import UsageError, first_line
from tritonstack.runtimes.runners import example_args, output_tensors
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
        raise UsageError(f"--input {text!r}: {first_line(exc)}") from exc


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

    def __post_init__(self) -> None:
        """`--input` and `--output` are checked as the spec checks them, before the factory runs."""
        try:
            for name in self.outputs:
                TensorSpec(name, "float32", (1,))
            if self.inputs and self.outputs:
                self._probe()  # names unique across inputs and outputs
        except ValueError as exc:
            raise UsageError(f"--input/--output of {self.target}: {first_line(exc)}") from exc

    def build(
        self, config: dict[str, Any], name: str | None, max_batch_size: int
    ) -> tuple[nn.Module, ModelSpec]:
        """Call the factory with `config` as keyword arguments and describe the module's tensors."""
        module = _call_factory(self.target, config)
        model_name = name or self.target.rsplit(":", 1)[-1].lower()
        declared = getattr(module, "model_spec", None)
        if isinstance(declared, ModelSpec) and not self.inputs:
            inputs, outputs = declared.inputs, declared.outputs
        elif not self.inputs or not self.outputs:
            raise UsageError(
                f"{self.target} does not declare model_spec: pass --input name:dtype:dims and --output name"
            )
        else:
            inputs, outputs = self.inputs, self._output_specs(module)
        return module, ModelSpec(model_name, inputs, outputs, max_batch_size)

    def _probe(self) -> ModelSpec:
        """The given tensors, outputs as float32 placeholders."""
        return ModelSpec("probe", self.inputs, tuple(TensorSpec(n, "float32", (1,)) for n in self.outputs))

    def _output_specs(self, module: nn.Module) -> tuple[TensorSpec, ...]:
        """Output dtypes and shapes, read off one run on valid random inputs."""
        try:
            with torch.inference_mode():
                out = module.eval()(*example_args(self._probe(), 2))
        except Exception as exc:  # the user's forward: most often, --input shapes it does not take
            raise UsageError(
                f"{self.target}: a forward pass on random inputs shaped as --input raised {_described(exc)}"
            ) from exc
        try:
            outs = output_tensors(out, self.outputs)
        except TypeError as exc:
            raise UsageError(f"{self.target}: {exc}") from exc
        if not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in outs):
            raise UsageError(
                f"{self.target}: return tensors shaped (batch, ...), e.g. (batch, 1), not (batch,)"
            )
        return tuple(
            TensorSpec(n, str(t.numpy().dtype), tuple(t.shape[1:]))
            for n, t in zip(self.outputs, outs, strict=True)
        )


def _call_factory(target: str, config: dict[str, Any]) -> nn.Module:
    """Import the factory and call it. Only what the user must fix on the command line is blamed
    on it (a module not on the path, `--config` keys the factory does not take); an error raised
    by the factory's own code, or its module's, is reported as that error, chained."""
    factory = _import_factory(target)
    try:
        inspect.signature(factory).bind(**config)
    except TypeError as exc:
        raise UsageError(f"--arch {target!r}: --config does not fit its arguments: {exc}") from exc
    except ValueError:  # no signature to check (some builtins): the call itself will tell
        pass
    try:
        module = factory(**config)
    except Exception as exc:
        raise UsageError(f"--arch {target!r}: the factory raised {_described(exc)}") from exc
    if not isinstance(module, nn.Module):
        raise UsageError(f"--arch {target!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _import_factory(target: str) -> Callable[..., Any]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--arch {target!r}: a custom model is given as package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and f"{module_name}.".startswith(f"{missing}."):
            raise UsageError(f"--arch {target!r}: cannot import {missing!r}: is it on PYTHONPATH?") from exc
        raise UsageError(f"--arch {target!r}: importing {module_name} raised {_described(exc)}") from exc
    if not hasattr(module, attr):
        raise UsageError(f"--arch {target!r}: module {module_name} has no {attr!r}")
    factory: Callable[..., Any] = getattr(module, attr)
    if not callable(factory):
        raise UsageError(f"--arch {target!r}: {attr} is a {type(factory).__name__}, not a callable")
    return factory


def _described(exc: BaseException) -> str:
    """`TypeError: message`, pointing to the traceback that shows where in the user's code."""
    return f"{type(exc).__name__}: {first_line(exc)} (--debug shows its traceback)"
