"""`tritonstack bench`: the stability rule, the input pool, model selection, backend labels and the
open-loop schedule as pure functions, then short real runs on tiny models against the shared server,
checked for structure and sanity (never speed). User-style models: tests/test_bench_models.py."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import itertools
import json
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack import recsys
from tritonstack.benchmarks.compare import ratios
from tritonstack.benchmarks.config import BenchConfig, PoolRule, Reference, WindowRule, command_line
from tritonstack.benchmarks.inputs import Pool, request_bytes
from tritonstack.benchmarks.load import Completion, Sender, open_loop
from tritonstack.benchmarks.load_processes import ProcessLoad, RemoteTraceback, split
from tritonstack.benchmarks.prebuilt import Prebuilt, prebuilt
from tritonstack.benchmarks.served_by import served_by
from tritonstack.benchmarks.stats import latency_ms, server_delta
from tritonstack.benchmarks.targets import local_targets, select
from tritonstack.benchmarks.windows import Series, Window, agree, is_stable, merge
from tritonstack.cli import main
from tritonstack.errors import ServeError, UsageError
from tritonstack.export.checkpoint import load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.registry import list_registry, promote
from tritonstack.formats import DEFAULT_FORMATS
from tritonstack.recsys.train import train
from tritonstack.serve import free_port
from tritonstack.spec import DEFAULT_MAX_BATCH_SIZE, ModelSpec, TensorSpec, ids_out_of_range

MODELS = ("two_tower", "dlrm")
BATCH_SIZES = (1, 8)
LEVELS = (("concurrency", 1.0), ("concurrency", 4.0), ("request_rate", 50.0))
# Short windows for tests: a window counts from 5 requests (the default is 50).
WINDOWS = ["--window-s", "0.15", "--max-cell-s", "0.9", "--min-window-requests", "5", "--pool-size", "16"]


def _window(requests: int, p50_ms: float, duration_s: float = 1.0, p99_ms: float | None = None) -> Window:
    """`requests` latencies of `p50_ms`, the last one `p99_ms` (default the same)."""
    latencies = [p50_ms * 1e-3] * (requests - 1) + [(p99_ms or p50_ms) * 1e-3]
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


def test_stability_is_throughput_and_p50_of_three_windows() -> None:
    steady = [_window(100, 5.0) for _ in range(3)]
    assert not is_stable(steady[:2])
    assert is_stable(steady)
    assert not is_stable([*steady, _window(150, 5.0)])  # throughput jumps by 50%
    assert not is_stable([*steady, _window(100, 6.0)])  # so does p50 (20%)
    assert is_stable([_window(10, 80.0), *steady])  # only the last three count
    # The tail alone does not decide: perf_analyzer's rule, p99 varies far more between windows.
    assert is_stable([_window(100, 5.0, p99_ms=p99) for p99 in (5.0, 50.0, 9.0)])


def _series(rule: WindowRule, *windows: tuple[int, float]) -> tuple[Series, list[bool], list[float]]:
    """Windows of (requests, p50 ms) back to back, each as long as the series asks; returns the
    series, whether it was done after each window, and each window's length."""
    series, done, lengths, start = Series(rule, 0.0), [], [], rule.window_s  # after the warm-up
    for requests, p50 in windows:
        length = series.length
        lengths.append(length)
        window = _window(requests, p50, length)
        window.start, window.end = start, start + length
        start = window.end
        done.append(series.add(window))
    return series, done, lengths


def test_windows_count_only_with_enough_requests_and_lengthen() -> None:
    rule = WindowRule(window_s=1.0, max_cell_s=40.0, min_requests=50)
    # Too few requests: not counted, and the next window is twice as long.
    series, done, lengths = _series(rule, (10, 5.0), (100, 5.0), (200, 5.0), (200, 5.0))
    assert [w.counted for w in series.windows] == [False, True, True, True]
    assert lengths == [1.0, 2.0, 2.0, 2.0]
    assert not series.stable and done == [False] * 4  # 50, 50 and 100 requests/s disagree
    # Disagreeing counted windows: each next one is longer, until they agree.
    series, done, lengths = _series(rule, (100, 5.0), (100, 7.0), (100, 5.0), (150, 5.0), (225, 5.0))
    assert lengths == [1.0, 1.0, 1.0, 1.5, 2.25]
    assert done == [False, False, False, False, True] and series.stable
    merged = series.last()  # the last three counted windows, contiguous
    assert merged.requests == 475 and merged.duration_s == pytest.approx(4.75)


def test_a_cell_stops_at_its_cap_unstable() -> None:
    rule = WindowRule(window_s=1.0, max_cell_s=6.0, min_requests=50)
    series, done, lengths = _series(rule, (100, 5.0), (100, 9.0), (100, 5.0), (100, 9.0))
    assert lengths == [1.0, 1.0, 1.0, 1.5]  # within the cap: 1 s warm-up + 4.5 s
    assert done == [False, False, False, True] and not series.stable
    # No window ever counted: the cell still reports what it saw.
    series, done, _ = _series(WindowRule(window_s=1.0, max_cell_s=4.0, min_requests=50), (3, 5.0), (4, 5.0))
    assert done[-1] and series.last().requests == 7


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


def _one_request() -> Prebuilt:
    """One request for a model `m` that no server has."""
    spec = ModelSpec("m", (TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (4,)),))
    return prebuilt("m", "1", spec, [{"x": np.zeros((1, 4), np.float32)}])


def test_a_failed_load_worker_sends_its_traceback() -> None:
    """An exception cannot be chained across processes: the worker's traceback (its own causes
    included) comes back as the cause of the error the main process raises."""
    load = ProcessLoad(
        f"127.0.0.1:{free_port()}", _one_request(), "concurrency", 1.0, processes=1, timeout_s=30.0
    )
    with pytest.raises(
        ServeError, match="load worker failed: ServeError: m version 1 failed under load"
    ) as err:
        asyncio.run(load.start())
    cause = err.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "Traceback" in str(cause) and "AioRpcError" in str(cause)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        yield f"127.0.0.1:{silent.getsockname()[1]}"


def test_a_request_without_an_answer_ends_at_its_deadline(silent_url: str) -> None:
    """Without a deadline the load waited forever on a server that had stopped answering."""

    async def send() -> None:
        async with grpc.aio.insecure_channel(silent_url) as channel:
            await Sender(channel, _one_request(), timeout_s=0.5).infer()

    started = time.monotonic()
    with pytest.raises(ServeError, match=r"^m version 1: a request got no answer within 0.5 s: the server"):
        asyncio.run(send())
    assert time.monotonic() - started < 5


def test_a_load_worker_without_an_answer_ends_at_its_deadline(silent_url: str) -> None:
    load = ProcessLoad(silent_url, _one_request(), "concurrency", 1.0, processes=1, timeout_s=0.5)
    with pytest.raises(
        ServeError, match="load worker failed: ServeError: m version 1: a request got no answer"
    ):
        asyncio.run(load.start())


def test_a_load_worker_that_dies_silently_is_one_line_without_a_cause() -> None:
    """A worker killed before it reports: the exit codes are all that is known, and no other
    error was being handled (an empty queue is no cause)."""
    load = ProcessLoad(
        f"127.0.0.1:{free_port()}", _one_request(), "concurrency", 1.0, processes=1, timeout_s=30.0
    )
    (worker,) = load._workers
    worker.start()
    worker.kill()
    worker.join()
    with pytest.raises(ServeError, match=r"died without reporting \(exit codes \[-9\]\)") as err:
        asyncio.run(load.stop())
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_window_rule_must_fit_warm_up_and_windows() -> None:
    with pytest.raises(UsageError, match="max-cell-s"):
        WindowRule(window_s=1.0, max_cell_s=3.0)
    with pytest.raises(UsageError, match="--min-window-requests"):
        WindowRule(min_requests=0)


def test_command_line_repeats_the_run() -> None:
    references = (Reference.parse("dlrm=ck/dlrm.pt"),)
    command = command_line(
        BenchConfig(("dlrm_onnx", "conv"), (1, 64), request_rates=(50.0,), references=references)
    )
    assert command.startswith("tritonstack bench --models dlrm_onnx,conv --batch-sizes 1,64 ")
    assert "--request-rate 50 " in command and "--url" not in command
    assert "--min-window-requests 50 --pool-size 1024 --pool-mb 64 --pool-seed 0" in command
    assert command.endswith("--reference dlrm=ck/dlrm.pt")


def test_reference_parses_a_custom_architecture() -> None:
    assert Reference.parse("conv=conv.pt:my_models:ConvNet") == Reference(
        "conv", Path("conv.pt"), "my_models:ConvNet"
    )
    assert Reference.parse("dlrm=checkpoints/dlrm.pt") == Reference("dlrm", Path("checkpoints/dlrm.pt"))
    with pytest.raises(UsageError, match="MODEL=CHECKPOINT"):
        Reference.parse("checkpoints/dlrm.pt")


def test_models_by_repository_or_base_name() -> None:
    available = ["conv_onnx", "conv_torchscript", "ranker_torchscript", "scorer"]
    assert select(["conv", "ranker_torchscript"], available, "repo") == available[:3]
    assert select(["scorer", "conv_onnx", "conv"], available, "repo") == [
        "scorer",
        "conv_onnx",
        "conv_torchscript",
    ]
    assert select([], available, "repo") == sorted(available)
    with pytest.raises(UsageError, match="no model 'dlrm' in repo: choose from conv_onnx, conv_torchscript"):
        select(["dlrm"], available, "repo")


def test_an_empty_repository_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--repo", str(tmp_path)]) == 2
    assert "tritonstack demo" in capsys.readouterr().err


SPEC = ModelSpec(
    "m",
    (TensorSpec("ids", "int64", (26,), high=tuple(range(3, 29))), TensorSpec("dense", "float32", (13,))),
    (TensorSpec("p", "float32", (1,)),),
)


def test_the_pool_is_distinct_valid_repeatable_and_bounded() -> None:
    pool = Pool.for_rule(SPEC, 4, PoolRule(size=32))
    batches = list(pool.batches())
    assert pool.size == len(batches) == 32
    assert len({b["ids"].tobytes() + b["dense"].tobytes() for b in batches}) == 32  # all distinct
    assert all(ids_out_of_range("ids", b["ids"], SPEC.inputs[0].high or 0) is None for b in batches)
    assert {b["ids"].shape for b in batches} == {(4, 26)}
    again = list(Pool.for_rule(SPEC, 4, PoolRule(size=32)).batches())
    assert all(np.array_equal(a["dense"], b["dense"]) for a, b in zip(batches, again, strict=True))
    other_seed = next(Pool.for_rule(SPEC, 4, PoolRule(size=32, seed=1)).batches())
    assert not np.array_equal(other_seed["dense"], batches[0]["dense"])
    # At a big batch the memory cap decides: 4096 rows of 26 ids and 13 floats are 1.06 MB a request.
    big = Pool.for_rule(SPEC, 4096, PoolRule(size=1024, max_mb=8))
    assert request_bytes(SPEC, 4096) == 4096 * (26 * 8 + 13 * 4)
    assert big.size == 8 * 2**20 // request_bytes(SPEC, 4096) == 7
    assert big.describe()["bytes"] == 7 * request_bytes(SPEC, 4096) <= 8 * 2**20


def _config(backend: str = "", platform: str = "", runtime: str = "") -> pb.ModelConfig:
    return pb.ModelConfig(name="m", backend=backend, platform=platform, runtime=runtime)


def test_backend_labels_from_the_served_config() -> None:
    """As Triton fills the config in: `runtime` is `model.py` for a Python-based backend only."""
    native = served_by(_config("onnxruntime", "onnxruntime_onnx"), embedded=False)
    assert (native["kind"], native["ours"], native["label"]) == ("native", False, "native")
    assert "libtriton_onnxruntime.so" in native["description"]
    ours = served_by(_config("pytorch", "pytorch_libtorch", "model.py"), embedded=True)
    assert (ours["kind"], ours["ours"], ours["label"]) == ("python-based", True, "ours (Python-based)")
    theirs = served_by(_config("pytorch", "pytorch_libtorch", "model.py"), embedded=False)
    assert (theirs["kind"], theirs["ours"]) == ("python-based", None)  # whose, the server does not say
    assert served_by(_config("python", runtime="model.py"), embedded=True)["kind"] == "python"


def test_open_loop_keeps_its_schedule_when_the_loop_stalls() -> None:
    """Arrivals stay on their Poisson schedule whatever the event loop does: requests due during a
    stall go out late, and the send is told when each was due (latency counts from then)."""
    sent: list[tuple[float, float]] = []  # (due, actually sent)

    async def send(due: float) -> None:
        sent.append((due, time.perf_counter()))

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(open_loop(500.0, seed=3)(send, stop))
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # the loop stalls: about 100 requests fall due meanwhile
        await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(run())
    dues = [due for due, _ in sent]
    gaps = np.diff(dues)
    assert all(gaps > 0) and 0.7 / 500 < gaps.mean() < 1.3 / 500  # Poisson at 500/s, never reset
    lags = [at - due for due, at in sent]
    assert max(lags) > 0.15  # the stalled ones went out late, and it shows
    assert sum(lag > 0.05 for lag in lags) > 30


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
    # The CLI end to end, against the shared server: as `--url` would reach any Triton. Base names
    # select both formats; eager PyTorch only where a reference is given.
    code = main(
        [
            "bench", "--models", ",".join(MODELS), "--batch-sizes", ",".join(map(str, BATCH_SIZES)),
            "--concurrency", "1,4", "--request-rate", "50", "--repo", str(repo), "--url", server.grpc_url,
            "--out", str(out), *WINDOWS, "--reference", f"two_tower={checkpoints / 'two_tower.pt'}",
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
        assert isinstance(cell["stable"], bool)
        windows = cell["windows"]
        assert all(w["requests"] >= 5 for w in windows if w["counted"])  # --min-window-requests 5
        assert 0 < cell["latency_samples"] <= sum(w["requests"] for w in windows)
        assert cell["pool"]["requests"] == 16 and cell["pool"]["seed"] == 0
        assert cell["served_by"]["kind"] == "python-based" and cell["served_by"]["ours"] is None  # --url
        if cell["mode"] == "request_rate":  # latency counts from the schedule: no lag exceeds its latency
            lag = cell["send_lag_ms"]
            assert 0 <= lag["p50"] <= latency["p50"] and lag["p99"] <= latency["p99"]
        else:
            assert "send_lag_ms" not in cell
        if cell["mode"] == "concurrency" and cell["level"] == 1:
            assert "p50_ms" in cell["overhead"]
            assert ("p50_ms_vs_eager" in cell["overhead"]) == (cell["model"] == "two_tower")
        assert cell["overhead"]["throughput_ratio"] > 0
        # Whole requests per execution. Triton's execution and sample counters are snapshotted
        # while requests run and are not updated together: at a snapshot one execution may be in
        # one counter and not yet the other, at most `level` requests of `batch_size` (a run on a
        # loaded machine read 7.97 for batch 8).
        samples = server["formed_batch"] * server["executions"]
        assert samples >= cell["batch_size"] * (server["executions"] - cell["level"]), cell
        assert cell["overhead"]["formed_batch"] >= cell["batch_size"]
        assert cell["overhead"]["throughput_ratio_formed"] > 0


@pytest.mark.server
def test_in_process_baselines_and_environment(bench_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = bench_run
    found = {(b["model"], b["runtime"], b["batch_size"]) for b in results["baselines"]}
    runtimes = ("onnxruntime", "torchscript")
    requested = set(itertools.product(MODELS, runtimes, BATCH_SIZES))
    eager = {("two_tower", "pytorch", b) for b in BATCH_SIZES}  # --reference two_tower only
    runtime = {"onnx": "onnxruntime", "torchscript": "torchscript"}
    formed = {(c["model"], runtime[c["format"]], c["overhead"]["formed_batch"]) for c in results["cells"]}
    assert found == requested | eager | formed  # plus the artifact at each batch size Triton formed
    assert {b["threads"] for b in results["baselines"]} == {1}  # as the exported configs give
    assert {b["pool"]["requests"] for b in results["baselines"]} == {16}
    models = {m["name"]: m for m in results["models"]}
    assert set(models) == {f"{m}_{f.value}" for m in MODELS for f in DEFAULT_FORMATS}
    assert {m["in_process"] for m in models.values()} == {"measured"}
    env = results["environment"]
    assert env["triton_server"] and env["cpu"] and env["torch"] and "bench" in env["command"]
    assert set(env["load_average"]) == {"start", "served_cells_start", "end"}  # what else ran
    assert all(len(v) == 3 for v in env["load_average"].values())


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
    md_lines = (out / "results.md").read_text().split("## Served")[1].split("## In process")[0].splitlines()
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


def _steps(stdout: str) -> list[str]:
    """What each step line of a bench's stdout (not a terminal) says, checked to count from 1 to
    the final total, each with the total known then and the time elapsed."""
    lines = [m.groups() for m in re.finditer(r"^\[(\d+)/(\d+) \d+:\d\d:\d\d\] (.+)$", stdout, re.M)]
    assert [int(done) for done, _, _ in lines] == list(range(1, len(lines) + 1))
    assert all(int(done) <= int(total) for done, total, _ in lines)
    assert lines and int(lines[-1][1]) == len(lines)
    return [what for _, _, what in lines]


@pytest.mark.server
def test_a_server_alone_is_measured_from_its_configs(
    bench_run: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--url` without `--repo`: the models, versions and tensors come from Triton's repository
    index and model-config RPC, and the in-process baselines are skipped with the reason. Off a
    terminal, each step is a line as it finishes, the skipped ones too."""
    _, results = bench_run
    capsys.readouterr()
    code = main(
        [
            "bench", "--url", results["config"]["url"], "--models", "dlrm", "--batch-sizes", "2",
            "--concurrency", "1", "--out", str(tmp_path), *WINDOWS,
        ]
    )  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "results.json").read_text())
    assert [(c["name"], c["version"]) for c in run["cells"]] == [("dlrm_onnx", 1), ("dlrm_torchscript", 1)]
    assert run["baselines"] == [] and run["config"]["repo"] is None
    for cell in run["cells"]:
        assert cell["requests"]["client"] == cell["requests"]["triton_success"] > 0
        assert cell["in_process_skipped"].startswith("no local repository") and cell["overhead"] == {}
        assert cell["pool"]["inputs"]["sparse_features"]["shape"] == [2, 26]
    assert all(m["in_process"].startswith("no local repository") for m in run["models"])
    assert "no local repository" in (tmp_path / "results.md").read_text()
    steps = _steps(capsys.readouterr().out)
    assert [s.split(": no local repository")[0] for s in steps] == [
        "dlrm_onnx in process batch 2 skipped", "dlrm_torchscript in process batch 2 skipped",
        "dlrm_onnx batch 2 concurrency 1", "dlrm_torchscript batch 2 concurrency 1",
    ]  # fmt: skip


@pytest.mark.server
def test_bad_options_stop_before_any_measurement(
    bench_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    root = bench_run[0].parent
    repo = ["--repo", str(root / "repo"), "--out", str(root / "never")]
    wrong = f"dlrm={root / 'checkpoints' / 'two_tower.pt'}"
    assert main(["bench", *repo, "--models", "dlrm", "--reference", wrong]) == 2
    assert "the checkpoint's model takes ['user_features', 'item_features']" in capsys.readouterr().err
    too_big = 2 * DEFAULT_MAX_BATCH_SIZE  # what the repository's models were exported with
    assert main(["bench", *repo, "--models", "dlrm", "--batch-sizes", f"1,{too_big}"]) == 2
    assert f"{too_big} over dlrm_onnx's max_batch_size {DEFAULT_MAX_BATCH_SIZE}" in capsys.readouterr().err
    if importlib.util.find_spec("cuda") is None:  # CPU machines: the bench's own fix, not the client API's
        assert main(["bench", *repo, "--models", "dlrm", "--shared-memory", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "--shared-memory cuda: CUDA shared memory needs cuda-bindings" in err
        assert err.rstrip().endswith("or pass --shared-memory system") and err.count("\n") == 1
    assert not (root / "never").exists()


@pytest.mark.server
def test_the_version_our_clients_send_to(bench_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """The highest version the policy loads, unless a production version is recorded."""
    shutil.copytree(bench_run[0].parent / "repo" / "dlrm_onnx", tmp_path / "dlrm_onnx")
    shutil.copytree(tmp_path / "dlrm_onnx" / "1", tmp_path / "dlrm_onnx" / "2")
    assert [t.version for t in local_targets(tmp_path, ["dlrm"])] == [2]
    promote(tmp_path, "dlrm_onnx", 1, "production")
    assert [t.version for t in local_targets(tmp_path, ["dlrm_onnx"])] == [1]


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
    args = ["--repo", str(root / "repo"), "--out", str(out)]
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
    assert results["config"]["batch_size"] == 1


@pytest.mark.server
def test_floor_at_a_larger_batch(
    bench_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--batch-size N`: the models' probes send N rows, every client path compared at that size;
    over a model's max_batch_size it is one line, before any server starts."""
    root = bench_run[0].parent
    out = root / "floor-b8"
    args = ["--repo", str(root / "repo"), "--out", str(out), "--models", "two_tower_onnx"]
    code = main(["bench", "floor", *args, "--requests", "100", "--warmup", "5", "--batch-size", "8"])
    assert code == 0
    results = json.loads((out / "floor.json").read_text())
    assert results["config"]["batch_size"] == 8
    paths = {p["path"] for p in results["probes"] if p["model"] == "two_tower_onnx"}
    assert paths == {"raw", "aio", "tritonclient", "tritonstack", "hot", "idle"}
    too_big = str(2 * DEFAULT_MAX_BATCH_SIZE)
    assert main(["bench", "floor", *args, "--batch-size", too_big]) == 2
    assert f"--batch-size: {too_big} over two_tower_onnx's max_batch_size" in capsys.readouterr().err


def test_report_of_an_open_loop_run(tmp_path: Path) -> None:
    """`bench report` on a committed open-loop run (no closed-loop cell to plot) writes every file
    without a warning (pytest turns warnings into errors)."""
    shutil.copy(Path(__file__).parents[1] / "benchmarks/results/cpu-open-loop/results.json", tmp_path)
    assert main(["bench", "report", str(tmp_path / "results.json")]) == 0
    assert (tmp_path / "latency_vs_concurrency.png").stat().st_size > 0
    assert "send_lag_p99_ms" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--requests", "10"], "--requests 10: at least 100 are needed for a p99"),
        (["--timeout-s", "0"], "--timeout-s 0: must be above 0"),
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    ],
)
def test_floor_options_are_checked_one_by_one(
    capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    assert main(["bench", "floor", *option]) == 2
    assert capsys.readouterr().err == f"tritonstack bench: error: {message}\n"


@pytest.mark.server
def test_both_load_generators_over_shared_memory(
    bench_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """`--load-generator both --shared-memory system`: each closed-loop level measured by ours and by
    perf_analyzer on the same server, tensors in registered regions for both. perf_analyzer
    unregisters every region when it starts, so ours registers per cell (the second level failed
    with NOT_FOUND before); every region is unregistered and freed at the end; each model, batch
    size and load generator gets a CSV in perf_analyzer's columns."""
    out, results = bench_run
    url = results["config"]["url"]
    before = set(Path("/dev/shm").iterdir())
    code = main(
        [
            "bench", "--models", "two_tower_onnx", "--batch-sizes", "2", "--concurrency", "1,2",
            "--repo", str(out.parent / "repo"), "--url", url, "--out", str(tmp_path), *WINDOWS,
            "--load-generator", "both", "--shared-memory", "system",
        ]
    )  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "results.json").read_text())
    assert "--load-generator both --shared-memory system" in run["environment"]["command"]
    assert [(c["load_generator"], c["level"]) for c in run["cells"]] == [
        ("tritonstack", 1), ("perf_analyzer", 1), ("tritonstack", 2), ("perf_analyzer", 2),
    ]  # fmt: skip
    for cell in run["cells"]:
        assert cell["shared_memory"] == "system" and cell["served_by"]["label"] == "Python-based"
        assert 0 < cell["latency_ms"]["p50"] <= cell["latency_ms"]["p99"] and cell["samples_per_s"] > 0
        assert cell["server_us"]["total"] > cell["server_us"]["compute_infer"] > 0
        assert "throughput_ratio" in cell["overhead"]
    theirs = [c for c in run["cells"] if c["load_generator"] == "perf_analyzer"]
    assert all("--shared-memory system" in c["command"] and c["data"]["kind"] == "generated" for c in theirs)

    async def regions() -> Any:
        client = grpcaio.InferenceServerClient(url)
        try:
            return await client.get_system_shared_memory_status(as_json=True)
        finally:
            await client.close()

    assert not asyncio.run(regions()).get("regions")
    assert not [p for p in set(Path("/dev/shm").iterdir()) - before if p.name.startswith("tritonstack-")]
    csvs = sorted(p.name for p in (tmp_path / "perf_analyzer").iterdir())
    assert csvs == ["two_tower_onnx-b2-perf_analyzer.csv", "two_tower_onnx-b2-tritonstack.csv"]
    for name in csvs:
        rows = list(csv.DictReader((tmp_path / "perf_analyzer" / name).read_text().splitlines()))
        assert [r["Concurrency"] for r in rows] == ["1", "2"] and float(rows[0]["Inferences/Second"]) > 0
    assert "| perf_analyzer |" in (tmp_path / "results.md").read_text()


def test_perf_analyzer_needs_closed_loop_levels() -> None:
    with pytest.raises(UsageError, match="--load-generator perf_analyzer runs closed-loop cells"):
        BenchConfig(concurrencies=(), request_rates=(10.0,), load_generators=("perf_analyzer",))


@pytest.mark.server
def test_load_over_client_processes(
    bench_run: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--client-processes 2`: the workers' completions reach the windows, and Triton counts exactly
    the requests they sent, closed and open loop. Last in the module: it records new latencies."""
    out, results = bench_run
    capsys.readouterr()
    root = out.parent
    code = main(
        [
            "bench", "--models", "two_tower_onnx", "--batch-sizes", "1", "--concurrency", "3",
            "--request-rate", "100", "--repo", str(root / "repo"), "--url", results["config"]["url"],
            "--out", str(tmp_path), *WINDOWS, "--client-processes", "2",
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
        assert all(w["requests"] > 0 for w in cell["windows"])
    assert "send_lag_ms" in run["cells"][1]  # the workers report how late they sent
    steps = _steps(capsys.readouterr().out)  # formed batch sizes' baselines at the end, if any
    assert steps[:3] == [
        "two_tower_onnx in process onnxruntime batch 1", "two_tower_onnx batch 1 concurrency 3",
        "two_tower_onnx batch 1 request_rate 100",
    ]  # fmt: skip


@pytest.mark.server
def test_process_load_holds_nothing_back_at_a_cut(bench_run: tuple[Path, dict[str, Any]]) -> None:
    """Each `completions()` returns every request finished before it was called, however late the
    workers' reports arrive, so no window loses requests to the next one."""
    out, results = bench_run
    url = results["config"]["url"]
    spec = load_model(out.parent / "checkpoints" / "two_tower.pt").spec

    async def cuts() -> list[tuple[float, list[Completion]]]:
        requests = prebuilt("two_tower_onnx", "1", spec, [spec.random_inputs(1, seed=i) for i in range(4)])
        load = ProcessLoad(url, requests, "concurrency", 8, processes=2, timeout_s=30.0)
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
        assert all(t >= called for t, _, _ in later), "a completion from before the cut came late"


@pytest.mark.parametrize("command", [["bench"], ["bench", "floor"]])
def test_an_out_folder_that_cannot_be_written_is_refused_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Before, a run measured for its whole length and then failed to write its results. (The
    repository does not exist either: the folder is checked first, before any work.)"""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    out = blocked / "out"
    assert main([*command, "--repo", str(tmp_path / "repo"), "--out", str(out)]) == 2
    error = f"--out {out}: Not a directory: pass a folder this user can write"
    assert capsys.readouterr().err == f"tritonstack bench: error: {error}\n"
