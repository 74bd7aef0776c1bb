"""The repository writer on real files, no server: configs, round trips, atomic versions."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import RepositoryError
from tritonstack.export import repository
from tritonstack.export.deployment import DeploymentOptions, Device
from tritonstack.export.repository import (
    build_config,
    list_versions,
    write_config,
    write_version,
)
from tritonstack.formats import Format
from tritonstack.spec import ModelSpec, TensorSpec, read_config

SPEC = ModelSpec(
    "dlrm_onnx",
    (TensorSpec("dense", "float32", (13,)), TensorSpec("ids", "int64", (26,), high=1000)),
    (TensorSpec("p", "float32", (1,)),),
    max_batch_size=64,
)


def _artifact(tmp_path: Path, name: str = "model.onnx", data: bytes = b"weights") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_config_fields_from_spec() -> None:
    config = build_config(SPEC, Format.ONNX, DeploymentOptions(instances=2))
    assert (config.name, config.platform, config.max_batch_size) == ("dlrm_onnx", "onnxruntime_onnx", 64)
    assert config.default_model_filename == "model.onnx"
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("dense", pb.TYPE_FP32, [13]),
        ("ids", pb.TYPE_INT64, [26]),
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("p", pb.TYPE_FP32, [1])]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 0
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]


@pytest.mark.parametrize(
    ("fmt", "platform", "filename"),
    [
        (Format.ONNX, "onnxruntime_onnx", "model.onnx"),
        (Format.TORCHSCRIPT, "pytorch_libtorch", "model.pt"),
        (Format.TENSORRT, "tensorrt_plan", "model.plan"),
    ],
)
def test_platform_and_filename_follow_the_format(fmt: Format, platform: str, filename: str) -> None:
    config = build_config(SPEC, fmt, DeploymentOptions(device=Device.GPU))  # plans: GPU instances only
    assert (config.platform, config.default_model_filename) == (platform, filename)


def test_gpu_instances_and_scalar_tensor() -> None:
    spec = ModelSpec("s", (TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", ()),), 8)
    config = build_config(spec, Format.TORCHSCRIPT, DeploymentOptions(device=Device.GPU))
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    # Triton needs a non-empty dims: a scalar per row is dims [1] reshaped to [].
    assert list(config.output[0].dims) == [1] and config.output[0].HasField("reshape")


def test_config_round_trips_through_text_format(tmp_path: Path) -> None:
    config = build_config(SPEC, Format.ONNX)
    path = tmp_path / "config.pbtxt"
    write_config(path, config)
    assert read_config(path) == config
    assert 'platform: "onnxruntime_onnx"' in path.read_text()
    assert _entries(tmp_path) == ["config.pbtxt"]


def test_a_config_is_staged_outside_its_model_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triton's poll takes any entry of a model directory other than config.pbtxt for a change
    to every version: the temporary file of a config rewrite is made at the repository's top."""
    model_dir = tmp_path / "repo" / "m"
    model_dir.mkdir(parents=True)
    staged: list[str] = []
    mkstemp = tempfile.mkstemp

    def recording_mkstemp(prefix: str, dir: Path) -> tuple[int, str]:
        fd, name = mkstemp(prefix=prefix, dir=dir)
        staged.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    write_config(model_dir / "config.pbtxt", build_config(SPEC, Format.ONNX))
    assert [Path(name).parent for name in staged] == [tmp_path / "repo"]
    assert _entries(model_dir) == ["config.pbtxt"] and _entries(tmp_path / "repo") == ["m"]


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second file system (/dev/shm)")
def test_a_model_directory_on_another_file_system_still_gets_its_config(tmp_path: Path) -> None:
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        (tmp_path / "repo").mkdir()
        (tmp_path / "repo" / "m").symlink_to(elsewhere)
        write_config(tmp_path / "repo" / "m" / "config.pbtxt", build_config(SPEC, Format.ONNX))
        assert read_config(elsewhere / "config.pbtxt").platform == Format.ONNX.platform
        assert _entries(tmp_path / "repo") == ["m"] and _entries(elsewhere) == ["config.pbtxt"]
    finally:
        shutil.rmtree(elsewhere)


def test_read_config_reports_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text("platform: 12 nonsense {")
    with pytest.raises(RepositoryError, match="not a valid Triton model config"):
        read_config(path)


def test_write_version_layout_and_numbering(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    config = build_config(SPEC, Format.ONNX)
    first = write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path)})
    assert first == repo / "dlrm_onnx" / "1"
    assert (first / "model.onnx").read_bytes() == b"weights"
    assert read_config(repo / "dlrm_onnx" / "config.pbtxt") == config
    assert write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path)}).name == "2"
    assert (
        write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path)}, version=7).name == "7"
    )
    assert write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path)}).name == "8"
    assert list_versions(repo, "dlrm_onnx") == [1, 2, 7, 8]
    assert list_versions(repo, "absent") == []
    assert _entries(repo / "dlrm_onnx") == ["1", "2", "7", "8", "config.pbtxt"]


def test_move_takes_the_source_and_copy_keeps_it(tmp_path: Path) -> None:
    config = build_config(SPEC, Format.ONNX)
    src = _artifact(tmp_path)
    write_version(tmp_path / "repo", "dlrm_onnx", config, {"model.onnx": src})
    assert src.exists()
    write_version(tmp_path / "repo", "dlrm_onnx", config, {"model.onnx": src}, move=True)
    assert not src.exists()


def test_existing_version_is_refused_unless_overwrite(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    config = build_config(SPEC, Format.ONNX)
    write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path, data=b"old")}, version=1)
    with pytest.raises(RepositoryError, match="overwrite=True"):
        write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path, data=b"new")}, version=1)
    assert (repo / "dlrm_onnx" / "1" / "model.onnx").read_bytes() == b"old"
    write_version(
        repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path, data=b"new")}, version=1, overwrite=True
    )
    assert (repo / "dlrm_onnx" / "1" / "model.onnx").read_bytes() == b"new"
    assert _entries(repo / "dlrm_onnx") == ["1", "config.pbtxt"]


def test_failure_midway_leaves_nothing_and_returns_moved_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    config = build_config(SPEC, Format.ONNX)
    weights = _artifact(tmp_path, "model.onnx")
    with pytest.raises(RepositoryError, match="does not exist"):
        write_version(
            repo, "dlrm_onnx", config, {"model.onnx": weights, "b": tmp_path / "missing"}, move=True
        )
    assert weights.read_bytes() == b"weights"
    assert not (repo / "dlrm_onnx").exists()


def test_failed_rename_keeps_the_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    old = build_config(SPEC, Format.ONNX)
    write_version(repo, "dlrm_onnx", old, {"model.onnx": _artifact(tmp_path)})

    def broken_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", broken_rename)
    new = build_config(SPEC, Format.ONNX, DeploymentOptions(instances=3))
    with pytest.raises(RepositoryError, match="No space left"):
        write_version(repo, "dlrm_onnx", new, {"model.onnx": _artifact(tmp_path)})
    assert _entries(repo / "dlrm_onnx") == ["1", "config.pbtxt"]
    assert read_config(repo / "dlrm_onnx" / "config.pbtxt") == old


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "x" * 200, "a b"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    config = build_config(SPEC, Format.ONNX)
    with pytest.raises(RepositoryError, match="not a safe name"):
        write_version(tmp_path, name, config, {"model.onnx": _artifact(tmp_path)})
    with pytest.raises(RepositoryError, match="not a safe name"):
        write_version(tmp_path, "dlrm_onnx", config, {name: _artifact(tmp_path)})


def test_config_name_must_match_directory(tmp_path: Path) -> None:
    config = build_config(SPEC, Format.ONNX)
    with pytest.raises(RepositoryError, match="written as"):
        write_version(tmp_path, "other", config, {"model.onnx": _artifact(tmp_path)})


def test_next_version_skips_a_number_taken_concurrently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    config = build_config(SPEC, Format.ONNX)
    write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path)})
    real_list = repository.list_versions
    calls = []

    def stale_list(repo_: Path | str, name: str) -> list[int]:
        calls.append(name)
        if len(calls) == 1:  # another writer publishes 2 right after we looked
            (repo / "dlrm_onnx" / "2").mkdir()
            (repo / "dlrm_onnx" / "2" / "model.onnx").write_bytes(b"theirs")
            return [1]
        return real_list(repo_, name)

    monkeypatch.setattr(repository, "list_versions", stale_list)
    assert write_version(repo, "dlrm_onnx", config, {"model.onnx": _artifact(tmp_path)}).name == "3"
    assert (repo / "dlrm_onnx" / "2" / "model.onnx").read_bytes() == b"theirs"
