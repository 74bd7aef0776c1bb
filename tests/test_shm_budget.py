"""The launcher refuses, before Triton starts, a repository whose largest batches cannot fit in
/dev/shm, where Triton's Python backend moves every batch (serve/shm_budget.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tritonstack.errors import ServeError
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.serve import TritonServer, shm_budget
from tritonstack.spec import ModelSpec, TensorSpec

MiB = 2**20


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


def _repository(root: Path, width: int, max_batch_size: int, instances: int = 1) -> Path:
    spec = ModelSpec(
        "wide",
        (TensorSpec("x", "float32", (width,)),),
        (TensorSpec("y", "float32", (width,)),),
        max_batch_size,
    )
    torch.jit.script(Double()).save(str(root / "wide.pt"))  # type: ignore[no-untyped-call]
    config = build_config(spec, Format.TORCHSCRIPT)
    config.instance_group[0].count = instances
    write_version(root / "repo", spec.name, config, {"model.pt": root / "wide.pt"})
    return root / "repo"


def test_each_instance_may_hold_a_largest_batch_each_way(tmp_path: Path) -> None:
    repo = _repository(tmp_path, width=512, max_batch_size=16384, instances=2)  # 32 MiB each way
    assert shm_budget.needs(repo) == {"wide": 2 * (64 * MiB + MiB)}
    assert shm_budget.problem(repo, free_bytes=131 * MiB) is None
    line = shm_budget.problem(repo, free_bytes=64 * MiB)
    assert line is not None and "\n" not in line
    assert "need up to 130 MiB" in line and "wide: 130 MiB" in line and "64 MiB free" in line
    assert "--shm-size" in line and "max_batch_size" in line


@pytest.mark.server
def test_serve_refuses_a_repository_dev_shm_cannot_hold(tmp_path: Path) -> None:
    # 256 KiB rows at a max batch of 2**20: 512 GiB a batch, more than any /dev/shm here
    repo = _repository(tmp_path, width=65536, max_batch_size=2**20)
    server = TritonServer(repo, log_path=tmp_path / "triton.log")
    with pytest.raises(ServeError, match=r"wide: 524,289 MiB.*/dev/shm has .* free"):
        server.start()
    assert server.pid is None  # refused before Triton started
