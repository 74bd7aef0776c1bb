"""Whether Triton's CUDA memory pool bounds outputs written into a client's CUDA shared memory:
one model and batch served by Triton started with each pool size in turn, measured by
`tritonstack bench --url` over CUDA shared memory, with what Triton logged about the pool.

    python benchmarks/runs/cuda_pool.py REPO MODEL BATCH OUT [POOL_MB ...]

POOL_MB: Triton's `--cuda-memory-pool-byte-size` for GPU 0, in MiB; `default` leaves the flag out
(Triton's own default). Each run's results go to OUT-POOL_MB/, Triton's log beside them; a line
per run says the served samples/s, compute_output and whether the pool ran out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tritonstack.serve.server import TritonServer

_POOL_FULL = "Failed to allocate memory from CUDA memory pool"


def served(out: Path) -> str:
    """The run's cells, a line each: concurrency, samples/s, compute_output per request."""
    cells = json.loads((out / "results.json").read_text())["cells"]
    lines = []
    for cell in cells:
        server = cell["server_us"]
        lines.append(
            f"c{cell['level']:g}: {cell['samples_per_s'] / 1e6:.2f} M samples/s, "
            f"p50 {cell['latency_ms']['p50']:.2f} ms, compute_output {server['compute_output'] / 1e3:.2f} ms"
        )
    return "\n  ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("model")
    parser.add_argument("batch", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("pools", nargs="*", default=["default"])
    parser.add_argument("--max-cell-s", default="30")
    parser.add_argument("--shared-memory", default="cuda", help="system: to try it without a GPU")
    args = parser.parse_args()
    for pool in args.pools:
        out = args.out.with_name(f"{args.out.name}-{pool}")
        out.mkdir(parents=True, exist_ok=True)
        extra = [] if pool == "default" else [f"--cuda-memory-pool-byte-size=0:{int(pool) << 20}"]
        log = out / "triton.log"
        with TritonServer(args.repo, extra_args=extra, log_path=log) as server:
            bench = [sys.executable, "-m", "tritonstack", "bench", "--url", server.grpc_url]
            bench += ["--models", args.model, "--batch-sizes", str(args.batch), "--concurrency", "1,16"]
            bench += ["--shared-memory", args.shared_memory, "--client-processes", "4", "--out", str(out)]
            subprocess.run([*bench, "--max-cell-s", args.max_cell_s], check=True)
        full = _POOL_FULL in log.read_text(errors="replace")
        print(f"pool {pool} MiB: pool ran out: {full}\n  {served(out)}", flush=True)


if __name__ == "__main__":
    main()
