"""The in-process side of a benchmark: each served model's own artifact in its own runtime, on the
device its config names and with the intra-op threads it gives each instance, and eager PyTorch
where `--reference` asks; or the reason a baseline cannot run here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from tritonstack.benchmarks.config import Reference
from tritonstack.benchmarks.targets import BenchTarget
from tritonstack.errors import ExportError, UsageError, first_line
from tritonstack.export.checkpoint import ModelSource, load_model
from tritonstack.export.custom import CustomArch
from tritonstack.formats import Artifact, Format
from tritonstack.runtimes.runners import OnnxRuntimeRunner, Runner, TorchRunner, TorchScriptRunner, runner_for

log = logging.getLogger(__name__)


def unavailable(target: BenchTarget) -> str | None:
    """Why the target's artifact cannot run in process here, or None when it can."""
    if target.format is None:
        return (
            f"no in-process runtime for backend {target.config.backend or target.config.platform!r}: "
            "only ONNX, TorchScript and TensorRT artifacts have one"
        )
    if target.artifact is None:
        return (
            "no local repository: the config came from the server's model-config RPC and the artifact "
            "is not on this machine (pass --repo with the repository the server serves)"
        )
    if not target.artifact.is_file():
        return f"{target.artifact} does not exist"
    if target.device == "cuda" and not _cuda_available():
        return "its config puts the instances on a GPU and no GPU is visible here"
    return None


def artifact_runner(target: BenchTarget) -> tuple[Runner | None, str | None]:
    """The artifact's runner, or None and the reason it cannot run here."""
    reason = unavailable(target)
    if reason is not None or target.format is None or target.artifact is None:
        return None, reason
    artifact = Artifact(target.format, target.artifact, target.artifact_spec)
    try:
        return in_process_runner(artifact, target.device, target.threads), None
    except ExportError as exc:  # TensorRT missing on this machine: the reason goes in the results
        log.debug("%s cannot run in process", target.name, exc_info=True)
        return None, first_line(exc)


def in_process_runner(artifact: Artifact, device: str, threads: int) -> Runner:
    """The artifact's runtime with `threads` intra-op threads (torch's: under `torch_threads`)."""
    if artifact.format is Format.ONNX:
        return OnnxRuntimeRunner(artifact.path, artifact.spec, threads, device)
    if artifact.format is Format.TORCHSCRIPT:
        return TorchScriptRunner(artifact.path, artifact.spec, device)
    return runner_for(artifact)


def reference_runner(reference: Reference, target: BenchTarget) -> Runner:
    """Eager PyTorch rebuilt from the reference's checkpoint, called like `target`'s artifact: the
    architecture the checkpoint records, a built-in one, or a custom `module:callable` whose
    tensors are the served model's."""
    spec = target.artifact_spec
    if reference.arch is not None and ":" in reference.arch:
        source = ModelSource(custom=CustomArch(reference.arch, spec.inputs, tuple(spec.output_names)))
    else:
        source = ModelSource(arch=reference.arch)
    loaded = load_model(reference.checkpoint, source, name=target.base, max_batch_size=spec.max_batch_size)
    if loaded.spec.input_names != spec.input_names:
        raise UsageError(
            f"--reference {reference}: the checkpoint's model takes {loaded.spec.input_names}, "
            f"{target.name} takes {spec.input_names}"
        )
    return TorchRunner(loaded.module, spec, target.device)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` inside the block (0: left at its default)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
