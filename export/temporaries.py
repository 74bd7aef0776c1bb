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
_holding: list[bool] = []  # the `signals_held` blocks running
_pending: list[int] = []  # a signal that came during one, raised again at its end


@contextlib.contextmanager
def temporary_directory(prefix: str, dir: Path | None = None) -> Iterator[Path]:
    """`tempfile.TemporaryDirectory`, registered from its creation to its removal."""
    with signals_held():  # a signal between creating and registering it would leave it behind
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
    with signals_held():
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
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block ends (for a few local writes that must go together);
    then the handler runs at once. Blocking them in this thread is not enough: the kernel hands a
    process's signal to any thread that does not block it (torch's, boto3's), and Python then runs
    the handler in the main thread all the same; so the handler also asks `held` and leaves the
    signal for the end of the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    _holding.append(True)
    try:
        yield
    finally:
        _holding.pop()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if not _holding and _pending:
            signal.raise_signal(_pending.pop())


def held(signum: int) -> bool:
    """For the signal handler: True if a `signals_held` block is running, the signal kept for its
    end (the handler returns at once)."""
    if not _holding:
        return False
    _pending[:] = [signum]
    return True
