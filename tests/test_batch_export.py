"""`tritonstack export-all`: next versions, skip by source sha256 and options, --force, failures."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.export.batch import exported_version, find_checkpoints
from tritonstack.export.deployment import DeploymentOptions
from tritonstack.export.formats import ExportOptions
from tritonstack.export.metadata import file_sha256, options_record
from tritonstack.export.repository import list_versions
from tritonstack.formats import Format
from tritonstack.recsys.train import train


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training run's output: a checkpoint file, an Accelerate folder, an alias and a broken file."""
    root = tmp_path_factory.mktemp("runs")
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=root / "a.pt")
    saved = torch.load(root / "a.pt", weights_only=True)
    accelerate = root / "run" / "checkpoint-5"
    accelerate.mkdir(parents=True)
    save_file(saved["model_state_dict"], str(accelerate / "model.safetensors"))
    (accelerate / "config.json").write_text(json.dumps(saved["config"]))
    (accelerate / "optimizer.bin").write_bytes(pickle.dumps({"not": "a checkpoint"}))
    (root / "latest.pt").symlink_to(root / "a.pt")
    (root / "broken.pt").write_bytes(b"PK\x03\x04 truncated")
    return root


def _export_all(folder: Path, repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    args = ["export-all", str(folder), "--formats", "onnx", "--repo", str(repo), "--max-batch-size", "4"]
    code = main([*args, *extra])
    return code, capsys.readouterr().out


def test_finds_files_and_training_folders_not_aliases(folder: Path) -> None:
    assert find_checkpoints(folder) == [
        folder / "a.pt",
        folder / "broken.pt",
        folder / "run" / "checkpoint-5",
    ]


def test_export_skip_force_and_failures(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    code, out = _export_all(folder, repo, capsys)
    assert code == 1
    assert out.splitlines()[-1] == "2 converted, 0 skipped, 1 failed, 3 total"
    assert f"failed    {folder / 'broken.pt'}: " in out and "truncated or corrupt" in out
    assert list_versions(repo, "dlrm_onnx") == [1, 2]

    code, out = _export_all(folder, repo, capsys)
    assert out.splitlines()[-1] == "0 converted, 2 skipped, 1 failed, 3 total"
    assert list_versions(repo, "dlrm_onnx") == [1, 2]

    sha = file_sha256(folder / "a.pt")
    record = options_record(Format.ONNX, ExportOptions(), DeploymentOptions(), 4)
    assert exported_version(repo, sha, record) == repo / "dlrm_onnx" / "1"
    assert exported_version(repo, sha, {**record, "max_batch_size": 8}) is None

    (folder / "broken.pt").rename(tmp_path / "broken.pt")  # module fixture: put it back below
    try:
        code, out = _export_all(folder, repo, capsys, "--force")
    finally:
        (tmp_path / "broken.pt").rename(folder / "broken.pt")
    assert code == 0
    assert out.splitlines()[-1] == "2 converted, 0 skipped, 0 failed, 2 total"
    assert list_versions(repo, "dlrm_onnx") == [1, 2, 3, 4]


def test_not_a_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-all", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
