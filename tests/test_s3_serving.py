"""Issue 16, items 2 and 3: `tritonstack serve --repo s3://...` on moto's S3 server on 127.0.0.1.

The reference models and a custom one, published with `tritonstack export --repo s3://...`, are
served from the store (our Python-based backends read what Triton downloaded). Then three
`serve --watch` replicas of one bucket under steady load from one multi-endpoint client: one
replica is SIGKILLed and a new version published while requests flow; no request fails, every
answer is PyTorch's for version 1 or version 2, and the surviving replicas move to version 2
within the poll interval plus the load time (printed: the measured convergence)."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from tests.custom_models import make_scorer
from tests.s3_store import BUCKET
from tests.serve_process import stop_serve
from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.client import ClientError, TritonClient
from tritonstack.export.checkpoint import LoadedModel, ModelSource, load_model
from tritonstack.export.custom import CustomArch, parse_input
from tritonstack.export.verify import compare
from tritonstack.recsys.train import train
from tritonstack.runtimes.runners import TorchRunner
from tritonstack.serve import free_port
from tritonstack.spec import Array

pytestmark = pytest.mark.server
CLI = [sys.executable, "-m", "tritonstack.cli"]
MAX_BATCH = "8"
SCORER = [
    "--arch",
    "tests.custom_models:make_scorer",
    "--input",
    "ids:int64:3:50",
    "--input",
    "dense:float32:4",
]
SCORER_SOURCE = ModelSource(
    custom=CustomArch(
        "tests.custom_models:make_scorer",
        (parse_input("ids:int64:3:50"), parse_input("dense:float32:4")),
        ("p",),
    )
)
POLL_S = 0.5  # serve --watch rescans the repository this often (serve/supervise.py)
REPLICAS = 3
WORKERS = 4


@dataclass
class Serve:
    process: subprocess.Popen[str]
    url: str
    log: Path
    lines: list[str] = field(default_factory=list)  # what serve printed after "Triton ready"

    def triton_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0])

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"serve never printed {text!r}: {self.lines}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name in recsys.ARCHITECTURES:
        paths[name] = root / f"{name}.pt"
        train(name, recsys.get_architecture(name).preset("tiny"), steps=2, batch_size=32, lr=1e-3, seed=0,
              checkpoint_path=paths[name])  # fmt: skip
    paths["dlrm_v2"] = root / "dlrm_v2.pt"
    train("dlrm", recsys.get_architecture("dlrm").preset("tiny"), steps=2, batch_size=32, lr=1e-3, seed=1,
          checkpoint_path=paths["dlrm_v2"])  # fmt: skip
    paths["scorer"] = root / "scorer.pt"
    torch.save(make_scorer().state_dict(), paths["scorer"])
    return paths


@pytest.fixture()
def start_serve(s3_store: str, tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(repo: str, *flags: str) -> Serve:
        port = free_port()
        log = tmp_path / f"triton-{len(started)}.log"
        command = [*CLI, "serve", "--repo", repo, "--grpc-port", str(port), "--log-file", str(log), *flags]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        started.append(Serve(process, f"127.0.0.1:{port}", log))
        assert process.stdout is not None
        lines = iter(process.stdout.readline, "")  # with --watch, one line per model loaded comes first
        assert any(line.startswith("Triton ready") for line in lines), log.read_text()
        threading.Thread(target=started[-1].lines.extend, args=(lines,), daemon=True).start()
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            stop_serve(server.process)


def _export(checkpoint: Path, repo: str, *flags: str) -> None:
    assert main(["export", str(checkpoint), "--repo", repo, "--max-batch-size", MAX_BATCH, *flags]) == 0


def _pytorch(loaded: LoadedModel, feeds: dict[str, Array]) -> dict[str, Array]:
    return TorchRunner(loaded.module, loaded.spec).infer(feeds)


def test_reference_and_custom_models_are_served_from_the_store(
    checkpoints: dict[str, Path], start_serve: Callable[..., Serve]
) -> None:
    repo = f"s3://{BUCKET}/reference"
    for name in recsys.ARCHITECTURES:
        _export(checkpoints[name], repo, "--formats", "onnx,torchscript")
    _export(
        checkpoints["scorer"],
        repo,
        "--formats",
        "onnx,torchscript",
        *SCORER,
        "--output",
        "p",
        "--name",
        "scorer",
    )
    server = start_serve(repo)
    loaded = {name: load_model(checkpoints[name]) for name in recsys.ARCHITECTURES}
    loaded["scorer"] = load_model(checkpoints["scorer"], SCORER_SOURCE, name="scorer")
    with TritonClient(server.url, timeout=30) as triton:
        ready = {(m.name, m.version) for m in triton.list_models() if m.state == "READY"}
        assert ready == {(f"{name}_{fmt}", "1") for name in loaded for fmt in ("onnx", "torchscript")}
        for name, model in loaded.items():
            feeds = model.spec.random_inputs(4, seed=1)
            for fmt in ("onnx", "torchscript"):
                got = triton.infer(f"{name}_{fmt}", feeds)
                for output, want in _pytorch(model, feeds).items():
                    max_abs, _, ok = compare(output, got[output], want)
                    assert ok, f"{name}_{fmt}.{output}: max abs diff {max_abs}"


def test_a_killed_backend_process_of_a_downloaded_model_is_replaced(
    checkpoints: dict[str, Path], start_serve: Callable[..., Serve]
) -> None:
    """Triton runs a model of a bucket from a temporary folder; serve still finds which model a
    dead backend process served, and reloads it."""
    repo, model = f"s3://{BUCKET}/stub", "dlrm_onnx"
    _export(checkpoints["dlrm"], repo, "--formats", "onnx")
    serve = start_serve(repo)
    triton = serve.triton_pid()
    time.sleep(1.0)  # the supervisor has seen the stub
    stubs = [int(p) for p in Path(f"/proc/{triton}/task/{triton}/children").read_text().split()]
    assert len(stubs) == 1 and b"/tmp/folder" in Path(f"/proc/{stubs[0]}/cmdline").read_bytes()
    os.kill(stubs[0], signal.SIGKILL)
    serve.wait_for(f"{model}: its backend process died; reloading the model", 10)
    serve.wait_for(f"{model}: reloaded in", 60)
    loaded = load_model(checkpoints["dlrm"])
    feeds = loaded.spec.random_inputs(2, seed=3)
    with TritonClient(serve.url, timeout=30) as triton_client:
        got = triton_client.infer(model, feeds)["probability"]
    assert compare("p", got, _pytorch(loaded, feeds)["probability"])[2]


@dataclass
class Load:
    answers: list[tuple[float, int]]  # (time, version whose PyTorch output it equals)
    errors: list[str]
    unmatched: int = 0


def test_three_replicas_survive_a_kill_and_converge_on_a_new_version(
    checkpoints: dict[str, Path], start_serve: Callable[..., Serve]
) -> None:
    repo, model = f"s3://{BUCKET}/replicas", "dlrm_onnx"
    _export(checkpoints["dlrm"], repo, "--formats", "onnx")
    replicas = [start_serve(repo, "--watch") for _ in range(REPLICAS)]
    versions = {1: load_model(checkpoints["dlrm"]), 2: load_model(checkpoints["dlrm_v2"])}
    feeds = versions[1].spec.random_inputs(4, seed=7)
    expected = {v: _pytorch(loaded, feeds)["probability"] for v, loaded in versions.items()}
    assert not np.allclose(expected[1], expected[2])  # the answer tells which version served it
    load = Load([], [])
    done = threading.Event()

    with TritonClient([r.url for r in replicas], timeout=10) as triton:

        def worker() -> None:
            while not done.is_set():
                try:
                    got = triton.infer(model, feeds)["probability"]
                except ClientError as exc:
                    load.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                matched = [v for v, want in expected.items() if compare("p", got, want)[2]]
                if matched:
                    load.answers.append((time.monotonic(), matched[0]))
                else:
                    load.unmatched += 1

        workers = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for thread in workers:
            thread.start()
        try:
            time.sleep(1.5)
            killed_triton = replicas[0].triton_pid()
            replicas[0].process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            survivors = replicas[1:]
            visible = _VisibleAt(model, repo)
            subprocess.run([*CLI, "export", str(checkpoints["dlrm_v2"]), "--repo", repo, "--formats", "onnx",
                            "--max-batch-size", MAX_BATCH], check=True, capture_output=True)  # fmt: skip
            published_at = time.monotonic()
            converged_at = _wait_converged(survivors, model, timeout=120)
            time.sleep(1.0)  # steady load on the new version
        finally:
            done.set()
            for thread in workers:
                thread.join()
            # Triton died with serve; its backend processes outlive it (as they would not a pod).
            with contextlib.suppress(ProcessLookupError, UnboundLocalError):
                os.killpg(killed_triton, signal.SIGKILL)

    visible_at = visible.result()
    convergence = converged_at - visible_at
    after = [v for t, v in load.answers if t > converged_at]
    print(
        f"\n{len(load.answers)} answers ({sum(v == 1 for _, v in load.answers)} v1, "
        f"{sum(v == 2 for _, v in load.answers)} v2), {len(load.errors)} failed; publish took "
        f"{published_at - killed_at:.1f} s after the SIGKILL (export, verification, upload); every "
        f"surviving replica had v2 loaded and v1 unloaded {convergence:.2f} s after the config making v2 "
        f"visible landed (poll every {POLL_S:g} s)"
    )
    assert visible.wall is not None
    for replica in survivors:
        seen, loaded = _load_times(replica.log, model, visible.wall)
        print(f"{replica.url}: started loading v2 {seen:.2f} s after it became visible, loaded it in "
              f"{loaded:.2f} s")  # fmt: skip
        assert seen < 2 * POLL_S + 5  # the next poll: listing the bucket, downloading the model
    assert load.errors == [] and load.unmatched == 0
    assert after and set(after) == {2}
    assert any(t > killed_at for t, _ in load.answers)
    assert convergence < POLL_S + 30  # the poll, the download and the load of one tiny model


class _VisibleAt:
    """Watches the store: when the config that makes version 2 loadable lands. Before it the
    config pins version 1 (or version 2 has no artifact yet), so the first look at version 2's
    artifact beside an unpinned config is that moment."""

    def __init__(self, model: str, repo: str) -> None:
        self._model = f"{repo.removeprefix(f's3://{BUCKET}/')}/{model}"
        self._at: float | None = None
        self.wall: float | None = None  # the same moment, as time.time()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        client = boto3.client("s3")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            config = client.get_object(Bucket=BUCKET, Key=f"{self._model}/config.pbtxt")["Body"].read()
            listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{self._model}/2/").get("Contents", [])
            if b"specific" not in config and any(o["Key"].endswith("model.onnx") for o in listed):
                self._at, self.wall = time.monotonic(), time.time()
                return
            time.sleep(0.02)

    def result(self) -> float:
        self._thread.join(timeout=60)
        assert self._at is not None, "version 2 never became visible in the store"
        return self._at


def _load_times(log: Path, model: str, visible: float) -> tuple[float, float]:
    """From Triton's log: seconds from `visible` (time.time()) to "loading: MODEL:2", and from there
    to version 2 loaded."""
    stamps = {}
    for line in log.read_text().splitlines():
        for event, text in (
            ("loading", f'"loading: {model}:2"'),
            ("loaded", f"successfully loaded '{model}'"),
        ):
            if text in line:
                stamps[event] = _log_time(line, visible)
    return stamps["loading"] - visible, stamps["loaded"] - stamps["loading"]


def _log_time(line: str, near: float) -> float:
    """Triton's `I1129 17:03:04.438710 ...` as time.time(), on the local date of `near`."""
    clock = datetime.datetime.strptime(line.split()[1], "%H:%M:%S.%f").time()
    day = datetime.datetime.fromtimestamp(near).date()
    return datetime.datetime.combine(day, clock).timestamp()


def _wait_converged(replicas: list[Serve], model: str, timeout: float) -> float:
    """When every replica has version 2 ready and version 1 unloaded (latest policy)."""
    clients = [grpcclient.InferenceServerClient(r.url) for r in replicas]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if all(c.is_model_ready(model, "2") and not c.is_model_ready(model, "1") for c in clients):
                return time.monotonic()
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()
    raise AssertionError(f"the replicas did not all move to version 2 within {timeout:.0f} s")
