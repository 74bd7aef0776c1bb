"""Issue 17, D7: a rolling restart loses no request. Two `tritonstack serve` on one repository, an
asyncio client over both urls with 24 workers, SIGTERM one: that `serve` reports not ready at once
(HTTP readiness fails) while it keeps answering gRPC for `--drain-grace`, then Triton refuses new
requests, finishes those in flight, unloads and exits; the client takes what the draining server
refuses (UNAVAILABLE, then NOT_FOUND once its models unload) to the other one."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.serve_process import stop_serve
from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.client import NO_RETRY, AsyncTritonClient, ClientError
from tritonstack.export.checkpoint import load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.serve import free_port

pytestmark = pytest.mark.server
CLI = [sys.executable, "-m", "tritonstack.cli"]
MODEL = "two_tower_onnx"
GRACE_S = 2.0
WORKERS = 24
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Serve:
    """A `tritonstack serve` process and its ports."""

    process: subprocess.Popen[str]
    grpc_port: int
    http_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def http_ready(self) -> bool:
        try:
            with _DIRECT.open(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False


@dataclass
class Restart:
    """What the clients saw while one server drained."""

    answered: int = 0
    sent_after_sigterm: int = 0
    errors: list[str] = field(default_factory=list)
    ready_in_grace: bool | None = None
    answered_in_grace: bool = False
    drained_s: float = 0.0
    exit_code: int | None = None


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drain")
    preset = recsys.get_architecture("two_tower").preset("tiny")
    train("two_tower", preset, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=root / "tt.pt")
    export_to_repository(load_model(root / "tt.pt", max_batch_size=16), [Format.ONNX], root / "repo")
    return root / "repo"


@pytest.fixture()
def start_serve(repo: Path, tmp_path: Path) -> Iterator[Callable[[float], Serve]]:
    """Starts `tritonstack serve --drain-grace G` on free ports; stops what is left at the end."""
    started: list[Serve] = []

    def start(grace: float) -> Serve:
        grpc_port, http_port, log = free_port(), free_port(), tmp_path / f"triton-{len(started)}.log"
        args = ["--grpc-port", grpc_port, "--http-port", http_port, "--log-file", log]
        command = [*CLI, "serve", "--repo", repo, "--drain-grace", grace, *args]
        process = subprocess.Popen(list(map(str, command)), stdout=subprocess.PIPE, text=True)
        started.append(Serve(process, grpc_port, http_port, log))
        assert process.stdout is not None and "Triton ready" in process.stdout.readline()
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            stop_serve(server.process)


async def _rolling_restart(draining: Serve, other: Serve) -> Restart:
    report = Restart()
    sigterm_at: float | None = None
    done = asyncio.Event()
    async with (
        AsyncTritonClient([draining.url, other.url]) as both,
        AsyncTritonClient(draining.url, retry=NO_RETRY) as draining_only,
    ):
        inputs = (await both.model_spec(MODEL)).random_inputs(1)

        async def worker() -> None:
            while not done.is_set():
                after = sigterm_at is not None
                try:
                    await both.infer(MODEL, inputs)
                except ClientError as exc:
                    report.errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    report.answered += 1
                report.sent_after_sigterm += after

        async def restart() -> None:
            nonlocal sigterm_at
            await asyncio.sleep(1.0)
            draining.process.send_signal(signal.SIGTERM)
            sigterm_at = time.monotonic()
            await asyncio.sleep(GRACE_S / 4)
            report.ready_in_grace = await asyncio.to_thread(draining.http_ready)
            await draining_only.infer(MODEL, inputs)  # raises if the draining server refuses it
            report.answered_in_grace = time.monotonic() - sigterm_at < GRACE_S
            report.exit_code = await asyncio.to_thread(draining.process.wait, 60)
            report.drained_s = time.monotonic() - sigterm_at
            await asyncio.sleep(0.5)  # and requests after it is gone
            done.set()

        await asyncio.gather(restart(), *(worker() for _ in range(WORKERS)))
    return report


def test_sigterm_drains_one_server_and_the_client_loses_nothing(
    start_serve: Callable[[float], Serve],
) -> None:
    draining, other = start_serve(GRACE_S), start_serve(GRACE_S)
    assert draining.http_ready() and other.http_ready()
    report = asyncio.run(_rolling_restart(draining, other))
    assert not report.errors, f"{len(report.errors)} failed, first: {report.errors[0]}"
    assert report.ready_in_grace is False, "the draining server still reported ready"
    assert report.answered_in_grace, "the draining server stopped answering gRPC within its grace"
    assert report.exit_code == 0
    assert draining.process.stdout is not None
    printed = draining.process.stdout.read()
    assert "Draining: not ready" in printed and "Stopped after" in printed, printed
    log = draining.log.read_text()
    assert "Waiting for in-flight requests to complete" in log and "Exit timeout expired" not in log
    assert report.drained_s >= GRACE_S and report.sent_after_sigterm > WORKERS
    assert other.http_ready()
    in_flight = re.search(r"has (\d+) in-flight inferences", log)  # when Triton stopped accepting
    print(
        f"\nrolling restart: {report.answered} answered, {report.sent_after_sigterm} sent after SIGTERM, "
        f"0 failed; the drained server finished {in_flight[1] if in_flight else 0} in flight and exited "
        f"{report.drained_s:.1f} s after SIGTERM (grace {GRACE_S:g} s)"
    )


def test_a_second_signal_ends_the_grace(start_serve: Callable[[float], Serve]) -> None:
    server = start_serve(600)
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while server.http_ready():  # draining once readiness fails
        assert time.monotonic() < deadline, "still ready 10 s after SIGTERM"
        time.sleep(0.1)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0  # not after the 600 s grace


def test_drain_grace_out_of_range_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--repo", str(tmp_path), "--drain-grace", "-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tritonstack serve: error: --drain-grace -1: give seconds from 0 to 3600"
    )
