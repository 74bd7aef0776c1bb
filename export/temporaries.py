"""The export's temporary folders and files, registered while they exist, so that a signal
handler can remove them before the process ends (`tritonstack export` on SIGTERM or SIGINT);
likewise what it holds or has half-written elsewhere (an object store's lock and objects), as
actions that take it back.

Raising from a signal handler is not enough to clean up: torch's exporters and weakref callbacks
wrap or swallow the exception, and the export goes on. The handler removes what is registered
here and ends the process instead.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_live: set[Path] = set()
_undo: list[Callable[[], None]] = []
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


@contextlib.contextmanager
def undone_on_signal(action: Callable[[], None]) -> Iterator[None]:
    """Have the signal handler call `action` if the process ends while the block runs (the
    latest registered first, after the temporaries are removed)."""
    _undo.append(action)
    try:
        yield
    finally:
        _undo.remove(action)


def remove_all() -> list[str]:
    """Remove every registered temporary and take back what is registered (the signal handler's
    clean-up); returns a line for each action that failed, for the handler to print."""
    for path in list(_live):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    failed = []
    for action in reversed(_undo):
        try:
            action()
        except Exception as exc:  # the process ends next: say what is left, then go on with the rest
            failed.append(f"{type(exc).__name__}: {exc}")
    return failed


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
