"""The export's temporary folders and files, registered while they exist, so that a signal
handler can remove them before the process ends (`tritonstack export` on SIGTERM or SIGINT).

Raising from a signal handler is not enough to clean up: torch's exporters and weakref callbacks
wrap or swallow the exception, and the export goes on. The handler removes what is registered
here and ends the process instead.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

_live: set[Path] = set()
_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def temporary_directory(prefix: str, dir: Path | None = None) -> Iterator[Path]:
    """`tempfile.TemporaryDirectory`, registered from its creation to its removal."""
    with _signals_held():  # a signal between creating and registering it would leave it behind
        holder = tempfile.TemporaryDirectory(prefix=prefix, dir=dir)
        path = Path(holder.name)
        _live.add(path)
    try:
        with holder:
            yield path
    finally:
        _live.discard(path)


@contextlib.contextmanager
def temporary_file(prefix: str, dir: Path) -> Iterator[tuple[int, Path]]:
    """`tempfile.mkstemp`'s descriptor and path, registered until the block ends (the caller
    renames or removes the file)."""
    with _signals_held():
        fd, name = tempfile.mkstemp(prefix=prefix, dir=dir)
        path = Path(name)
        _live.add(path)
    try:
        yield fd, path
    finally:
        _live.discard(path)


def remove_all() -> None:
    """Remove every registered temporary (the signal handler's clean-up)."""
    for path in list(_live):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
