"""The `tritonstack` command as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tritonstack.cli.commands import SUBCOMMANDS
from tritonstack.serve import free_port

CLI = [sys.executable, "-m", "tritonstack.cli"]


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )


@pytest.mark.parametrize("command", [*SUBCOMMANDS, None])
def test_help(command: str | None) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: tritonstack" in result.stdout


def _assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0]


def test_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    _assert_one_line_error(
        run("export", tmp_path / "nope.pt", "--repo", tmp_path / "repo"), "checkpoint not found"
    )


def test_unknown_format_is_one_line(tmp_path: Path) -> None:
    _assert_one_line_error(
        run("export", tmp_path / "x.pt", "--formats", "onnx,caffe"), "unknown format 'caffe'"
    )


def test_tensorrt_on_cpu_instances_is_one_line_before_any_work(tmp_path: Path) -> None:
    result = run("export", tmp_path / "nope.pt", "--formats", "onnx,tensorrt", "--device", "cpu")
    _assert_one_line_error(result, "--formats tensorrt needs --device gpu")  # not "checkpoint not found"
    result = run(
        "demo", "--formats", "tensorrt", "--checkpoints", tmp_path / "ckpt", "--repo", tmp_path / "r"
    )
    _assert_one_line_error(result, "--formats tensorrt needs --device gpu")
    assert not (tmp_path / "ckpt").exists()  # nothing trained


def test_unknown_architecture_is_one_line(tmp_path: Path) -> None:
    _assert_one_line_error(run("train", "--arch", "resnet", "--out", tmp_path / "x.pt"), "resnet")


def test_wrong_checkpoint_for_architecture(tmp_path: Path) -> None:
    ckpt = tmp_path / "dlrm.pt"
    assert run("train", "--arch", "dlrm", "--preset", "tiny", "--steps", "2", "--out", ckpt).returncode == 0
    result = run("export", ckpt, "--arch", "dcn_v2", "--repo", tmp_path / "repo")
    _assert_one_line_error(result, "dcn_v2")
    assert not (tmp_path / "repo" / "dcn_v2_onnx").exists()


def test_unreachable_server_is_one_line() -> None:
    _assert_one_line_error(
        run("infer", "dlrm_onnx", "--url", "127.0.0.1:1", "--random", "1", "--timeout", "2"), "127.0.0.1:1"
    )


@pytest.mark.server
def test_demo_tiny_end_to_end(tmp_path: Path) -> None:
    """The main job, as `make demo` runs it, on the tiny preset."""
    result = run(
        "demo",
        "--preset",
        "tiny",
        "--steps",
        "5",
        "--checkpoints",
        tmp_path / "ckpt",
        "--repo",
        tmp_path / "repo",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for model in ("two_tower", "dlrm", "dcn_v2"):
        assert (tmp_path / "ckpt" / f"{model}.pt").is_file()
        for fmt in ("onnx", "torchscript"):
            assert (tmp_path / "repo" / f"{model}_{fmt}" / "1").is_dir()
    assert result.stdout.count("FAIL") == 0
    assert "p50 ms" in result.stdout


@pytest.mark.server
def test_train_export_serve_infer(tmp_path: Path) -> None:
    """A user's session: train, export, serve in one process, infer from another, Ctrl-C."""
    ckpt, repo = tmp_path / "dlrm.pt", tmp_path / "repo"
    assert run("train", "--arch", "dlrm", "--preset", "tiny", "--steps", "3", "--out", ckpt).returncode == 0
    exported = run("export", ckpt, "--repo", repo, "--max-batch-size", "8")
    assert exported.returncode == 0, exported.stderr
    assert "dlrm_onnx v1" in exported.stdout and "dlrm_torchscript v1" in exported.stdout
    again = run("export", ckpt, "--repo", repo, "--formats", "onnx", "--max-batch-size", "8")
    assert "dlrm_onnx v2" in again.stdout, again.stderr

    port = free_port()
    with subprocess.Popen(
        [*CLI, "serve", "--repo", str(repo), "--grpc-port", str(port)], stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            assert "Triton ready" in server.stdout.readline()
            url = f"127.0.0.1:{port}"
            random = run("infer", "dlrm_onnx", "--url", url, "--random", "2")
            assert random.returncode == 0 and "probability: float32 [2, 1]" in random.stdout, random.stderr
            np.save(tmp_path / "dense.npy", np.zeros((1, 13), np.float32))
            by_file = run(
                "infer",
                "dlrm_torchscript",
                "--url",
                url,
                "--input",
                f"dense_features={tmp_path / 'dense.npy'}",
                "--input",
                "sparse_features=" + json.dumps([[0] * 26]),
                "--save-dir",
                tmp_path / "out",
            )
            assert by_file.returncode == 0, by_file.stderr
            assert np.load(tmp_path / "out" / "probability.npy").shape == (1, 1)
            _assert_one_line_error(run("serve", "--repo", repo, "--grpc-port", str(port)), str(port))
        finally:
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=60) == 0
