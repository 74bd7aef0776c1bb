"""NVIDIA's perf_analyzer from PyPI alone (benchmarks/perf_analyzer.py), run against the embedded
Triton: installed from the tritonclient wheel with nvidia-pytriton's libraries, measuring a cell
with valid generated ids, its CSV imported, and the bench's cells written in its columns."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerFactory
from tests.reference_models import write_reference_models
from tritonstack.benchmarks import perf_analyzer
from tritonstack.benchmarks.inputs import request_bytes
from tritonstack.client import TritonClient, check_request
from tritonstack.errors import ServeError
from tritonstack.spec import ModelSpec, read_config

pytestmark = pytest.mark.server

FAST = perf_analyzer.Settings(measurement_interval_ms=500, max_trials=4)


@pytest.fixture(scope="module")
def analyzer() -> perf_analyzer.PerfAnalyzer:
    return perf_analyzer.install()


@pytest.fixture(scope="module")
def served(
    triton_server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("perf_analyzer")
    write_reference_models(root / "repo", root, ("dlrm",), max_batch_size=64)
    server = triton_server_factory(root / "repo")
    yield root / "repo", server.grpc_url
    server.stop()


def _failures(url: str, model: str) -> int:
    with TritonClient(url) as triton:
        stats = triton.statistics(model)["model_stats"][0]["inference_stats"]["fail"]
    return int(stats.get("count", 0))


def test_installed_from_the_wheel_without_touching_tritonclient(analyzer: perf_analyzer.PerfAnalyzer) -> None:
    assert analyzer.binary.is_file()
    assert importlib.metadata.version("tritonclient") != ""  # the project's own stays installed as it was
    lib = analyzer.binary.parent.parent / "lib"
    assert {p.name for p in lib.iterdir()} == {"libb64.so.0d", "libcudart.so.12"}
    assert all(
        (lib / name).resolve().parent.name == "nvidia_pytriton.libs"
        for name in ("libb64.so.0d", "libcudart.so.12")
    )


def test_generated_rows_are_valid_requests(served: tuple[Path, str]) -> None:
    repo, _ = served
    spec = ModelSpec.from_config(read_config(repo / "dlrm_onnx" / "config.pbtxt"))
    data = perf_analyzer.input_data(spec, rows=50, seed=3)["data"]
    assert len(data) == 50
    for row in data:
        inputs = {
            t.name: np.asarray(row[t.name]["content"], dtype=t.dtype).reshape(1, *row[t.name]["shape"])
            for t in spec.inputs
        }
        check_request(spec, inputs)  # ids within every table


def test_shared_memory_regions_are_bounded_like_the_pool(served: tuple[Path, str]) -> None:
    """Over shared memory perf_analyzer fills one whole-batch region per data row, row by row (a
    cudaMemcpy each for CUDA): DLRM at 16384 with a row per pointer it can hold meant gigabytes of
    regions and tens of millions of copies before the first request, and on an H200 a bench with
    perf_analyzer over CUDA shared memory at that batch was stopped unfinished."""
    repo, _ = served
    spec = ModelSpec.from_config(read_config(repo / "dlrm_onnx" / "config.pbtxt"))
    messages = perf_analyzer.Settings()
    assert perf_analyzer.data_rows(spec, 1, messages) == perf_analyzer.DATA_ROWS
    assert perf_analyzer.data_rows(spec, 16384, messages) == 1024  # pointers only: nothing copied
    for memory in ("system", "cuda"):
        settings = perf_analyzer.Settings(shared_memory=memory)
        rows = perf_analyzer.data_rows(spec, 16384, settings)
        assert (
            rows * request_bytes(spec, 16384)
            <= settings.max_mb * 2**20
            < (rows + 1) * request_bytes(spec, 16384)
        )
    tiny = perf_analyzer.Settings(shared_memory="system", max_mb=1e-6)
    assert perf_analyzer.data_rows(spec, 16384, tiny) == 1  # one region at least


@pytest.mark.parametrize("model", ["dlrm_onnx", "dlrm_torchscript"])
def test_a_cell_measured_by_perf_analyzer(
    analyzer: perf_analyzer.PerfAnalyzer, served: tuple[Path, str], model: str
) -> None:
    repo, url = served
    spec = ModelSpec.from_config(read_config(repo / model / "config.pbtxt"))
    failed_before = _failures(url, model)

    cell = perf_analyzer.run(analyzer, url, spec, batch_size=8, concurrency=2, settings=FAST)

    assert _failures(url, model) == failed_before  # every generated id was accepted
    assert set(cell["csv"]) == set(perf_analyzer.COLUMNS)
    assert cell["level"] == 2 and cell["batch_size"] == 8 and cell["load_generator"] == "perf_analyzer"
    assert cell["samples_per_s"] == pytest.approx(cell["inferences_per_s"] * 8)
    assert 0 < cell["latency_ms"]["p50"] <= cell["latency_ms"]["p99"]
    assert cell["server_us"]["compute_infer"] > 0
    assert cell["data"] == {"kind": "generated", "rows": perf_analyzer.DATA_ROWS, "seed": 0}
    assert "-b 8 --concurrency-range 2:2" in cell["command"]


def test_a_cell_over_system_shared_memory_within_the_pools_bytes(
    analyzer: perf_analyzer.PerfAnalyzer, served: tuple[Path, str]
) -> None:
    repo, url = served
    spec = ModelSpec.from_config(read_config(repo / "dlrm_onnx" / "config.pbtxt"))
    five_requests = 5 * request_bytes(spec, 8) / 2**20
    settings = dataclasses.replace(FAST, shared_memory="system", max_mb=five_requests)
    tensors = tuple(t.name for t in (*spec.inputs, *spec.outputs))  # its regions: TENSOR[_STREAM_STEP]

    def regions() -> set[str]:
        return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(tensors)}

    before = regions()

    cell = perf_analyzer.run(analyzer, url, spec, batch_size=8, concurrency=2, settings=settings)

    assert cell["data"]["rows"] == 5 and cell["shared_memory"] == "system"
    assert cell["samples_per_s"] > 0
    assert regions() == before  # unlinked when it exits


def test_a_server_that_never_answers_stops_perf_analyzer(
    analyzer: perf_analyzer.PerfAnalyzer, served: tuple[Path, str]
) -> None:
    """perf_analyzer waits forever on a server that accepts and never answers (or on hours of
    region copies): the bench stops it past its trials and a setup allowance, and says so."""
    repo, _ = served
    spec = ModelSpec.from_config(read_config(repo / "dlrm_onnx" / "config.pbtxt"))
    settings = dataclasses.replace(FAST, max_trials=2, setup_s=2.0)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ServeError, match=f"did not finish in {settings.timeout_s:g} s"):
            perf_analyzer.run(analyzer, url, spec, batch_size=8, concurrency=2, settings=settings)
    assert time.monotonic() - started < settings.timeout_s + 10  # SIGINT, then SIGKILL after 5 s


def test_bench_cells_written_in_perf_analyzers_columns(tmp_path: Path) -> None:
    cell = {
        "mode": "concurrency",
        "level": 4.0,
        "batch_size": 16,
        "latency_ms": {"mean": 3.0, "p50": 2.5, "p90": 4.0, "p95": 4.5, "p99": 6.25},
        "samples_per_s": 5114.444,
        "server_us": {"queue": 275.0, "compute_input": 22.0, "compute_infer": 927.0, "compute_output": 307.0},
    }
    rate = {**cell, "mode": "rate"}  # perf_analyzer's CSV has a concurrency column: closed loop only
    path = tmp_path / "ours.csv"

    perf_analyzer.write_csv([cell, rate], path)

    assert path.read_text().splitlines()[0] == ",".join(perf_analyzer.COLUMNS)
    (row,) = perf_analyzer.read_csv(path)
    back = perf_analyzer.from_csv_row(row, batch_size=16)
    assert back["latency_ms"] == cell["latency_ms"]
    assert back["server_us"] == cell["server_us"]
    assert back["samples_per_s"] == pytest.approx(5114.44)
    assert row["Network+Server Send/Recv"] == 3000 - 275 - 22 - 927 - 307
    assert "Client Send" not in row  # not measured by the bench: left empty


def test_the_last_windows_rate_is_read_in_either_notation() -> None:
    output = (
        "  Pass [1] throughput: 3798.92 infer/sec. Avg latency: 4184 usec (std 2931 usec). \n"
        "  Pass [2] throughput: 6.92218e+06 infer/sec. Avg latency: 2358 usec (std 1636 usec). \n"
    )
    assert perf_analyzer.last_pass_throughput(output) == 6.92218e06
    assert perf_analyzer.last_pass_throughput("no windows") is None
