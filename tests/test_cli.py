"""The `tritonstack` command: in process (`main()` with captured output), except where the process
itself is the point: the exit code through the interpreter, and serving from one process while
another calls it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonstack import recsys
from tritonstack.cli import DEBUG_ENV, main
from tritonstack.cli.commands import SUBCOMMANDS
from tritonstack.recsys.train import train
from tritonstack.serve import free_port

CLI = [sys.executable, "-m", "tritonstack.cli"]


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "dlrm.pt"
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=2, batch_size=32, lr=1e-3, seed=0, checkpoint_path=path)
    return path


@pytest.fixture(autouse=True)
def _keep_log_levels() -> Iterator[None]:
    """`--debug` turns the project's loggers to DEBUG for the rest of a process; here, of a test."""
    logger = logging.getLogger("tritonstack")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _no_debug_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)


# -- help -----------------------------------------------------------------------------------------

NESTED = [
    ["models", "promote"],
    ["models", "prune"],
    ["bench", "compare"],
    ["bench", "report"],
    ["bench", "floor"],
]


@pytest.mark.parametrize("command", [[], *([c] for c in SUBCOMMANDS), *NESTED], ids=" ".join)
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tritonstack") and "--debug" in out


def test_help_says_how_errors_end(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "prints one line on stderr and exits 2" in text
    assert "TRITONSTACK_DEBUG=1" in text and "a bug: it prints a traceback and exits 1" in text


# -- user errors: one line, exit 2 ----------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"tritonstack {argv[0]}: error: ") and fragment in lines[0], lines[0]
    return lines[0]


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", str(tmp_path / "nope.pt"), "--repo", str(tmp_path / "repo")]
    _one_line_error(capsys, argv, "checkpoint not found")


def test_unknown_format_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        capsys, ["export", str(tmp_path / "x.pt"), "--formats", "onnx,caffe"], "unknown format 'caffe'"
    )


def test_unknown_architecture_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["train", "--arch", "resnet", "--out", str(tmp_path / "x.pt")], "resnet")


def test_wrong_checkpoint_for_architecture(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line_error(
        capsys, ["export", str(checkpoint), "--arch", "dcn_v2", "--repo", str(tmp_path)], "dcn_v2"
    )
    assert not (tmp_path / "dcn_v2_onnx").exists()


def test_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["infer", "dlrm_onnx", "--url", "127.0.0.1:1", "--random", "1", "--timeout", "2"]
    _one_line_error(capsys, argv, "127.0.0.1:1")


LONG_INLINE = json.dumps({"bad": 1, "padding": "x" * 300})  # longer than a file name may be


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ('{"bad": 1}', "DLRMConfig: unknown keys ['bad']; valid keys are ['num_dense'"),
        ('{"num_dense": 13}', "DLRMConfig: missing keys ['vocab_sizes'"),
        (
            '{"num_dense": 0, "vocab_sizes": [3], "embedding_dim": 4, "bottom_dims": [4], "top_dims": [4]}',
            "DLRMConfig.num_dense must be a positive int, got 0",
        ),
        ("[1]", "--config must be a JSON object of config fields"),
        ('{"num_dense": ', "--config: bad inline JSON: Expecting value (line 1, column 15)"),
        (LONG_INLINE, "unknown keys ['bad', 'padding']"),
        ("no-such-config.json", "neither inline JSON nor a readable JSON file (No such file or directory)"),
    ],
)
def test_bad_config_is_one_line(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str], config: str, fragment: str
) -> None:
    _one_line_error(capsys, ["train", "--arch", "dlrm", "--config", config], fragment)
    # Exporting a checkpoint that carries its own config: the bad --config is still the user's.
    line = _one_line_error(
        capsys, ["export", str(checkpoint), "--config", config, "--repo", str(tmp_path)], fragment
    )
    assert str(checkpoint) not in line


def test_options_are_checked_before_any_work(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    repo, closed = tmp_path / "repo", f"127.0.0.1:{free_port()}"
    train_out = ["train", "--arch", "dlrm", "--preset", "tiny", "--steps", "1", "--out"]
    _one_line_error(capsys, [*train_out, str(a_file / "sub" / "x.pt")], f"{a_file / 'sub'}: Not a directory")
    export = ["export", str(checkpoint), "--repo", str(repo)]
    export_all = ["export-all", str(checkpoint.parent), "--repo", str(repo)]
    demo = ["demo", "--checkpoints", str(repo), "--repo", str(repo)]
    for command in (export, export_all, demo):
        _one_line_error(
            capsys, [*command, "--max-batch-size", "0"], "--max-batch-size must be at least 1, got 0"
        )
    _one_line_error(capsys, [*export, "--name", "../evil"], "'../evil_onnx' is not a safe name")
    assert not repo.exists()  # nothing was trained, exported or written
    _one_line_error(capsys, ["export", str(checkpoint), "--repo", str(a_file)], f"{a_file}: File exists")
    _one_line_error(
        capsys, ["serve", "--repo", str(tmp_path), "--grpc-port", "70000"], "grpc port 70000 is out"
    )
    _one_line_error(capsys, ["serve", "--repo", str(tmp_path), "--host", "192.0.2.1"], "cannot bind host")
    infer = ["infer", "dlrm_onnx", "--url", closed]
    _one_line_error(capsys, [*infer, "--random", "1", "--timeout", "0"], "timeout must be a positive number")
    _one_line_error(capsys, [*infer, "--random", "0"], "--random 0: the batch size must be at least 1")


# -- --debug, and bugs ----------------------------------------------------------------------------


def _broken_custom_export(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An export whose custom factory's module fails to import one of its own dependencies."""
    (tmp_path / "needs_a_dependency.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["export", str(checkpoint), "--arch", "needs_a_dependency:make", "--input", "x:float32:4"]


@pytest.mark.parametrize("how", ["global flag", "after the subcommand", "environment"])
def test_debug_prints_the_chained_traceback(
    tmp_path: Path,
    checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    argv = [*_broken_custom_export(tmp_path, checkpoint, monkeypatch), "--output", "y"]
    line = _one_line_error(capsys, argv, "importing needs_a_dependency raised ModuleNotFoundError")
    assert "PYTHONPATH" not in line and "--debug shows its traceback" in line
    if how == "environment":
        monkeypatch.setenv(DEBUG_ENV, "1")
    argv = (
        ["--debug", *argv]
        if how == "global flag"
        else [*argv, "--debug"]
        if how == "after the subcommand"
        else argv
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ModuleNotFoundError: No module named 'a_dependency_that_is_not_installed'" in err
    assert "The above exception was the direct cause of the following exception" in err
    assert "tritonstack.errors.UsageError" in err and err.strip().splitlines()[-1] == line


def test_debug_shows_why_each_checkpoint_of_a_batch_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """export-all reports a failed checkpoint as one line and goes on; --debug logs its traceback."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "junk.pt").write_bytes(b"not a checkpoint")
    argv = ["export-all", str(tmp_path / "runs"), "--repo", str(tmp_path / "repo")]
    assert main(argv) == 1
    assert "junk.pt: " in capsys.readouterr().out and not any(r.exc_info for r in caplog.records)
    assert main(["--debug", *argv]) == 1
    (failure,) = [r for r in caplog.records if r.exc_info]
    assert failure.exc_info is not None and "not a PyTorch checkpoint" in str(failure.exc_info[1])


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), ConnectionResetError()])
def test_an_unexpected_error_is_a_bug_with_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bug: Exception
) -> None:
    """A bug injected into a handler (no input reaches one on purpose): traceback, exit 1. An
    OSError that names no path is no user error either."""

    def handler(_: object) -> int:
        raise bug

    add_arguments, _, help_text = SUBCOMMANDS["models"]
    monkeypatch.setitem(SUBCOMMANDS, "models", (add_arguments, handler, help_text))
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and type(bug).__name__ in err
    assert (
        err.strip().splitlines()[-1].startswith("tritonstack models: unexpected error, a bug in tritonstack")
    )


def test_tensorrt_on_cpu_instances_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = ["export", str(tmp_path / "nope.pt"), "--formats", "onnx,tensorrt", "--device", "cpu"]
    _one_line_error(capsys, export, "--formats tensorrt needs --device gpu")  # not "checkpoint not found"
    demo = [
        "demo",
        "--formats",
        "tensorrt",
        "--checkpoints",
        str(tmp_path / "ckpt"),
        "--repo",
        str(tmp_path / "r"),
    ]
    _one_line_error(capsys, demo, "--formats tensorrt needs --device gpu")
    assert not (tmp_path / "ckpt").exists()  # nothing trained


def test_exit_codes_of_the_real_command() -> None:
    """Through the interpreter: one line and exit 2, or with TRITONSTACK_DEBUG=1 the traceback too."""
    argv = ["infer", "m", "--url", f"127.0.0.1:{free_port()}", "--random", "0"]
    plain = run(*argv)
    assert plain.returncode == 2 and plain.stderr.strip().splitlines() == [
        "tritonstack infer: error: --random 0: the batch size must be at least 1"
    ]
    debug = subprocess.run(
        [*CLI, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, DEBUG_ENV: "1"},
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


# -- with a server --------------------------------------------------------------------------------


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
        timeout=480,
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
            busy = run("serve", "--repo", repo, "--grpc-port", str(port))
            assert busy.returncode == 2 and len(busy.stderr.strip().splitlines()) == 1, busy.stderr
            assert str(port) in busy.stderr and "Traceback" not in busy.stderr
        finally:
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=60) == 0
