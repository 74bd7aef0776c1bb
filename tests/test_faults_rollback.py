"""Issue #17, D6: a failed export rolls back only what it wrote itself, and leaves no temporary
folders on any exit path (signals included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tritonstack.cli import main
from tritonstack.errors import RepositoryError
from tritonstack.export.repository import build_config, list_versions, write_version
from tritonstack.formats import Format
from tritonstack.spec import ModelSpec, TensorSpec

SPEC = ModelSpec("m_onnx", (TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (1,)),))


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_failed_export_of_a_new_model_keeps_a_concurrent_exports_version(tmp_path: Path) -> None:
    """Export A of a new model (`--version 1`) creates the model directory and stages; while it
    still reads its inputs (a FIFO holds it there), export B of the same model publishes v1. A
    then fails to publish onto the taken v1: its rollback must leave B's version and config."""
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.onnx").write_bytes(b"A")
    (src / "b.onnx").write_bytes(b"B")
    fifo = src / "vocab.txt"
    os.mkfifo(fifo)
    config = build_config(SPEC, Format.ONNX)
    failure: list[BaseException] = []

    def export_a() -> None:
        try:
            write_version(
                repo, SPEC.name, config, {"model.onnx": src / "a.onnx"}, 1, extra_files={"vocab.txt": fifo}
            )
        except BaseException as exc:  # noqa: BLE001 - kept for the assertion below
            failure.append(exc)

    a = threading.Thread(target=export_a)
    a.start()
    model_dir = repo / SPEC.name
    _wait_for(lambda: model_dir.is_dir() and any(p.name.startswith(".staging-") for p in model_dir.iterdir()))
    write_version(repo, SPEC.name, config, {"model.onnx": src / "b.onnx"})
    with open(fifo, "wb") as f:  # A goes on: it reads its vocabulary, then cannot take v1
        f.write(b"words")
    a.join(timeout=30)

    assert len(failure) == 1 and isinstance(failure[0], RepositoryError), failure
    assert list_versions(repo, SPEC.name) == [1]
    assert (model_dir / "1" / "model.onnx").read_bytes() == b"B"
    assert (model_dir / "config.pbtxt").is_file()
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]


def test_a_failed_export_of_a_new_model_leaves_nothing(tmp_path: Path) -> None:
    """Alone, a failed first export leaves no model directory (what it created is all its own)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(RepositoryError, match="does not exist"):
        write_version(repo, SPEC.name, build_config(SPEC, Format.ONNX), {"model.onnx": tmp_path / "missing"})
    assert list(repo.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_export_leaves_no_temporary_folders(
    tmp_path: Path, signum: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tritonstack export` signalled while it exports (into its temporary folder): it exits
    128 + the signal, and neither the system's temporary folder nor the repository keeps any
    of its temporaries."""
    checkpoint, repo, tmp = tmp_path / "dlrm.pt", tmp_path / "repo", tmp_path / "tmp"
    tmp.mkdir()
    train = ["train", "--arch", "dlrm", "--preset", "tiny", "--steps", "1", "--out", str(checkpoint)]
    assert main(train) == 0
    command = [sys.executable, "-m", "tritonstack.cli", "export", str(checkpoint), "--repo", str(repo)]
    with subprocess.Popen(command, env={**os.environ, "TMPDIR": str(tmp)}, stderr=subprocess.PIPE) as export:
        _wait_for(lambda: any(_ours(p) and any(p.iterdir()) for p in tmp.iterdir()), timeout=120)
        export.send_signal(signum)
        _, stderr = export.communicate(timeout=60)
    assert export.returncode == 128 + signum, stderr.decode()[-2000:]
    assert [p.name for p in tmp.iterdir() if _ours(p)] == []
    assert sorted(repo.rglob(".*")) == []  # no .staging-* or hidden config temporaries


def _ours(path: Path) -> bool:
    """The export's temporaries (libraries keep caches of their own there, e.g. torchinductor_*)."""
    return path.name.startswith(("tritonstack-", "tmp"))
