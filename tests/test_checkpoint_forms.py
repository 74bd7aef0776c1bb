"""Every checkpoint form a training run leaves behind, partial loading, and each version's metadata."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.errors import CheckpointError, InvalidArgument
from tritonstack.export.checkpoint import ModelSource, load_model
from tritonstack.export.metadata import file_sha256
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.state import read_metadata
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.releases import DEFAULT_RELEASE, triton_release

ARCH = "dlrm"
SOURCE = ModelSource(arch=ARCH, preset="tiny")


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "dlrm.pt"
    config = recsys.get_architecture(ARCH).preset("tiny")
    train(ARCH, config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=path)
    return path


@pytest.fixture(scope="module")
def weights(trained: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(trained, weights_only=True)["model_state_dict"]
    return state


def _same_weights(path: Path, weights: dict[str, torch.Tensor], source: ModelSource = SOURCE) -> None:
    loaded = load_model(path, source)
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in weights.items())


def test_training_checkpoint_and_bare_state_dict(
    tmp_path: Path, trained: Path, weights: dict[str, torch.Tensor]
) -> None:
    loaded = load_model(trained)
    assert loaded.info["epoch"] == 1 and "eval_auc" in loaded.info["metrics"]
    bare = tmp_path / "bare.pth"
    torch.save(weights, bare)
    _same_weights(bare, weights)


def test_safetensors_with_config_json(
    tmp_path: Path, trained: Path, weights: dict[str, torch.Tensor]
) -> None:
    save_file(weights, str(tmp_path / "model.safetensors"))
    _same_weights(tmp_path / "model.safetensors", weights, SOURCE)
    config = torch.load(trained, weights_only=True)["config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    _same_weights(tmp_path / "model.safetensors", weights, ModelSource())


def test_bad_configs_are_blamed_on_their_source(
    tmp_path: Path, trained: Path, weights: dict[str, torch.Tensor]
) -> None:
    """A bad --config is the user's to fix (not the checkpoint's fault); a bad saved config is the
    checkpoint's, named by path."""
    with pytest.raises(InvalidArgument, match="unknown keys") as err:
        load_model(trained, ModelSource(config={"bad": 1}))
    assert not isinstance(err.value, CheckpointError)
    saved = torch.load(trained, weights_only=True)
    for params in ({"bad": 1}, ["not", "an", "object"], None):
        broken = tmp_path / "broken.pt"
        torch.save({**saved, "config": {"arch": ARCH, "params": params}}, broken)
        with pytest.raises(CheckpointError, match=f"{broken}.*pass --preset or --config"):
            load_model(broken)
    save_file(weights, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"arch": "dlrm", ')
    with pytest.raises(CheckpointError, match="config.json beside model.safetensors is not JSON"):
        load_model(tmp_path / "model.safetensors")


def test_accelerate_folder_never_opens_pickles(tmp_path: Path, weights: dict[str, torch.Tensor]) -> None:
    folder = tmp_path / "run" / "checkpoint-300"
    folder.mkdir(parents=True)
    save_file({"module." + k: v for k, v in weights.items()}, str(folder / "model.safetensors"))
    marker = tmp_path / "pwned"
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    loaded = load_model(folder, SOURCE)
    assert loaded.info["step"] == 300
    assert loaded.source == (folder / "model.safetensors").resolve()
    _same_weights(folder, weights)
    assert not marker.exists()


def test_latest_symlink_and_pointer_file(
    tmp_path: Path, trained: Path, weights: dict[str, torch.Tensor]
) -> None:
    (tmp_path / "latest.pt").symlink_to(trained)
    assert load_model(tmp_path / "latest.pt").source == trained.resolve()
    folder = tmp_path / "checkpoint-7"
    folder.mkdir()
    save_file(weights, str(folder / "model.safetensors"))
    (tmp_path / "latest").write_text("checkpoint-7\n")
    assert load_model(tmp_path / "latest", SOURCE).info["step"] == 7
    (tmp_path / "latest").write_text("checkpoint-8\n")
    with pytest.raises(CheckpointError, match="points to"):
        load_model(tmp_path / "latest", SOURCE)


def test_allow_partial_loads_what_fits_and_warns(
    tmp_path: Path, weights: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    dropped = sorted(weights)[0]
    partial = {k: v for k, v in weights.items() if k != dropped} | {"extra.weight": torch.zeros(2)}
    path = tmp_path / "partial.pt"
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(path, SOURCE)
    with caplog.at_level(logging.WARNING):
        loaded = load_model(path, ModelSource(arch=ARCH, preset="tiny", allow_partial=True))
    assert any(dropped in r.getMessage() and "extra.weight" in r.getMessage() for r in caplog.records)
    assert loaded.info["not_loaded"][0].startswith("missing keys (1)")
    kept = sorted(weights)[1]
    assert torch.equal(loaded.module.state_dict()[kept], weights[kept])


def test_allow_partial_on_the_command_line(
    tmp_path: Path, weights: dict[str, torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in weights.items() if k != sorted(weights)[0]}, path)
    args = ["export", str(path), "--arch", ARCH, "--preset", "tiny", "--formats", "onnx"]
    args += ["--repo", str(tmp_path / "repo"), "--max-batch-size", "4"]
    assert main(args) == 2
    assert "missing keys" in capsys.readouterr().err.strip()
    assert main([*args, "--allow-partial"]) == 0
    assert read_metadata(tmp_path / "repo" / "dlrm_onnx" / "1") is not None


def test_metadata_is_recorded_with_the_version_outside_it(tmp_path: Path, trained: Path) -> None:
    loaded = load_model(trained, max_batch_size=4)
    (result,) = export_to_repository(loaded, [Format.ONNX], tmp_path)
    assert sorted(p.name for p in result.version_dir.iterdir()) == ["model.onnx"]
    meta = read_metadata(result.version_dir)
    assert meta is not None and meta == json.loads(json.dumps(result.metadata))
    assert meta["source"]["sha256"] == file_sha256(trained) and meta["source"]["epoch"] == 1
    assert meta["source"]["loss"] == loaded.info["loss"] and "eval_auc" in meta["source"]["metrics"]
    assert meta["artifact"]["sha256"] == file_sha256(result.version_dir / "model.onnx")
    assert meta["artifact"]["bytes"] == result.artifact_bytes and meta["parameters"] == result.parameters
    assert {d["batch_size"] for d in meta["verification"]["diffs"]} == {1, 4}
    release = triton_release(DEFAULT_RELEASE)
    assert meta["opset"] == release.max_opset == meta["artifact"]["opset"]
    assert meta["artifact"]["ir_version"] <= release.max_ir_version
    assert meta["artifact"]["triton_release"] == DEFAULT_RELEASE and meta["versions"]["onnxruntime"]
    assert meta["exported_at"].endswith("+00:00")
    assert meta["status"] is None and meta["benchmark"] is None
    assert meta["options"]["format"] == "onnx" and meta["options"]["max_batch_size"] == 4
