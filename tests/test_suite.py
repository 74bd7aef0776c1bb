"""The suite's own rules: a test that starts Triton carries the `server` mark, and a hung test
fails alone instead of stopping the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tritonstack.serve import TritonServer

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_starting_triton_needs_the_server_mark(tmp_path: Path) -> None:
    """Not marked `server`, so conftest turns the launch into a failure that names the fix."""
    with pytest.raises(pytest.fail.Exception, match="not marked server: use the triton_server_factory"):
        TritonServer(tmp_path).start()


def test_a_hung_test_fails_and_the_run_goes_on(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every test has a time limit; with the project's pytest settings (the limit shortened), a
    test stuck waiting on a process that never answers fails with a timeout, and the next test
    still runs."""
    assert float(request.config.getini("timeout")) > 0
    (tmp_path / "test_hang.py").write_text(
        "import subprocess, sys\n"
        "import pytest\n\n"
        "@pytest.mark.timeout(1)\n"
        "def test_waits_forever():\n"
        "    subprocess.run([sys.executable, '-c', 'import time; time.sleep(600)'])\n\n"
        "def test_after():\n"
        "    pass\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(PYPROJECT),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
        ]
        + [str(tmp_path / "test_hang.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 failed, 1 passed" in result.stdout and "Timeout" in result.stdout, result.stdout[-2000:]
