"""Why an in-process baseline does not settle: the bench's own baseline of one model and batch,
measured as the bench measures it (`benchmarks.baseline`), once as it runs and once with the
process pinned to one CPU, while `nvidia-smi` samples the GPU's clocks (when there is one).

    python benchmarks/runs/baseline_noise.py REPO MODEL BATCH [--out FILE]

Writes one JSON document: per run, whether it settled, each window's throughput and p50, and the
GPU samples taken during it (SM clock, memory clock, performance state, utilization), so a p50 that
switches between levels can be laid beside what the GPU and the CPU placement were doing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tritonstack.benchmarks.baseline import baseline_result
from tritonstack.benchmarks.config import PoolRule, WindowRule
from tritonstack.benchmarks.in_process import artifact_runner, torch_threads
from tritonstack.benchmarks.inputs import Pool
from tritonstack.benchmarks.targets import local_targets

_GPU_QUERY = "timestamp,clocks.sm,clocks.mem,pstate,utilization.gpu"


@contextmanager
def gpu_samples(every_ms: int = 100) -> Iterator[list[str]]:
    """nvidia-smi's CSV lines while the block runs (none without nvidia-smi)."""
    lines: list[str] = []
    if shutil.which("nvidia-smi") is None:
        yield lines
        return
    with tempfile.TemporaryFile("w+") as out:
        query = ["nvidia-smi", f"--query-gpu={_GPU_QUERY}", "--format=csv,noheader", f"--loop-ms={every_ms}"]
        sampler = subprocess.Popen(query, stdout=out, stderr=subprocess.DEVNULL, text=True)
        try:
            yield lines
        finally:
            sampler.terminate()
            sampler.wait()
            out.seek(0)
            lines.extend(line.strip() for line in out if line.strip())


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """The process on CPU `cpu` while the block runs (left as it is for None)."""
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("model", help="a repository model name, e.g. dlrm_onnx")
    parser.add_argument("batch", type=int)
    parser.add_argument("--out", type=Path, default=Path("baseline_noise.json"))
    args = parser.parse_args()
    (target,) = local_targets(args.repo, [args.model])
    runner, reason = artifact_runner(target)
    if runner is None:
        raise SystemExit(f"{args.model} cannot run in process here: {reason}")
    pool = Pool.for_rule(target.spec, args.batch, PoolRule())
    feeds = [target.artifact_feeds(b) for b in pool.batches()]
    runs: list[dict[str, Any]] = []
    for cpu in (None, min(os.sched_getaffinity(0))):
        with torch_threads(target.threads), pinned(cpu), gpu_samples() as samples:
            result = baseline_result(runner, feeds, args.batch, WindowRule())
        p50s = [round(w["p50_ms"], 3) for w in result["windows"]]
        print(f"pinned to CPU {cpu}: stable {result['stable']}, window p50s {p50s} ms")
        gpu = {"columns": _GPU_QUERY, "samples": samples}
        runs.append({"pinned_cpu": cpu, "stable": result["stable"], "windows": result["windows"], "gpu": gpu})
    document = {"model": args.model, "batch": args.batch, "device": target.device, "runs": runs}
    args.out.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
