"""A version's metadata: where it came from, how it was made and checked, and its place in the
registry. Built here; stored outside the model directories by `export.state`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shlex
from datetime import datetime, timezone
from importlib import metadata as dist
from pathlib import Path
from typing import Any

from tritonstack.export.checkpoint import LoadedModel
from tritonstack.export.custom import format_input
from tritonstack.export.deployment import DeploymentOptions
from tritonstack.export.flags import FORMATS, MAX_BATCH_SIZE, options_argv
from tritonstack.export.formats import ExportOptions
from tritonstack.export.verify import VerificationReport
from tritonstack.formats import Artifact, Format

_PACKAGES = ("torch", "onnx", "onnxruntime")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def options_record(
    fmt: Format, options: ExportOptions, deployment: DeploymentOptions, max_batch_size: int
) -> dict[str, Any]:
    """The export options as plain JSON values: two exports with equal records are the same export."""
    record = {
        "format": fmt.value,
        "max_batch_size": max_batch_size,
        "export": dataclasses.asdict(options),
        "deployment": dataclasses.asdict(deployment),
    }
    plain: dict[str, Any] = json.loads(json.dumps(record, default=str))
    return plain


def export_command(
    loaded: LoadedModel,
    fmt: Format,
    repo: Path,
    options: ExportOptions,
    deployment: DeploymentOptions,
    embeddings: bool,
) -> str:
    """The `tritonstack export` command that exports this model again, as the next version of
    `repo`: the resolved checkpoint, how its model was rebuilt, and every option written out."""
    source = loaded.model_source
    argv = ["tritonstack", "export", str(loaded.source), "--repo", str(repo.absolute())]
    argv += ["--name", loaded.spec.name, *FORMATS.argv((fmt,))]
    argv += MAX_BATCH_SIZE.argv(loaded.spec.max_batch_size)
    if source.custom is not None:
        argv += ["--arch", source.custom.target]
        argv += [arg for t in source.custom.inputs for arg in ("--input", format_input(t))]
        argv += [arg for name in source.custom.outputs for arg in ("--output", name)]
    else:
        argv += ["--arch", source.arch] if source.arch else []
        argv += ["--preset", source.preset] if source.preset else []
    if source.config is not None:
        argv += ["--config", json.dumps(source.config, sort_keys=True)]
    if source.allow_partial:
        argv.append("--allow-partial")
    if embeddings:
        argv.append("--export-embeddings")
    return shlex.join([*argv, *options_argv(options), *options_argv(deployment)])


def build_metadata(
    loaded: LoadedModel,
    source_sha256: str,
    options: dict[str, Any],
    command: str,
    report: VerificationReport,
    artifact: Artifact,
    parameters: int,
) -> dict[str, Any]:
    return {
        "source": {"path": str(loaded.source), "sha256": source_sha256, **loaded.info},
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in _PACKAGES}},
        "opset": artifact.details.get("opset"),  # the resolved one (ONNX and TensorRT)
        "options": options,
        "command": command,  # reproduces the artifact (export_command)
        "verification": {
            "runner": report.runner,
            "passed": report.passed,
            "diffs": [dataclasses.asdict(d) for d in report.diffs],
        },
        "artifact": {
            "file": artifact.path.name,
            "bytes": artifact.size_bytes,
            "sha256": file_sha256(artifact.path),
            **artifact.details,  # the runtime it was built for (opset, TensorRT version, ...)
        },
        "parameters": parameters,
        "status": None,  # production | staging | ab-test, set by `tritonstack models promote`
        "benchmark": None,  # the latest benchmark summary, written by a benchmark run
    }


def _version(package: str) -> str | None:
    try:
        return dist.version(package)
    except dist.PackageNotFoundError:
        return None
