"""Checkpoint -> verified artifacts -> versions in the Triton model repository."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack.errors import ExportError
from tritonstack.export.check_repo import Finding, Severity, check_version, thread_count_findings
from tritonstack.export.checkpoint import LoadedModel
from tritonstack.export.deployment import DeploymentOptions
from tritonstack.export.embeddings import write_embeddings
from tritonstack.export.formats import ExportOptions, exporter
from tritonstack.export.metadata import build_metadata, export_command, file_sha256, options_record
from tritonstack.export.repository import build_config, checked_name, write_version
from tritonstack.export.state import record_export
from tritonstack.export.temporaries import temporary_directory
from tritonstack.export.verify import VerificationReport, check_model_outputs, tolerances, verify
from tritonstack.formats import Format
from tritonstack.runtimes.runners import TorchRunner, runner_for
from tritonstack.spec import CONFIG_NAME

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    model_name: str
    format: Format
    version: int
    version_dir: Path
    artifact_bytes: int
    parameters: int
    report: VerificationReport
    metadata: dict[str, Any] = field(default_factory=dict)  # as recorded in the repository's state
    warnings: tuple[Finding, ...] = ()  # check-repo's warnings on what was published


def repository_name(model: str, fmt: Format) -> str:
    """Each format is its own Triton model: `dlrm_onnx`, `dlrm_torchscript` (a safe path name)."""
    return checked_name(f"{model}_{fmt.value}")


def export_to_repository(
    loaded: LoadedModel,
    formats: Sequence[Format],
    repo: Path,
    *,
    options: ExportOptions | None = None,
    deployment: DeploymentOptions | None = None,
    version: int | None = None,
    overwrite: bool = False,
    embeddings: bool = False,
    on_done: Callable[[ExportResult], None] | None = None,
) -> list[ExportResult]:
    """Export, verify against PyTorch, then publish each format as one complete version directory.

    An artifact that fails verification never reaches the repository. A format that fails does
    not stop the others (TensorRT missing on a CPU machine must not cost the ONNX export); the
    failures are raised together, as one `ExportError`, once every format has been tried.
    With `embeddings`, a two-tower model's embedding tables are published in the same rename as
    the artifact; the version's metadata goes to the repository's state file
    (`export.state`) right after, outside the model directory Triton watches.
    """
    options = options or ExportOptions()
    deployment = deployment or DeploymentOptions()
    for fmt in formats:  # a bad --name is refused before any export work
        repository_name(loaded.spec.name, fmt)
    deployment.check(formats)  # what Triton would refuse is refused before any work
    check_model_outputs(loaded.module, loaded.spec)
    repo.mkdir(parents=True, exist_ok=True)
    with temporary_directory("tritonstack-embeddings-") as tmp:
        extras = write_embeddings(loaded, tmp) if embeddings else {}
        return _export_all_formats(
            loaded, formats, repo, options, deployment, version, overwrite, extras, on_done
        )


def _export_all_formats(
    loaded: LoadedModel,
    formats: Sequence[Format],
    repo: Path,
    options: ExportOptions,
    deployment: DeploymentOptions,
    version: int | None,
    overwrite: bool,
    extras: Mapping[str, Path],
    on_done: Callable[[ExportResult], None] | None,
) -> list[ExportResult]:
    source_sha256 = file_sha256(loaded.source)
    reference = TorchRunner(loaded.module, loaded.spec)
    results = []
    failures: list[ExportError] = []
    for fmt in formats:
        name = repository_name(loaded.spec.name, fmt)
        try:
            result = _export_one(
                loaded,
                fmt,
                name,
                repo,
                options,
                deployment,
                version,
                overwrite,
                reference,
                source_sha256,
                extras,
            )
        except ExportError as exc:
            log.debug("%s failed", name, exc_info=exc)  # `--debug`: each failure's own traceback
            failures.append(exc)
            continue
        if fmt is Format.TORCHSCRIPT:  # one thread count for the whole server: checked across models
            shared = [f for f in thread_count_findings(repo) if f.path.parent.name == name]
            result = dataclasses.replace(result, warnings=(*result.warnings, *shared))
        results.append(result)
        if on_done is not None:
            on_done(result)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ExportError("; ".join(map(str, failures))) from failures[0]
    return results


def _export_one(
    loaded: LoadedModel,
    fmt: Format,
    name: str,
    repo: Path,
    options: ExportOptions,
    deployment: DeploymentOptions,
    version: int | None,
    overwrite: bool,
    reference: TorchRunner,
    source_sha256: str,
    extras: Mapping[str, Path],
) -> ExportResult:
    parameters = sum(p.numel() for p in loaded.module.parameters())
    with temporary_directory(f"tritonstack-{name}-") as tmp:
        artifact = exporter(fmt)(loaded.module, loaded.spec, tmp, options)
        atol, rtol = tolerances(options.fp16)
        report = verify(runner_for(artifact), reference, loaded.spec, atol=atol, rtol=rtol)
        size = artifact.size_bytes
        config = build_config(loaded.spec.renamed(name), fmt, deployment)
        record = options_record(fmt, options, deployment, loaded.spec.max_batch_size)
        command = export_command(loaded, fmt, repo, options, deployment, embeddings=bool(extras))
        metadata = build_metadata(loaded, source_sha256, record, command, report, artifact, parameters)
        warnings = _check_before_publishing(config, tmp, repo / name, options)
        files = {fmt.filename: artifact.path}
        files.update({n: Path(shutil.copy(src, tmp / n)) for n, src in extras.items()})
        version_dir = write_version(
            repo,
            name,
            config,
            files,
            version=version,
            overwrite=overwrite,
            move=True,
        )
    record_export(version_dir, metadata)
    return ExportResult(
        name, fmt, int(version_dir.name), version_dir, size, parameters, report, metadata, warnings
    )


def _check_before_publishing(
    config: pb.ModelConfig, staged: Path, model_dir: Path, options: ExportOptions
) -> tuple[Finding, ...]:
    """check-repo's rules on the staged version: an error (what the target release would refuse)
    stops the export before anything is published; warnings come back with the result."""
    release = options.release
    findings = [
        dataclasses.replace(f, path=model_dir / "<new version>" / f.path.relative_to(staged))
        if f.path.is_relative_to(staged)
        else f
        for f in check_version(config, staged, release, model_dir / CONFIG_NAME)
    ]
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        raise ExportError(f"{model_dir.name}: Triton {release.name} would not load it: {errors[0]}")
    return tuple(findings)
