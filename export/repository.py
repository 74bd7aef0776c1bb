"""The Triton model repository: `config.pbtxt` from a `ModelSpec`, and versions published atomically.

Triton (in poll mode, or on a restart) may look at the repository at any moment, so a version
directory appears complete or not at all: it is assembled in a hidden temporary directory next
to it (Triton skips version directories that are not numbers; it does poll hidden directories at
the repository's top level, so nothing is ever staged there) and renamed into place;
`config.pbtxt` is replaced the same way. Configs are `ModelConfig` messages written with
`text_format`, so Triton's own schema checks every field name and enum.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import RepositoryError
from tritonstack.export.deployment import DeploymentOptions, apply_deployment
from tritonstack.export.temporaries import temporary_directory, temporary_file
from tritonstack.formats import Format
from tritonstack.spec import CONFIG_NAME, PRODUCTION_VERSION_PARAMETER, ModelSpec, read_config

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def build_config(spec: ModelSpec, fmt: Format, deployment: DeploymentOptions | None = None) -> pb.ModelConfig:
    """The `config.pbtxt` of `spec` served as `fmt` by Triton's native backend for it, deployed
    as `deployment` says (default: `DeploymentOptions()`)."""
    config = spec.to_config()
    config.platform = fmt.platform
    config.default_model_filename = fmt.filename
    apply_deployment(config, spec, fmt, deployment or DeploymentOptions())
    return config


def write_config(path: Path | str, config: pb.ModelConfig) -> None:
    """Write `config` as text, atomically: readers see the old file or the new one. The temporary
    file is made in the repository's top level, not beside the config: Triton's poll counts any
    other entry of a model directory as a change to every version of the model (a reload)."""
    path = Path(path)
    replace_file(path, text_format.MessageToString(config).encode(), staging=path.parent.parent)


def list_versions(repo: Path | str, model_name: str) -> list[int]:
    """The model's numbered version directories, ascending (hidden temporaries excluded)."""
    model_dir = Path(repo) / checked_name(model_name)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def write_version(
    repo: Path | str,
    model_name: str,
    config: pb.ModelConfig,
    files: Mapping[str, Path],
    version: int | None = None,
    *,
    extra_files: Mapping[str, Path] | None = None,
    overwrite: bool = False,
    move: bool = False,
) -> Path:
    """Publish `files` (name in the version directory -> source) as one version of `model_name`.

    `version=None` takes the next free number (1 for a new model). `extra_files` go beside
    `config.pbtxt`. The model's existing version policy and production version carry over
    (`models promote` owns them). The version directory appears complete or not at all; on any
    failure no partial directory remains, moved sources are put back, and what this call replaced
    is restored; another export's versions are never removed. Returns the version directory.
    """
    model_dir = Path(repo) / checked_name(model_name)
    if config.name and config.name != model_name:
        raise RepositoryError(f"config names model {config.name!r} but is written as {model_name!r}")
    if version is not None and version < 1:
        raise RepositoryError(f"version must be >= 1, got {version}")
    for name in (*files, *(extra_files or {})):
        checked_name(name)
    named = pb.ModelConfig()
    named.CopyFrom(config)
    named.name = model_name

    created_model_dir = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is not None and not overwrite and (model_dir / str(version)).exists():
        raise RepositoryError(
            f"{model_dir / str(version)} already exists: pass overwrite=True (--overwrite) or another version"
        )
    config_path = model_dir / CONFIG_NAME
    if config_path.exists():
        _keep_registry(named, config_path)
    try:
        target = _stage_and_publish(model_dir, named, files, extra_files or {}, version, overwrite, move)
    except BaseException:
        if created_model_dir:  # empty unless a concurrent export of the model published into it
            with contextlib.suppress(OSError):
                model_dir.rmdir()
        raise
    log.info("published %s", target)
    return target


def _keep_registry(config: pb.ModelConfig, old_path: Path) -> None:
    """Carry the registry's fields of the model's current config into `config`, unless it sets
    them: a new export replacing them would load versions nobody promoted and route unversioned
    requests away from production."""
    try:
        old = read_config(old_path)
    except RepositoryError:  # unreadable: nothing to keep, the new config replaces it
        return
    if not config.HasField("version_policy") and old.HasField("version_policy"):
        config.version_policy.CopyFrom(old.version_policy)
    key = PRODUCTION_VERSION_PARAMETER
    if key in old.parameters and key not in config.parameters:
        config.parameters[key].CopyFrom(old.parameters[key])


def _stage_and_publish(
    model_dir: Path,
    config: pb.ModelConfig,
    files: Mapping[str, Path],
    extra_files: Mapping[str, Path],
    version: int | None,
    overwrite: bool,
    move: bool,
) -> Path:
    """Undo on failure touches only what this call wrote: its own moved files, the extra files
    and config it replaced (put back as they were just before), never a concurrent export's
    version."""
    moved: list[tuple[Path, Path]] = []
    replaced: list[tuple[Path, bytes | None]] = []  # (path, its bytes before this call wrote it)
    config_path = model_dir / CONFIG_NAME
    with temporary_directory(".staging-", model_dir) as staging:
        version_tmp = staging / "version"
        try:
            version_tmp.mkdir()
            for name, src in files.items():
                _place(Path(src), version_tmp / name, move, moved)
            for name, src in extra_files.items():
                data = Path(src).read_bytes()
                replaced.append((model_dir / name, _contents(model_dir / name)))
                replace_file(model_dir / name, data)
            # A new model gets its config last: an export killed before then leaves no config
            # without a version, which Triton would wait on instead of refusing.
            new_model = not config_path.exists()
            if not new_model:
                replaced.append((config_path, _contents(config_path)))
                write_config(config_path, config)
            target = _publish(version_tmp, model_dir, version, overwrite)
            if new_model:
                write_config(config_path, config)
            return target
        except BaseException:
            for src, dst in reversed(moved):  # while the staging directory still exists
                with contextlib.suppress(OSError):
                    shutil.move(dst, src)
            for path, before in reversed(replaced):
                with contextlib.suppress(OSError):
                    if before is None:
                        path.unlink()
                    else:
                        replace_file(path, before, staging=model_dir.parent)
            raise


def _contents(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _publish(version_tmp: Path, model_dir: Path, version: int | None, overwrite: bool) -> Path:
    """Rename the staged directory to its version number; a rename onto a taken number fails,
    which makes picking the next free number safe against a concurrent writer."""
    while True:
        number = (
            version
            if version is not None
            else max(list_versions(model_dir.parent, model_dir.name), default=0) + 1
        )
        target = model_dir / str(number)
        if target.exists() and version is not None and overwrite:
            # Renaming onto a non-empty directory fails: set the old one aside first.
            old = model_dir / f".old-{number}-{os.getpid()}"
            os.rename(target, old)
            os.rename(version_tmp, target)
            shutil.rmtree(old)
            return target
        try:
            os.rename(version_tmp, target)
        except OSError as exc:
            if version is None and exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise RepositoryError(f"cannot publish {target}: {exc.strerror}") from exc
        return target


def _place(src: Path, dst: Path, move: bool, moved: list[tuple[Path, Path]]) -> None:
    if not src.is_file():
        raise RepositoryError(f"artifact {src} does not exist")
    if move:
        shutil.move(src, dst)
        moved.append((src, dst))
    else:
        shutil.copy2(src, dst)


def checked_name(name: str) -> str:
    """Model and file names become path components: no separators, no hidden or relative names."""
    if not _SAFE_NAME.fullmatch(name) or name in {".", ".."}:
        raise RepositoryError(
            f"{name!r} is not a safe name: use letters, digits, '_', '-' and '.', not starting with '.'"
        )
    return name


def replace_file(path: Path, data: bytes, staging: Path | None = None) -> None:
    """Write `path` through a hidden temporary file in `staging` (default: beside it) and
    `os.replace`: readers see old or new. The data reaches the disk before the rename, and the
    rename before the return: a crash of the machine (not only of the process) leaves the old file
    or the new one, never an empty or truncated one. A `staging` on another file system than `path`
    (a model directory linked from elsewhere) falls back to beside it."""
    with temporary_file(f".{path.name}-", staging or path.parent) as (fd, tmp):
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            _sync_directory(path.parent)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if exc.errno != errno.EXDEV or staging is None:  # a full disk: the error names the file
                raise OSError(exc.errno, exc.strerror, exc.filename or str(path)) from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        else:
            return
    replace_file(path, data)


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
