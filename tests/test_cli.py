"""The `tritonstack` command as a user runs it: a real process, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tritonstack.commands import SUBCOMMANDS

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
