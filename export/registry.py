"""The model registry kept in the repository itself: each version's status lives in the
repository's state file (`export.state`, outside the model directories, so recording a status
reloads nothing), and `config.pbtxt`'s `version_policy` decides what Triton loads.

Triton routes a request without a version to the highest *loaded* version. Once any version has a
status, the policy becomes `specific { versions: [...] }` listing exactly the production, staging
and ab-test versions: unlisted versions are not loaded, listed ones answer requests for their
version number, and an unversioned request goes to the highest listed one. Production is
Triton's default only while it is the highest listed version; `default_version` says which one
Triton picks. So the production version is also recorded in the config's parameters
(`tritonstack.production_version`), written in the same atomic replace as the policy: our clients
read it with the model's spec and send unversioned requests there (`client_default_version`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from tritonstack.errors import UsageError
from tritonstack.export.repository import list_versions, write_config
from tritonstack.export.state import MetadataError, forget_version, read_metadata, update_metadata
from tritonstack.export.temporaries import signals_held
from tritonstack.formats import Format
from tritonstack.spec import CONFIG_NAME, PRODUCTION_VERSION_PARAMETER, production_version, read_config

STATUSES = ("production", "staging", "ab-test")
# A version without metadata (copied or written by hand) shows its config's format.
_FORMAT_NAMES = {f.platform: f.value for f in Format}


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    format: str
    size_bytes: int
    latency_ms: float | None  # p50 of the version's latest benchmark summary
    status: str | None
    notes: str
    readable: bool = True  # False: its metadata is unreadable (its status unknown: never pruned)


def list_registry(repo: Path) -> list[ModelVersion]:
    """Every version of every model in the repository, by model then version."""
    rows = []
    for model_dir in sorted(p for p in Path(repo).iterdir() if (p / CONFIG_NAME).is_file()):
        platform = read_config(model_dir / CONFIG_NAME).platform or "?"
        policy = served_versions(repo, model_dir.name)
        defaults = _default_notes(repo, model_dir.name)
        for version in list_versions(repo, model_dir.name):
            rows.append(_row(model_dir / str(version), platform, policy, defaults.get(version)))
    return rows


def _default_notes(repo: Path, model: str) -> dict[int | None, str]:
    """Which version answers unversioned requests: one `default`, or one for our clients and
    another for other Triton clients."""
    triton, ours = default_version(repo, model), client_default_version(repo, model)
    if ours == triton:
        return {triton: "default"}
    return {ours: "default (tritonstack clients)", triton: "default (other clients)"}


def _row(version_dir: Path, platform: str, served: list[int] | None, default: str | None) -> ModelVersion:
    version = int(version_dir.name)
    notes = []
    try:
        meta = read_metadata(version_dir) or {}
    except MetadataError as exc:
        meta, readable = {}, False
        notes.append(f"unreadable metadata: {exc}")
    else:
        readable = True
        if not meta:
            notes.append("no metadata")
    if served is not None and version not in served:
        notes.append("not loaded")
    if default is not None:
        notes.append(default)
    if meta.get("source", {}).get("not_loaded"):
        notes.append("partial weights")
    benchmark: dict[str, Any] = meta.get("benchmark") or {}
    size = sum(f.stat().st_size for f in version_dir.iterdir() if f.is_file())
    return ModelVersion(
        version_dir.parent.name,
        version,
        meta.get("options", {}).get("format", _FORMAT_NAMES.get(platform, platform)),
        meta.get("artifact", {}).get("bytes", size),
        benchmark.get("p50_ms"),
        meta.get("status"),
        ", ".join(notes),
        readable,
    )


def served_versions(repo: Path, model: str) -> list[int] | None:
    """The versions a `specific` policy names, or None under Triton's default (latest one)."""
    config = read_config(Path(repo) / model / CONFIG_NAME)
    if config.version_policy.WhichOneof("policy_choice") != "specific":
        return None
    return sorted(config.version_policy.specific.versions)


def default_version(repo: Path, model: str) -> int | None:
    """The version Triton answers a request without a version with: the highest loaded one."""
    versions = served_versions(repo, model)
    return max(versions or list_versions(repo, model), default=None)


def client_default_version(repo: Path, model: str) -> int | None:
    """The version our clients answer a request without a version with: the production version
    the config records, else Triton's default."""
    config = read_config(Path(repo) / model / CONFIG_NAME)
    production = production_version(config)
    return production if production is not None else default_version(repo, model)


def promote(repo: Path, model: str, version: int, status: str) -> None:
    """Record `status` for the version (a previous production version loses its status) and
    make the version policy serve exactly the versions that have a status. `config.pbtxt` is the
    only file of the model directory that may change, and only when the policy or the
    production version does (a status change that loads nothing new touches no model file)."""
    if status not in STATUSES:
        raise UsageError(f"unknown status {status!r}: choose from {', '.join(STATUSES)}")
    versions = list_versions(repo, model)
    if version not in versions:
        raise UsageError(f"{model} has no version {version}: it has {versions or 'none'}")
    # A signal waits for the statuses and the policy to be written (local writes, milliseconds):
    # one ending between them would leave no production version, or a status the policy ignores.
    with signals_held():
        for v in versions:
            version_dir = Path(repo) / model / str(v)
            try:
                meta = read_metadata(version_dir) or {}
            except MetadataError:  # its status unreadable: set only if it is the version promoted
                meta = {}
            if v == version or (status == "production" and meta.get("status") == status):
                update_metadata(version_dir, status=status if v == version else None)
        _write_policy(repo, model)


def _write_policy(repo: Path, model: str) -> None:
    """The versions with a status as the `specific` policy, and the production one as a parameter,
    in one atomic replace of `config.pbtxt`; not written when they are already so (a rewrite
    alone makes Triton re-read the model)."""
    rows = [r for r in list_registry(repo) if r.model == model and r.status in STATUSES]
    config_path = Path(repo) / model / CONFIG_NAME
    config = read_config(config_path)
    before = config.SerializeToString(deterministic=True)
    config.ClearField("version_policy")
    config.version_policy.specific.versions.extend(r.version for r in rows)
    production = [r.version for r in rows if r.status == "production"]
    if production:
        config.parameters[PRODUCTION_VERSION_PARAMETER].string_value = str(production[0])
    else:
        config.parameters.pop(PRODUCTION_VERSION_PARAMETER, None)
    if config.SerializeToString(deterministic=True) != before:
        write_config(config_path, config)


def prune_plan(repo: Path, model: str, keep: int) -> list[int]:
    """The versions `prune` removes: all but the newest `keep`, never one with a status (the
    version policy names those, and production must stay) nor one whose status is unreadable."""
    if keep < 1:
        raise UsageError(f"--keep must be at least 1, got {keep}")
    rows = [r for r in list_registry(repo) if r.model == model]
    if not rows:
        raise UsageError(f"no model {model!r} in {repo}")
    newest = {r.version for r in rows[-keep:]}
    return [r.version for r in rows if r.version not in newest and r.status is None and r.readable]


def remove_version(repo: Path, model: str, version: int) -> None:
    """Rename aside first (hidden from Triton), then delete: the version disappears at once. A
    signal waits until its files and its record are gone too (no hidden folder left behind)."""
    target = Path(repo) / model / str(version)
    hidden = target.with_name(f".pruned-{version}-{os.getpid()}")
    with signals_held():
        os.rename(target, hidden)
        shutil.rmtree(hidden)
        forget_version(target)
