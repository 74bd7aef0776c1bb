"""Whether /dev/shm can hold the Python backend's traffic at a repository's largest batches.

Triton's Python backend (r24.10, src/shm_manager.cc), which runs our backends, moves every
batch's inputs and outputs through one POSIX shared memory region per model instance: 1 MB at
start (`shm-default-byte-size`), grown in one step when an allocation does not fit (by the
missing bytes rounded up to `shm-growth-byte-size`, 1 MB) and never shrunk. So a large tensor
needs no setting, only room in /dev/shm: 64 MB in a Docker container unless `--shm-size` says
more, while one DLRM batch of 16384 takes 4.3 MB and one of 2 KiB rows 64 MiB. A batch that does
not fit fails when it arrives ("Failed to increase the shared memory pool size"), so the launcher
checks the room before Triton starts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.spec import CONFIG_NAME, ModelSpec, TensorSpec, read_config

SHM_DIR = Path("/dev/shm")
REGION_START = 2**20  # each instance's region at start: the Python backend's shm-default-byte-size


def batch_bytes(spec: ModelSpec) -> int:
    """Inputs and outputs of one batch of `max_batch_size` rows (a variable dimension counts 1:
    its size is not known before a request)."""
    return spec.max_batch_size * sum(_row_bytes(t) for t in (*spec.inputs, *spec.outputs))


def _row_bytes(tensor: TensorSpec) -> int:
    return math.prod(max(d, 1) for d in tensor.shape) * np.dtype(tensor.dtype).itemsize


def instances(config: pb.ModelConfig) -> int:
    """Model instances Triton starts for `config` (one group of one when none is given; a GPU
    group's count is per GPU, counted once)."""
    return sum(max(group.count, 1) for group in config.instance_group) or 1


def needs(repository: Path) -> dict[str, int]:
    """Shared memory each model of `repository` may hold at once: every instance busy with a
    largest batch, plus the region each starts with."""
    found = {}
    for config_path in sorted(repository.glob(f"*/{CONFIG_NAME}")):
        config = read_config(config_path)
        try:
            spec = ModelSpec.from_config(config)
        except ValueError:  # Triton reports what it cannot load; nothing to size here
            continue
        found[config_path.parent.name] = instances(config) * (batch_bytes(spec) + REGION_START)
    return found


def problem(repository: Path, free_bytes: int) -> str | None:
    """One line saying why /dev/shm with `free_bytes` free cannot serve `repository`'s largest
    batches, or None when it can."""
    wanted = needs(repository)
    total = sum(wanted.values())
    if total <= free_bytes:
        return None
    largest = max(wanted, key=wanted.__getitem__)
    return (
        f"the models in {repository} need up to {_mb(total)} of shared memory for their largest batches "
        f"({largest}: {_mb(wanted[largest])}), and {SHM_DIR} has {_mb(free_bytes)} free: give it more "
        "(docker run --shm-size; Kubernetes: an emptyDir of medium Memory at /dev/shm) "
        "or lower max_batch_size"
    )


def free_bytes(directory: Path = SHM_DIR) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"
