"""Nothing tritonstack writes after publishing reloads a served model, under `serve --watch`
(its supervisor rescans the model directories and asks Triton to load what changed) and under
Triton's own poll every second (how NVIDIA's container runs a polled repository, `deploy
kubernetes`' default): a benchmark's record step and status bookkeeping go to the repository's
state file; `models promote` changes `config.pbtxt` and no other file of the model directories.
A file written beside the config instead (a per-model sidecar) reloads every version: the
control that shows this test sees reloads at all."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import POLL_ARGS, ServerFactory
from tests.test_faults import SERVE_START_S, Serve
from tritonstack import recsys
from tritonstack.benchmarks.record import record_in_metadata
from tritonstack.cli import main
from tritonstack.export.checkpoint import load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.registry import list_registry
from tritonstack.export.state import LEGACY_METADATA_NAME, STATE_NAME, read_metadata, update_metadata
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.spec import CONFIG_NAME, PRODUCTION_VERSION_PARAMETER, Array, read_config, wire_dtype

ONNX, TORCHSCRIPT = "dlrm_onnx", "dlrm_torchscript"
POLLS = 3.5  # seconds: more than three polls (Triton's --repository-poll-secs=1; serve's 0.5 s rescan)

Tree = dict[str, tuple[int, int]]


def _tree(repo: Path) -> Tree:
    """Every file and folder under the model directories, with its mtime and size."""
    return {
        str(p.relative_to(repo)): (p.stat().st_mtime_ns, p.stat().st_size)
        for model in (ONNX, TORCHSCRIPT)
        for p in sorted((repo / model).rglob("*"))
    } | {model: ((repo / model).stat().st_mtime_ns, 0) for model in (ONNX, TORCHSCRIPT)}


@dataclass(frozen=True)
class Served:
    """A Triton serving the repository: its gRPC address and its log."""

    grpc_url: str
    log_path: Path


def _loads(server: Served) -> list[str]:
    """Triton's `loading: <model>:<version>` lines so far: a reload, or a config update in place."""
    return [line for line in server.log_path.read_text().splitlines() if "loading: " in line]


def _served_requests(server: Served, model: str) -> int:
    """Successful requests of the loaded model object: a reload starts a new one at zero."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    client.close()
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats)


def _infer(server: Served, model: str, feeds: dict[str, Array], times: int) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, value in feeds.items():
        inputs.append(grpcclient.InferInput(name, list(value.shape), wire_dtype(str(value.dtype))))
        inputs[-1].set_data_from_numpy(value)
    for _ in range(times):
        client.infer(model, inputs)
    client.close()


def _bench_results(repo: Path) -> dict[str, object]:
    """What a benchmark run hands its record step: one concurrency-1 cell per served model."""
    cells = [
        {
            "model": "dlrm",
            "format": fmt.value,
            "name": f"dlrm_{fmt.value}",
            "version": 1,
            "mode": "concurrency",
            "level": 1,
            "batch_size": 1,
            "latency_ms": {"p50": 1.5, "p99": 3.0},
            "stable": True,
        }
        for fmt in (Format.ONNX, Format.TORCHSCRIPT)
    ]
    return {"cells": cells, "environment": {"git_commit": "abc"}}


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """dlrm as ONNX (versions 1 and 2, production and staging) and TorchScript (version 1)."""
    checkpoint = tmp_path / "dlrm.pt"
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=checkpoint)
    loaded = load_model(checkpoint, max_batch_size=4)
    repo = tmp_path / "repo"
    export_to_repository(loaded, [Format.ONNX, Format.TORCHSCRIPT], repo)
    export_to_repository(loaded, [Format.ONNX], repo)
    assert main(["models", "promote", ONNX, "1", "--status", "production", "--repo", str(repo)]) == 0
    assert main(["models", "promote", ONNX, "2", "--status", "staging", "--repo", str(repo)]) == 0
    return repo


@pytest.fixture(params=["serve --watch", "triton poll"])
def serve(
    request: pytest.FixtureRequest, tmp_path: Path, triton_server_factory: ServerFactory
) -> Iterator[Callable[[Path], Served]]:
    started: list[Serve] = []

    def start(repo: Path) -> Served:
        if request.param == "triton poll":
            server = triton_server_factory(repo, model_control_mode="poll", extra_args=POLL_ARGS)
            return Served(server.grpc_url, server.log_path)
        started.append(Serve(repo, tmp_path / "triton.log", "--watch"))
        started[-1].wait_for("^Triton ready", SERVE_START_S)
        return Served(started[-1].url, tmp_path / "triton.log")

    yield start
    for process in started:
        process.stop()


@pytest.mark.server
def test_bench_record_and_status_reload_nothing_and_promote_changes_only_the_config(
    repo: Path, serve: Callable[[Path], Served]
) -> None:
    server = serve(repo)
    feeds = load_model(repo.parent / "dlrm.pt", max_batch_size=4).spec.random_inputs(2)
    for model in (ONNX, TORCHSCRIPT):
        _infer(server, model, feeds, 3)
    served = {model: _served_requests(server, model) for model in (ONNX, TORCHSCRIPT)}
    loads, tree = _loads(server), _tree(repo)
    assert min(served.values()) >= 3 and len(loads) == 3  # onnx v1, v2; torchscript v1

    # The bench's record step and a status change that loads nothing new.
    recorded = record_in_metadata(_bench_results(repo), repo, repo.parent / "results.json")
    assert sorted(p.parent.name for p in recorded) == [ONNX, TORCHSCRIPT]
    assert main(["models", "promote", ONNX, "2", "--status", "ab-test", "--repo", str(repo)]) == 0
    time.sleep(POLLS)
    assert _tree(repo) == tree, "the model directories changed"
    assert _loads(server) == loads, "Triton loaded a model again"
    assert {model: _served_requests(server, model) for model in served} == served
    rows = {(r.model, r.version): r for r in list_registry(repo)}
    assert rows[(ONNX, 1)].latency_ms == 1.5 and rows[(TORCHSCRIPT, 1)].latency_ms == 1.5
    assert rows[(ONNX, 2)].status == "ab-test"
    assert json.loads((repo / STATE_NAME).read_text())["models"][ONNX]["2"]["status"] == "ab-test"

    # Promote that changes what Triton routes: config.pbtxt and nothing else.
    assert main(["models", "promote", ONNX, "2", "--status", "production", "--repo", str(repo)]) == 0
    changed = {path for path, stamp in _tree(repo).items() if tree.get(path) != stamp}
    assert changed <= {f"{ONNX}/{CONFIG_NAME}", ONNX} and f"{ONNX}/{CONFIG_NAME}" in changed
    assert read_config(repo / ONNX / CONFIG_NAME).parameters[PRODUCTION_VERSION_PARAMETER].string_value == "2"
    time.sleep(POLLS)
    reloaded = _loads(server)[len(loads) :]
    assert reloaded and all(ONNX in line for line in reloaded)  # the config changed: Triton re-reads it

    # The control: a file beside the config (a sidecar) makes every version of the model reload.
    loads = _loads(server)
    (repo / TORCHSCRIPT / "tritonstack.json").write_text("{}")
    time.sleep(POLLS)
    assert any(TORCHSCRIPT in line for line in _loads(server)[len(loads) :])


def test_legacy_metadata_is_read_and_never_written(tmp_path: Path) -> None:
    """A version exported before the state file keeps its `metadata.json`: its status and
    benchmark still show, and promote or a benchmark record leave the version directory as it is."""
    repo = tmp_path / "repo"
    version_dir = repo / ONNX / "1"
    version_dir.mkdir(parents=True)
    (repo / ONNX / CONFIG_NAME).write_text(f'name: "{ONNX}"\nplatform: "onnxruntime_onnx"\n')
    (version_dir / "model.onnx").write_bytes(b"not read here")
    legacy = {"options": {"format": "onnx"}, "status": "production", "benchmark": {"p50_ms": 2.5}}
    (version_dir / LEGACY_METADATA_NAME).write_text(json.dumps(legacy))
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in version_dir.iterdir()}
    [row] = list_registry(repo)
    assert (row.status, row.latency_ms) == ("production", 2.5)

    assert main(["models", "promote", ONNX, "1", "--status", "staging", "--repo", str(repo)]) == 0
    results = _bench_results(repo)
    results["cells"] = results["cells"][:1]  # type: ignore[index]
    record_in_metadata(results, repo, tmp_path / "results.json")
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in version_dir.iterdir()} == before
    meta = read_metadata(version_dir)
    assert meta is not None and meta["status"] == "staging" and meta["benchmark"]["p50_ms"] == 1.5
    assert meta["options"] == {"format": "onnx"}


def _record_many(repo: Path, writer: int, count: int) -> None:
    for i in range(count):
        update_metadata(repo / ONNX / str(writer * count + i + 1), benchmark={"writer": writer})


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Four processes recording at once (a benchmark and promotes, say): every entry survives,
    because each read-modify-write holds the repository's lock."""
    writers, count = 4, 25
    with ProcessPoolExecutor(writers) as pool:
        for done in [pool.submit(_record_many, tmp_path, w, count) for w in range(writers)]:
            done.result()
    versions = json.loads((tmp_path / STATE_NAME).read_text())["models"][ONNX]
    assert sorted(map(int, versions)) == list(range(1, writers * count + 1))
    assert [p.name for p in tmp_path.iterdir()] == [STATE_NAME]  # no lock or temporary file left
