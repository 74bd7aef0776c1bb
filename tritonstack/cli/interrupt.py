"""SIGTERM and SIGINT during an export or a `models` command: remove its temporaries, take back
or finish what it was publishing to an object store, release its lock, then end at once.

Raising from the handler (as Ctrl-C does by default) is not reliable there: torch's exporters
and weakref callbacks wrap or swallow the exception and the export goes on to publish. What the
export may leave is registered in `export.temporaries` (on an object store, its lock and the
objects of a version not yet published too); versions appear by one rename, so ending between two
steps leaves either a whole version or none.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from tritonstack.export.temporaries import held, remove_all

Handler = Callable[[argparse.Namespace], int]


def ending_on_signal(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        if threading.current_thread() is not threading.main_thread():  # only it can take signals
            return handler(args)
        previous = {signum: signal.signal(signum, _end) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            return handler(args)
        finally:
            for signum, action in previous.items():
                signal.signal(signum, action)

    return run


def _end(signum: int, frame: FrameType | None) -> None:
    if held(signum):  # a few writes that must go together: it comes back when they are done
        return
    # A second Ctrl-C would start the clean-up again from inside this one: it waits for the exit.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    failed = remove_all()
    sys.stdout.flush()
    print(f"stopped by {signal.Signals(signum).name}; its temporary files were removed", file=sys.stderr)
    for line in failed:
        print(f"could not take back what it wrote: {line}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(128 + signum)
