"""FP16 artifacts with float32 inputs and outputs at the boundary, so clients and configs do not
change with precision: weights and activations are half, the casts are part of the graph."""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

import copy

import torch
from torch import nn


def half_precision(model: nn.Module) -> nn.Module:
    """A half-precision copy of `model` whose float inputs are cast to half and whose outputs
    are cast back to float32. The hooks are traced into TorchScript and ONNX graphs, and the
    argument names of `forward` stay as they are (the exporters name inputs after them)."""
    half = copy.deepcopy(model).half().eval()
    half.register_forward_pre_hook(_inputs_to_half)
    half.register_forward_hook(_outputs_to_float)
    return half


def _inputs_to_half(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(a.half() if a.is_floating_point() else a for a in args)


def _outputs_to_float(module: nn.Module, args: object, output: object) -> object:
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (tuple, list)):
        return type(output)(o.float() if isinstance(o, torch.Tensor) else o for o in output)
    return output
