"""Export every checkpoint under a folder, each as the next version of its model.

A checkpoint already exported with the same options (same source sha256 and options record in
some version's metadata) is skipped unless forced; a failure is recorded and the batch
goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tritonstack.errors import first_line
from tritonstack.export.checkpoint import ModelSource, load_model, resolve_checkpoint
from tritonstack.export.deployment import DeploymentOptions
from tritonstack.export.formats import ExportOptions
from tritonstack.export.metadata import file_sha256, options_record
from tritonstack.export.pipeline import ExportResult, export_to_repository
from tritonstack.export.state import MetadataError, read_metadata
from tritonstack.formats import Format
from tritonstack.spec import DEFAULT_MAX_BATCH_SIZE

log = logging.getLogger(__name__)

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt")
_SUFFIXES = (".pt", ".pth", ".safetensors")


@dataclass
class BatchSummary:
    converted: list[tuple[Path, list[ExportResult]]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.converted) + len(self.skipped) + len(self.failed)


def find_checkpoints(root: Path) -> list[Path]:
    """Training output folders (holding a weights file) and checkpoint files, sorted. Symlinks and
    pointer files are aliases of checkpoints found anyway; a folder's other files (optimizer
    state) are not checkpoints."""
    return sorted(_walk(Path(root)))


def _walk(folder: Path) -> Iterator[Path]:
    if any((folder / name).is_file() for name in _WEIGHT_FILES):
        yield folder
        return
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.suffix in _SUFFIXES:
            yield entry


def exported_version(repo: Path, source_sha256: str, record: dict[str, object]) -> Path | None:
    """A version directory already holding this checkpoint exported with these options."""
    for version_dir in sorted(Path(repo).glob("*/[0-9]*")):
        try:
            meta = read_metadata(version_dir) if version_dir.is_dir() else None
        except MetadataError as exc:  # that version alone: it is not taken as this export
            log.warning("%s", exc)
            continue
        if meta and meta.get("source", {}).get("sha256") == source_sha256 and meta.get("options") == record:
            return version_dir
    return None


def export_all(
    root: Path,
    formats: Sequence[Format],
    repo: Path,
    *,
    source: ModelSource | None = None,
    options: ExportOptions | None = None,
    deployment: DeploymentOptions | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    force: bool = False,
    on_item: Callable[[Path], None] | None = None,
) -> BatchSummary:
    """Export each checkpoint under `root` in the formats not yet exported with these options."""
    options = options or ExportOptions()
    deployment = deployment or DeploymentOptions()
    deployment.check(formats)  # a usage error, not one failure per checkpoint
    summary = BatchSummary()
    for path in find_checkpoints(root):
        try:
            sha = file_sha256(resolve_checkpoint(path))
            todo = [
                fmt
                for fmt in formats
                if force
                or exported_version(repo, sha, options_record(fmt, options, deployment, max_batch_size))
                is None
            ]
            if todo:
                loaded = load_model(path, source or ModelSource(), max_batch_size=max_batch_size)
                results = export_to_repository(loaded, todo, repo, options=options, deployment=deployment)
                summary.converted.append((path, results))
            else:
                summary.skipped.append((path, "already exported with these options"))
        except Exception as exc:  # one bad checkpoint must not stop the batch
            log.debug("%s failed", path, exc_info=exc)  # `--debug`: its traceback, causes included
            summary.failed.append((path, first_line(exc)))
        if on_item is not None:
            on_item(path)
    return summary
