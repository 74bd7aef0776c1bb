"""A run's measurements written so that a full or read-only disk loses nothing: the JSON document
first and atomically (old file or new, never half of one), and where that fails, a copy in the
temporary folder, with one line saying where it is."""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tritonstack.errors import TritonstackError, UsageError
from tritonstack.export.repository import replace_file


def check_folder(out: Path, option: str = "--out") -> None:
    """Refuse, before anything is measured, a results folder that could not be made or written
    (nothing is created: a run that stops on another bad option leaves no folder behind)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = os.strerror(errno.ENOTDIR)
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = os.strerror(errno.EACCES)
    else:
        return
    raise UsageError(f"{option} {out}: {problem}: pass a folder this user can write")


def save_json(document: dict[str, Any], path: Path, then: str) -> None:
    """`document` as JSON at `path`; `then` tells the user what to do with a copy kept elsewhere,
    once `path` can be written."""
    data = (json.dumps(document, indent=1) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, data)
    except OSError as exc:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        kept = Path(tempfile.gettempdir()) / f"tritonstack-{path.stem}-{stamp}-{os.getpid()}.json"
        try:
            replace_file(kept, data)
        except OSError:
            raise TritonstackError(
                f"cannot write {path} ({why(exc)}), nor a copy in {kept.parent}: the measurements are lost"
            ) from exc
        raise TritonstackError(
            f"cannot write {path} ({why(exc)}): the measurements are kept in {kept}; once it can be "
            f"written, {then}"
        ) from exc


def why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
