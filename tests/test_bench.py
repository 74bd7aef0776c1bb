"""`tritonstack bench`: the stability rule and statistics as pure functions, then one short real
run on tiny models against the shared server, checked for structure and sanity (never speed)."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonstack import recsys
from tritonstack.benchmarks.compare import ratios
from tritonstack.benchmarks.config import BenchConfig, WindowRule, command_line
from tritonstack.benchmarks.load import Completion, prebuilt_request
from tritonstack.benchmarks.load_processes import ProcessLoad, RemoteTraceback, split
from tritonstack.benchmarks.stats import latency_ms, server_delta
from tritonstack.benchmarks.suite import RUNTIME_OF
from tritonstack.benchmarks.windows import Window, agree, is_stable, merge
from tritonstack.cli import main
from tritonstack.errors import ServeError, UsageError
from tritonstack.export.checkpoint import load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.registry import list_registry
from tritonstack.formats import DEFAULT_FORMATS
from tritonstack.recsys.train import train
from tritonstack.serve import free_port

MODELS = ("two_tower", "dlrm")
BATCH_SIZES = (1, 8)
LEVELS = (("concurrency", 1.0), ("concurrency", 4.0), ("request_rate", 50.0))


def _window(requests: int, p99_ms: float, duration_s: float = 1.0) -> Window:
    """`requests` latencies of 1 ms except the last, so p99 lands between 1 ms and `p99_ms`."""
    latencies = [1e-3] * (requests - 1) + [p99_ms * 1e-3]
    return Window(0.0, duration_s, latencies)


def test_latency_percentiles() -> None:
    summary = latency_ms([i / 1e3 for i in range(1, 101)])  # 1..100 ms
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["p50"] <= summary["p90"] <= summary["p95"] <= summary["p99"]


def test_agree_is_relative_to_the_smallest() -> None:
    assert agree([100.0, 105.0, 110.0], 0.10)
    assert not agree([100.0, 105.0, 111.0], 0.10)
    assert not agree([0.0, 0.0, 0.0], 0.10)


def test_stability_needs_three_agreeing_windows() -> None:
    steady = [_window(100, 5.0) for _ in range(3)]
    assert not is_stable(steady[:2])
    assert is_stable(steady)
    assert not is_stable([*steady, _window(150, 5.0)])  # throughput jumps by 50%
    assert not is_stable([*steady, _window(100, 50.0)])  # the tail does
    assert is_stable([_window(10, 80.0), *steady])  # only the last three count


def test_merge_keeps_every_request_and_the_outer_snapshots() -> None:
    a = Window(0.0, 1.0, [1e-3, 2e-3], stats_before={"a": 1})
    b = Window(1.0, 3.0, [3e-3], stats_after={"b": 2})
    merged = merge([a, b])
    assert merged.latencies_s == [1e-3, 2e-3, 3e-3]
    assert (merged.duration_s, merged.throughput) == (3.0, 1.0)
    assert (merged.stats_before, merged.stats_after) == ({"a": 1}, {"b": 2})


def _stats(success: int, ns: int, queue_ns: int | None, executions: int = 0) -> dict[str, Any]:
    inference: dict[str, Any] = {"success": {"count": str(success), "ns": str(ns)}}
    if queue_ns is not None:
        inference["queue"] = {"count": str(success), "ns": str(queue_ns)}
    entry = {"name": "m", "version": "1", "inference_stats": inference}
    if executions:  # Triton's JSON omits zero counters; batch-1 requests: one sample each
        entry |= {"execution_count": str(executions), "inference_count": str(success)}
    return {"model_stats": [entry]}


def test_server_delta_per_request_and_missing_counters() -> None:
    delta = server_delta(_stats(10, 1_000_000, None), _stats(20, 3_000_000, 500_000), "m", "1")
    assert delta["requests"] == 10
    assert delta["total"] == pytest.approx(200.0)  # 2 ms over 10 requests, in us
    assert delta["queue"] == pytest.approx(50.0)
    assert delta["compute_infer"] == 0.0
    assert delta["formed_batch"] == 0.0  # no executions recorded
    batched = server_delta(_stats(10, 0, None, executions=10), _stats(50, 0, None, executions=20), "m", "1")
    assert (batched["executions"], batched["formed_batch"]) == (10, 4.0)  # 40 samples in 10 runs
    with pytest.raises(KeyError):
        server_delta(_stats(0, 0, None), _stats(0, 0, None), "m", "2")


def test_load_split_over_processes() -> None:
    assert split("concurrency", 16, 3) == [6, 5, 5]
    assert split("concurrency", 1, 4) == [1]  # no idle workers
    assert split("request_rate", 90, 3) == [30, 30, 30]
    with pytest.raises(UsageError, match="--client-processes"):
        BenchConfig(client_processes=0)


def test_a_failed_load_worker_sends_its_traceback() -> None:
    """An exception cannot be chained across processes: the worker's traceback (its own causes
    included) comes back as the cause of the error the main process raises."""
    request = prebuilt_request("m", "1", {"x": np.zeros((1, 4), np.float32)})
    load = ProcessLoad(f"127.0.0.1:{free_port()}", request, "concurrency", 1.0, processes=1)
    with pytest.raises(
        ServeError, match="load worker failed: ServeError: m version 1 failed under load"
    ) as err:
        asyncio.run(load.start())
    cause = err.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "Traceback" in str(cause) and "AioRpcError" in str(cause)


def test_window_rule_must_fit_warm_up_and_windows() -> None:
    with pytest.raises(UsageError, match="max-cell-s"):
        WindowRule(window_s=1.0, max_cell_s=3.0)


def test_command_line_repeats_the_run() -> None:
    command = command_line(BenchConfig(batch_sizes=(1, 64), request_rates=(50.0,)))
    assert command.startswith("tritonstack bench --models dlrm,dcn_v2,two_tower --formats onnx,torchscript")
    assert "--batch-sizes 1,64 " in command and "--request-rate 50 " in command and "--url" not in command


def test_missing_checkpoint_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--models", "dlrm", "--checkpoints", str(tmp_path), "--repo", str(tmp_path)])
    assert code == 2
    assert "tritonstack demo" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bench_run(
    triton_server_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("bench")
    repo, checkpoints, out = root / "repo", root / "checkpoints", root / "out"
    for name in MODELS:
        path = checkpoints / f"{name}.pt"
        arch = recsys.get_architecture(name)
        train(name, arch.preset("tiny"), steps=2, batch_size=32, lr=1e-3, seed=0, checkpoint_path=path)
        export_to_repository(load_model(path), DEFAULT_FORMATS, repo, version=1)
    server = triton_server_factory(repo)
    # The CLI end to end, against the shared server: as `--url` would reach any Triton.
    code = main(
        [
            "bench", "--models", ",".join(MODELS), "--batch-sizes", ",".join(map(str, BATCH_SIZES)),
            "--concurrency", "1,4", "--request-rate", "50", "--repo", str(repo), "--checkpoints",
            str(checkpoints), "--url", server.grpc_url, "--out", str(out), "--window-s", "0.15",
            "--max-cell-s", "0.9",
        ]
    )  # fmt: skip
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.server
def test_every_cell_is_measured(bench_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = bench_run
    cells = {(c["model"], c["format"], c["batch_size"], c["mode"], c["level"]) for c in results["cells"]}
    formats = [f.value for f in DEFAULT_FORMATS]
    expected = {
        (m, f, b, *level) for m, f, b, level in itertools.product(MODELS, formats, BATCH_SIZES, LEVELS)
    }
    assert cells == expected
    assert len(results["cells"]) == len(expected)


@pytest.mark.server
def test_cells_are_sane(bench_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = bench_run
    for cell in results["cells"]:
        latency, server = cell["latency_ms"], cell["server_us"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"], cell
        assert cell["inferences_per_s"] > 0
        assert cell["samples_per_s"] == pytest.approx(cell["inferences_per_s"] * cell["batch_size"])
        compute = server["compute_input"] + server["compute_infer"] + server["compute_output"]
        assert 0 < compute <= latency["mean"] * 1e3, cell
        assert cell["requests"]["client"] == cell["requests"]["triton_success"] > 0
        assert isinstance(cell["stable"], bool) and len(cell["windows"]) >= 3
        if cell["mode"] == "concurrency" and cell["level"] == 1:
            assert "p50_ms" in cell["overhead"]
        assert cell["overhead"]["throughput_ratio"] > 0
        assert server["formed_batch"] >= cell["batch_size"], cell  # whole requests per execution
        assert cell["overhead"]["formed_batch"] >= cell["batch_size"]
        assert cell["overhead"]["throughput_ratio_formed"] > 0


@pytest.mark.server
def test_in_process_baselines_and_environment(bench_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = bench_run
    found = {(b["model"], b["runtime"], b["batch_size"]) for b in results["baselines"]}
    runtimes = ("onnxruntime", "torchscript", "pytorch")
    requested = set(itertools.product(MODELS, runtimes, BATCH_SIZES))
    formed = {(c["model"], RUNTIME_OF[c["format"]], c["overhead"]["formed_batch"]) for c in results["cells"]}
    assert found == requested | formed  # plus the artifact at each batch size Triton formed
    assert {b["threads"] for b in results["baselines"]} == {1}  # as the exported configs give
    env = results["environment"]
    assert env["triton_server"] and env["cpu"] and env["torch"] and "bench" in env["command"]


@pytest.mark.server
def test_files_and_compare_with_itself(
    bench_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, results = bench_run
    names = ("results.json", "results.csv", "results.md", "report.html", "latency_vs_concurrency.png",
             "throughput_vs_batch.png", "overhead_breakdown.png")  # fmt: skip
    assert all((out / name).stat().st_size > 0 for name in names)
    assert len((out / "results.csv").read_text().splitlines()) == len(results["cells"]) + 1
    assert "data:image/png;base64," in (out / "report.html").read_text()
    csv_rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    md_lines = (out / "results.md").read_text().split("## In process")[0].splitlines()
    md_rows = [[v.strip() for v in line.strip("|").split("|")] for line in md_lines if line.startswith("| ")]
    md_first = dict(zip(md_rows[0], md_rows[1], strict=True))  # the header names the right values
    for column in ("queue_us", "client_remainder_us"):
        assert float(md_first[column]) == pytest.approx(float(csv_rows[0][column]), rel=0.01)
    same = ratios(out / "results.json", out / "results.json")
    assert len(same) == len(results["cells"])
    assert all(r == pytest.approx(1.0) for cell in same.values() for r in cell.values())
    capsys.readouterr()
    assert main(["bench", "compare", str(out / "results.json"), str(out / "results.json")]) == 0
    assert "1.000" in capsys.readouterr().out
    (out / "report.html").unlink()
    assert main(["bench", "report", str(out / "results.json")]) == 0
    assert (out / "report.html").stat().st_size > 0


@pytest.mark.server
def test_latency_lands_in_the_registry(bench_run: tuple[Path, dict[str, Any]]) -> None:
    """`tritonstack models` shows each measured version's batch-1 p50 from its recorded metadata."""
    out, results = bench_run
    measured = {
        (c["model"], c["format"]): c["latency_ms"]["p50"]
        for c in results["cells"]
        if c["mode"] == "concurrency" and c["level"] == 1 and c["batch_size"] == min(BATCH_SIZES)
    }
    rows = {(r.model.rsplit("_", 1)[0], r.format): r.latency_ms for r in list_registry(out.parent / "repo")}
    assert rows == measured


@pytest.mark.server
def test_floor_probes_every_layer(bench_run: tuple[Path, dict[str, Any]]) -> None:
    """`bench floor` on its own embedded server (it adds the identity model): every probe, Triton's
    counts equal to the requests sent (checked inside), and the layers table per model."""
    root = bench_run[0].parent
    out = root / "floor"
    args = ["--repo", str(root / "repo"), "--checkpoints", str(root / "checkpoints"), "--out", str(out)]
    code = main(["bench", "floor", "--models", "dlrm", *args, "--requests", "100", "--warmup", "5"])
    assert code == 0
    results = json.loads((out / "floor.json").read_text())
    probes = {(p["model"], p["where"], p["path"]): p for p in results["probes"]}
    formats = [f.value for f in DEFAULT_FORMATS]
    served = {
        (f"dlrm_{f}", "served", path)
        for f in formats
        for path in ("raw", "aio", "tritonclient", "tritonstack")
    }
    in_process = {(f"dlrm_{f}", "in_process", path) for f in formats for path in ("hot", "idle")}
    identity = {("server", "served", "grpc_live"), ("tritonstack_identity", "served", "raw")}
    assert set(probes) == served | in_process | identity
    for probe in probes.values():
        latency = probe["latency_us"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"]
        server = probe["server_us"]
        if server is not None:
            assert 0 < server["compute_infer"] <= server["total"] < latency["mean"]
    table = (out / "floor.md").read_text()
    assert all(f"| dlrm_{f} | " in table for f in formats)


def test_floor_needs_enough_requests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "floor", "--requests", "10"]) == 2
    assert "--requests must be at least 100" in capsys.readouterr().err


@pytest.mark.server
def test_load_over_client_processes(bench_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """`--client-processes 2`: the workers' completions reach the windows, and Triton counts exactly
    the requests they sent, closed and open loop. Last in the module: it records new latencies."""
    out, results = bench_run
    root = out.parent
    code = main(
        [
            "bench", "--models", "two_tower", "--formats", "onnx", "--batch-sizes", "1", "--concurrency",
            "3", "--request-rate", "100", "--repo", str(root / "repo"), "--checkpoints",
            str(root / "checkpoints"), "--url", results["config"]["url"], "--out", str(tmp_path),
            "--window-s", "0.15", "--max-cell-s", "0.9", "--client-processes", "2",
        ]
    )  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "results.json").read_text())
    assert run["config"]["client_processes"] == 2
    assert "--client-processes 2" in run["environment"]["command"]
    assert [(c["mode"], c["level"]) for c in run["cells"]] == [("concurrency", 3.0), ("request_rate", 100.0)]
    for cell in run["cells"]:
        assert cell["requests"]["client"] == cell["requests"]["triton_success"] > 0
        assert 0 < cell["latency_ms"]["p50"] <= cell["latency_ms"]["p99"]
        assert len(cell["windows"]) >= 3 and all(w["requests"] > 0 for w in cell["windows"][-3:])


@pytest.mark.server
def test_process_load_holds_nothing_back_at_a_cut(bench_run: tuple[Path, dict[str, Any]]) -> None:
    """Each `completions()` returns every request finished before it was called, however late the
    workers' reports arrive, so no window loses requests to the next one."""
    out, results = bench_run
    url = results["config"]["url"]
    spec = load_model(out.parent / "checkpoints" / "two_tower.pt").spec

    async def cuts() -> list[tuple[float, list[Completion]]]:
        request = prebuilt_request("two_tower_onnx", "1", spec.random_inputs(1, seed=0))
        load = ProcessLoad(url, request, "concurrency", 8, processes=2)
        await load.start()
        got: list[tuple[float, list[Completion]]] = []
        for pause in (0.1, 3.0):  # 3 s of reports overflow the queue's pipe, as a fast server's do
            await asyncio.sleep(pause)
            called = time.perf_counter()
            got.append((called, await load.completions()))
        got.append((time.perf_counter(), await load.stop()))
        return got

    batches = asyncio.run(cuts())
    assert all(batch for _, batch in batches[:-1])
    for (called, _), (_, later) in itertools.pairwise(batches):
        assert all(t >= called for t, _ in later), "a completion from before the cut came late"
