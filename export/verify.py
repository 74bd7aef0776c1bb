"""Verification: the same inputs through PyTorch and an artifact's runtime, every output compared.

Tolerances follow the reference tools (Polygraphy uses atol = rtol = 1e-5, HF Optimum 1e-5 with
per-model overrides up to 3e-4). An element fails when |got - want| > atol + rtol * |want|.
Float32 exports of these models agree to about 1e-6; the defaults leave room for reordered
reductions without hiding a wrong graph.
"""

from __future__ import annotations

from tritonstack.export import _extra  # noqa: F401  (first: the 'export' extra, or one error naming it)

# isort: split

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tritonstack.errors import ExportError, VerificationError
from tritonstack.runtimes.runners import Runner, example_args, output_tensors
from tritonstack.spec import Array, ModelSpec

ATOL = 1e-4
RTOL = 1e-3
# FP16 artifacts (half weights and activations, float32 at the boundary): half's 10-bit mantissa
# gives ~1e-3 relative error per op; measured max abs diffs on the reference models are 1e-4..1e-3.
ATOL_FP16 = 1e-2
RTOL_FP16 = 1e-2


def tolerances(fp16: bool) -> tuple[float, float]:
    """(atol, rtol) for an artifact of the given precision."""
    return (ATOL_FP16, RTOL_FP16) if fp16 else (ATOL, RTOL)


@dataclass(frozen=True)
class OutputDiff:
    name: str
    batch_size: int
    max_abs: float
    max_rel: float
    passed: bool


@dataclass(frozen=True)
class VerificationReport:
    runner: str
    diffs: tuple[OutputDiff, ...]

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs)

    @property
    def max_abs(self) -> float:
        return max(d.max_abs for d in self.diffs)

    @property
    def max_rel(self) -> float:
        return max(d.max_rel for d in self.diffs)


def compare(
    name: str, got: Array, want: Array, atol: float = ATOL, rtol: float = RTOL
) -> tuple[float, float, bool]:
    """Max absolute and relative difference of two arrays, and whether they agree."""
    if got.shape != want.shape:
        raise VerificationError(f"output {name!r}: shape {got.shape} differs from PyTorch's {want.shape}")
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(got64), np.isnan(want64)):
        return float("nan"), float("nan"), False
    err = np.abs(np.nan_to_num(got64 - want64))
    rel = err / np.maximum(np.abs(want64), np.finfo(np.float32).tiny)
    passed = bool(np.all(err <= atol + rtol * np.abs(want64)))
    return float(err.max(initial=0.0)), float(rel.max(initial=0.0)), passed


def check_model_outputs(module: nn.Module, spec: ModelSpec) -> None:
    """One eager run before any export: `forward` must return what Triton's backends take (a
    Tensor or a tuple of Tensors, one per output of the spec, of the spec's dtypes); raise an
    `ExportError` naming the fix otherwise."""
    with torch.inference_mode():
        result = module.eval()(*example_args(spec, 2))
    try:
        outputs = output_tensors(result, spec.output_names)
    except TypeError as exc:
        raise ExportError(f"{spec.name}: {exc}") from exc
    check_dtypes(spec, dict(zip(spec.output_names, (t.numpy() for t in outputs), strict=True)), "pytorch")


def check_dtypes(spec: ModelSpec, outputs: Mapping[str, Array], runner: str) -> None:
    """Raise a `VerificationError` unless every output has the dtype config.pbtxt will declare:
    Triton's native backends never cast an output (onnxruntime and tensorrt refuse to load the
    model, pytorch fails every request)."""
    for tensor in spec.outputs:
        got = outputs[tensor.name].dtype
        if got != np.dtype(tensor.dtype):
            raise VerificationError(
                f"{spec.name}: {runner} returns output {tensor.name!r} as {got} but the config declares "
                f"{tensor.dtype}: return {tensor.dtype} from forward() (e.g. .to(torch.{tensor.dtype})) "
                f"or declare the output as {got}"
            )


def verify(
    candidate: Runner,
    reference: Runner,
    spec: ModelSpec,
    batch_sizes: tuple[int, ...] | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
    seed: int = 0,
) -> VerificationReport:
    """Compare every output at batch 1 and at the maximum batch (by default); raise
    `VerificationError` listing every output over tolerance."""
    sizes = batch_sizes or (1, spec.max_batch_size)
    diffs = []
    for batch in sizes:
        feeds = spec.random_inputs(batch, seed + batch)
        got = candidate.infer(feeds)
        check_dtypes(spec, got, candidate.name)
        diffs.extend(_diff_outputs(got, reference.infer(feeds), batch, atol, rtol))
    report = VerificationReport(candidate.name, tuple(diffs))
    if not report.passed:
        failed = "; ".join(
            f"{d.name} at batch {d.batch_size}: max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}"
            for d in report.diffs
            if not d.passed
        )
        raise VerificationError(
            f"{spec.name}: {candidate.name} disagrees with PyTorch beyond atol={atol:g}, rtol={rtol:g}: "
            + failed
        )
    return report


def _diff_outputs(
    got: Mapping[str, Array], want: Mapping[str, Array], batch: int, atol: float, rtol: float
) -> list[OutputDiff]:
    diffs = []
    for name, expected in want.items():
        if name not in got:
            raise VerificationError(f"output {name!r} is missing from the artifact's outputs {sorted(got)}")
        max_abs, max_rel, passed = compare(name, got[name], expected, atol, rtol)
        diffs.append(OutputDiff(name, batch, max_abs, max_rel, passed))
    return diffs
