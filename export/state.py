"""What tritonstack knows about each published version (how it was exported, its status, its
latest benchmark), kept in one file at the top of the repository: `<repo>/tritonstack.json`.

Nothing here is ever written inside a model directory. Triton (core r24.10, ModelTimestamp in
model_repository_manager.cc) polls each model directory: a change to a version directory marks
that version modified, and a change to any other entry of the model directory that is not
`config.pbtxt` (a `<model>/tritonstack.json` sidecar, say) marks *every* version modified, so
each would be reloaded. The repository's top level is different: Triton lists only its
subdirectories as models and never looks at its files, so this file (and its temporary file
while it is replaced) can change while a model is served without reloading anything. Writers
lock the repository directory itself (flock), so concurrent ones lose nothing.

Versions exported before this file existed keep their `<version>/metadata.json`: it is read,
never written again (a write would reload the version); an entry here overrides its fields.

A state file that is not JSON as a whole (a truncated write by another tool, a bad hand edit)
makes every version's record unreadable (`MetadataError`: listed as such, never pruned), and
writers refuse to touch it (`StateError`, naming the fix): a fresh file would forget every
status, and statuses decide what the version policy serves and what prune keeps.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tritonstack.errors import RepositoryError
from tritonstack.export.repository import replace_file

STATE_NAME = "tritonstack.json"
# Inside a version directory: what exports wrote before STATE_NAME, read for migration only.
LEGACY_METADATA_NAME = "metadata.json"
_FORMAT = 1


class MetadataError(RepositoryError):
    """One version's record is unreadable: it concerns that version alone (listed with the
    reason, never pruned, never taken as an earlier export of a checkpoint)."""


class StateError(RepositoryError):
    """The repository's state file is unreadable as a whole: nothing may write it."""


def state_problem(repo: Path) -> str | None:
    """Why `<repo>/tritonstack.json` cannot be read (`is not valid JSON (...)`), or None when it
    can or does not exist."""
    try:
        _read_json(repo / STATE_NAME)
    except _Unreadable as exc:
        return exc.reason
    return None


def check_writable(repo: Path, shown_as: str | Path | None = None) -> None:
    """Refuse, before any work, to change a repository whose state file is unreadable; `shown_as`
    names the repository in the message (an object store's URL rather than its local mirror)."""
    problem = state_problem(repo)
    if problem is not None:
        raise StateError(_refusal(f"{shown_as or repo}/{STATE_NAME}", problem))


def _refusal(path: str, problem: str) -> str:
    move = "aws s3 mv" if path.startswith("s3://") else "mv"
    return (
        f"{path} {problem}, so nothing was changed: restore it from a backup, or move it aside "
        f"({move} {path} {path}.corrupt) to start a fresh one, which forgets every version's status"
    )


def read_metadata(version_dir: Path) -> dict[str, Any] | None:
    """The version's record: its legacy `metadata.json` (if any) updated by its entry in the
    repository's state file; None when neither exists (a version exported by hand)."""
    try:
        legacy = _read_json(version_dir / LEGACY_METADATA_NAME)
    except RepositoryError as exc:
        raise MetadataError(str(exc)) from exc
    try:
        state = _read_state(_repo_of(version_dir))
    except _Unreadable as exc:
        raise MetadataError(str(exc)) from exc
    versions = state.get("models", {}).get(version_dir.parent.name, {})
    entry = versions.get(version_dir.name) if isinstance(versions, dict) else versions
    if entry is not None and not isinstance(entry, dict):
        raise MetadataError(
            f"{_repo_of(version_dir) / STATE_NAME}: the entry of {version_dir.parent.name} version "
            f"{version_dir.name} is not a JSON object"
        )
    if legacy is None and entry is None:
        return None
    return {**(legacy or {}), **(entry or {})}


def record_export(version_dir: Path, metadata: Mapping[str, Any]) -> None:
    """Record a newly published version: its entry becomes `metadata` (a re-used version number
    keeps nothing of an earlier entry)."""
    with _locked_state(_repo_of(version_dir)) as state:
        _versions(state, version_dir, create=True)[version_dir.name] = dict(metadata)


def update_metadata(version_dir: Path, **changes: Any) -> None:
    """Set fields of the version's record (`status=...`, `benchmark=...`), read and written under
    the repository's lock so concurrent writers (a benchmark, a promote) lose nothing."""
    with _locked_state(_repo_of(version_dir)) as state:
        versions = _versions(state, version_dir, create=True)
        versions[version_dir.name] = {**versions.get(version_dir.name, {}), **changes}


def forget_version(version_dir: Path) -> None:
    """Drop the version's entry (the version was removed)."""
    with _locked_state(_repo_of(version_dir)) as state:
        _versions(state, version_dir).pop(version_dir.name, None)


def _repo_of(version_dir: Path) -> Path:
    return version_dir.parent.parent


def _versions(state: dict[str, Any], version_dir: Path, create: bool = False) -> dict[str, Any]:
    """The model's entries in `state`, by version number (the state's own dict, to change in
    place; with `create`, made when missing)."""
    models: dict[str, Any] = state.setdefault("models", {})
    model = version_dir.parent.name
    versions: dict[str, Any] = models.setdefault(model, {}) if create else models.get(model, {})
    return versions


@contextlib.contextmanager
def _locked_state(repo: Path) -> Iterator[dict[str, Any]]:
    """The state, to change in place; written back atomically when the block ends, while no other
    tritonstack process can read-modify-write it."""
    repo.mkdir(parents=True, exist_ok=True)
    # The lock is on the repository directory itself: no lock file to leave behind.
    fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            state = _read_state(repo)
        except _Unreadable as exc:
            raise StateError(_refusal(str(exc.path), exc.reason)) from exc
        yield state
        state["format"] = _FORMAT
        text = json.dumps(state, indent=2, sort_keys=True, default=str) + "\n"
        replace_file(repo / STATE_NAME, text.encode())
    finally:
        os.close(fd)  # releases the lock


def _read_state(repo: Path) -> dict[str, Any]:
    return _read_json(repo / STATE_NAME) or {}


class _Unreadable(RepositoryError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path, self.reason = path, reason


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise _Unreadable(path, f"cannot be read ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Unreadable(path, f"is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _Unreadable(path, f"holds a JSON {type(data).__name__}, not an object")
    return data
