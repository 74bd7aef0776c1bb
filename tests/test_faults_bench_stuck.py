"""A server that stops answering during a bench (a hung GPU, a deadlocked stub; here paused with
SIGSTOP): the bench ends with one line that names it, within its deadline (`WindowRule.answer_s`;
`bench floor`: `--timeout-s`), instead of waiting forever; one killed mid-floor ends it with one
line naming Triton's log. (A socket that never answers, for one request and for a load worker:
tests/test_bench.py.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import ServerFactory
from tests.reference_models import write_reference_models
from tritonstack.benchmarks.config import BenchConfig, WindowRule
from tritonstack.benchmarks.floor import FloorConfig, _served_probes, _write_identity, run_floor
from tritonstack.benchmarks.suite import run_suite
from tritonstack.benchmarks.targets import local_targets
from tritonstack.errors import ServeError
from tritonstack.serve import TritonServer

RULE = ["--window-s", "0.25", "--max-cell-s", "1", "--min-window-requests", "5", "--pool-size", "4"]
ANSWER_S = WindowRule(window_s=0.25, max_cell_s=1).answer_s


@pytest.fixture
def served(triton_server_factory: ServerFactory, tmp_path: Path) -> Iterator[TritonServer]:
    write_reference_models(tmp_path / "repo", tmp_path, ("two_tower",), max_batch_size=8)
    server = triton_server_factory(tmp_path / "repo")
    yield server
    assert server.pid is not None
    os.kill(server.pid, signal.SIGCONT)  # so that it can be stopped


def test_a_server_paused_mid_bench_ends_the_bench_in_one_line(served: TritonServer, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tritonstack", "bench", "--url", served.grpc_url, "--models", "two_tower_onnx",
        "--batch-sizes", "2", "--concurrency", "1,2", *RULE, "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert bench.stdout is not None
        for line in bench.stdout:  # off a terminal: one line per finished step
            if "concurrency 1" in line:
                break
        assert served.pid is not None
        os.kill(served.pid, signal.SIGSTOP)
        paused = time.monotonic()
        _, err = bench.communicate(timeout=ANSWER_S + 30)
        waited = time.monotonic() - paused
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()
    assert bench.returncode == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    # The next cell asks Triton's statistics, then sends: the pause can land before either.
    answer = f"(asking Triton's statistics|a request) got no answer within {ANSWER_S:g} s"
    assert re.search(f"error: two_tower_onnx version 1: {answer}: the server stopped answering", err)
    assert ANSWER_S <= waited < ANSWER_S + 15


@pytest.mark.timeout(60)
def test_a_server_paused_mid_floor_ends_it_in_one_line(
    triton_server_factory: ServerFactory, tmp_path: Path
) -> None:
    """`bench floor`'s probes, each client in turn (gRPC's stub, tritonclient, ours, the asyncio
    stub, the statistics), against its server paused after the first probe. Before the probes had
    deadlines this hung until the test's own limit."""
    repo = tmp_path / "repo"
    write_reference_models(repo, tmp_path, ("two_tower",), max_batch_size=8)
    _write_identity(repo)
    server = triton_server_factory(repo)
    config = FloorConfig(("two_tower_onnx",), repo, tmp_path / "out", requests=100, warmup=5, timeout_s=2)
    paused: list[float] = []

    def pause(step: str) -> None:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        paused.append(time.monotonic())

    stats = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(ServeError) as err:
            _served_probes(config, server.grpc_url, stats, local_targets(repo, config.models), pause)
        waited = time.monotonic() - paused[0]
    finally:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGCONT)
        stats.close()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"bench floor: two_tower_onnx served: Triton at {server.grpc_url} gave no")
    assert "within 2 s" in message and "--timeout-s" in message
    assert waited < 2 + 10


def _killing_triton_of(repo: Path, after: str) -> Callable[..., None]:
    """A step callback that, after the step `after`, SIGKILLs the Triton this process started on
    `repo` (as the OOM killer would)."""

    def kill(step: str, *_: object) -> None:
        if step != after:
            return
        pattern = f"tritonserver --model-repository={repo.resolve()}"
        found = subprocess.run(
            ["pgrep", "-P", str(os.getpid()), "-f", pattern], capture_output=True, text=True
        )
        (pid,) = found.stdout.split()
        os.kill(int(pid), signal.SIGKILL)

    return kill


@pytest.mark.server
@pytest.mark.timeout(120)
def test_triton_killed_mid_floor_is_one_line_naming_its_log(tmp_path: Path) -> None:
    """Before, gRPC's UNAVAILABLE surfaced as a traceback and "a bug in tritonstack"."""
    repo = tmp_path / "repo"
    write_reference_models(repo, tmp_path, ("two_tower",), max_batch_size=8)
    config = FloorConfig(("two_tower_onnx",), repo, tmp_path / "out", requests=100, warmup=5, timeout_s=10)
    with pytest.raises(ServeError) as err:
        run_floor(config, _killing_triton_of(repo, "gRPC and identity"))
    message = str(err.value)
    assert "\n" not in message
    pattern = (
        r"bench floor: two_tower_onnx served: Triton at \S+ failed: .+; "
        r"Triton exited \(code -9\), its log: (\S+)"
    )
    found = re.fullmatch(pattern, message)
    assert found is not None, message
    assert Path(found.group(1)).is_file()


@pytest.mark.server
@pytest.mark.timeout(120)
def test_triton_killed_mid_bench_is_one_line_naming_its_log(tmp_path: Path) -> None:
    """The bench's embedded Triton killed after the first cell: the next cell's failure says that
    Triton exited and where its log is."""
    repo = tmp_path / "repo"
    write_reference_models(repo, tmp_path, ("two_tower",), max_batch_size=8)
    rule = WindowRule(window_s=0.25, max_cell_s=1, min_requests=5)
    config = BenchConfig(("two_tower_onnx",), (2,), (1, 2), repo=repo, out=tmp_path / "out", rule=rule)
    with pytest.raises(ServeError) as err:
        run_suite(config, _killing_triton_of(repo, "two_tower_onnx batch 2 concurrency 1"))
    message = str(err.value)
    assert "\n" not in message
    found = re.fullmatch(r"two_tower_onnx version 1\b.+; Triton exited \(code -9\), its log: (\S+)", message)
    assert found is not None, message
    assert Path(found.group(1)).is_file()
