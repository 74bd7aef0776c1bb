"""`tritonstack serve` run as a subprocess by the tests."""

from __future__ import annotations

import signal
import subprocess


def stop_serve(process: subprocess.Popen[str]) -> None:
    """Ctrl-C the `serve` if it still runs (Triton stops at once, no drain grace), wait for it to
    end and close the pipe its stdout was read from."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    assert process.stdout is not None
    process.stdout.close()
