"""Issue #17, D5 leftovers, each one line and exit 2: a checkpoint path that never reaches a
file (a symlink loop, a `latest` pointer naming itself or a chain of pointers back to the first);
`infer` inputs that are not numbers (an object array, an id beyond 64 bits), refused before
connecting, and fractional ids, refused rather than truncated."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tritonstack.cli import main
from tritonstack.export.repository import build_config, write_version
from tritonstack.formats import Format
from tritonstack.serve import free_port
from tritonstack.spec import ModelSpec, TensorSpec


def _loop(tmp_path: Path) -> Path:
    os.symlink("loop", tmp_path / "loop")
    return tmp_path / "loop"


def _self_pointer(tmp_path: Path) -> Path:
    (tmp_path / "latest").write_text("latest\n")
    return tmp_path / "latest"


def _pointer_cycle(tmp_path: Path) -> Path:
    (tmp_path / "latest").write_text("previous\n")
    (tmp_path / "previous").write_text("latest\n")
    return tmp_path / "latest"


@pytest.mark.parametrize(
    ("make", "message"),
    [(_loop, "is a symlink loop"), (_self_pointer, "points back to itself"), (_pointer_cycle, "points back")],
)
def test_a_checkpoint_that_leads_back_to_itself_is_one_line(
    tmp_path: Path, make, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, repo = make(tmp_path), tmp_path / "repo"
    assert main(["export", str(checkpoint), "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not repo.exists()


def _object_npy(tmp_path: Path) -> str:
    np.save(tmp_path / "objects.npy", np.array([{"id": 1}], dtype=object), allow_pickle=True)
    return f"x={tmp_path / 'objects.npy'}"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (_object_npy, "holds Python objects, not numbers"),
        (lambda _: f"x=[[{10**30}]]", "not an array of numbers (dtype object"),
    ],
    ids=["object npy", "id of 10**30"],
)
def test_an_input_that_is_not_numbers_is_refused_before_connecting(
    tmp_path: Path, given, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused as read, before any connection: the URL is a closed port."""
    closed = f"127.0.0.1:{free_port()}"
    assert main(["infer", "m", "--url", closed, "--input", given(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


IDS = ModelSpec(
    "ids_torchscript", (TensorSpec("ids", "int64", (4,), high=100),), (TensorSpec("y", "float32", (4,)),)
)


class _AsFloat(torch.nn.Module):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.float()


@pytest.mark.server
def test_fractional_ids_are_refused_not_truncated(
    tmp_path: Path, triton_server_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.jit.script(_AsFloat()).save(str(tmp_path / "model.pt"))  # type: ignore[no-untyped-call]
    write_version(
        tmp_path / "repo",
        IDS.name,
        build_config(IDS, Format.TORCHSCRIPT),
        {"model.pt": tmp_path / "model.pt"},
    )
    server = triton_server_factory(tmp_path / "repo")
    infer = ["infer", IDS.name, "--url", server.grpc_url, "--input"]
    assert main([*infer, "ids=[[0.7, 1, 2, 3]]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ids must be whole numbers" in err, err
    assert main([*infer, "ids=[[1.0, 2, 3, 4]]"]) == 0  # whole numbers written as floats are ids
    assert "[[1. 2. 3. 4.]]" in capsys.readouterr().out
