"""`export`, `export-all` and `demo` fill the API's option dataclasses from one flag group; the
defaults are the fields'; a version's metadata records the `tritonstack export` command that
reproduces it, and that command parses back to the same options."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from tritonstack import recsys
from tritonstack.cli import build_parser, main
from tritonstack.cli.options import (
    DemoOptions,
    ExportGroup,
    export_flags,
    read_export_group,
    read_model_source,
)
from tritonstack.export.deployment import DeploymentOptions, Device, OrtAccelerator
from tritonstack.export.flags import flags_of, options_argv, read_options
from tritonstack.export.formats import ExportOptions, TensorRTOptions
from tritonstack.export.repository import list_versions
from tritonstack.export.state import read_metadata
from tritonstack.formats import DEFAULT_FORMATS, Format
from tritonstack.recsys.train import train
from tritonstack.spec import ModelSpec, TensorSpec

EXPORT_COMMANDS = ("export", "export-all", "demo")
# A value other than the default for every option field, so each flag is exercised.
EXPORT_OPTIONS = ExportOptions(
    triton_release="25.01",
    opset=18,
    example_batch_size=3,
    fp16=True,
    tensorrt=TensorRTOptions(
        opt_batch_size=8,
        workspace_bytes=1 << 20,
        timing_cache=Path("/tmp/timing.cache"),
        version_compatible=True,
        hardware_compatible=True,
    ),
)
DEPLOYMENT = DeploymentOptions(
    device=Device.GPU,
    instances=2,
    ort_accelerator=OrtAccelerator.TENSORRT,
    trt_fp16=True,
    trt_workspace_bytes=1 << 20,
    trt_engine_cache="/var/cache/ort-engines",
    warmup_batch_sizes=(1, 4),
    max_queue_delay_us=50,
    intra_op_threads=2,
)


def _parse(*argv: str | Path) -> argparse.Namespace:
    return build_parser().parse_args([str(a) for a in argv])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dlrm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "dlrm.pt"
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=path)
    return path


def _fields_at_default(options: Any) -> list[str]:
    """The fields of `options` (nested ones too) that hold their default."""
    at_default = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if dataclasses.is_dataclass(value):
            at_default += _fields_at_default(value)
        elif value == f.default:
            at_default.append(f.name)
    return at_default


def test_the_sample_options_set_every_field() -> None:
    assert not _fields_at_default(EXPORT_OPTIONS) and not _fields_at_default(DEPLOYMENT)


def test_demo_options_end_with_the_export_group() -> None:
    group = export_flags()
    assert flags_of(DemoOptions)[-len(group) :] == group


def test_defaults_are_the_dataclass_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = ((TensorSpec(name, "float32", (1,)),) for name in "xy")
    max_batch_size = ModelSpec("m", x, y).max_batch_size  # what the API does when not told
    expected = ExportGroup(DEFAULT_FORMATS, max_batch_size, ExportOptions(), DeploymentOptions())
    assert read_export_group(_parse("export", "x.pt")) == expected
    assert read_export_group(_parse("export-all", tmp_path)) == expected
    assert read_options(DemoOptions, vars(_parse("demo"))) == DemoOptions()
    for command in EXPORT_COMMANDS:
        with pytest.raises(SystemExit):
            _parse(command, "--help")
        help_text = " ".join(capsys.readouterr().out.split())
        for flag in export_flags():
            default = flag.default_text()
            assert default is None or f"(default: {default})" in help_text, (command, flag.name)


@pytest.mark.parametrize(
    ("options", "deployment"), [(EXPORT_OPTIONS, DEPLOYMENT), (ExportOptions(), DeploymentOptions())]
)
@pytest.mark.parametrize("command", EXPORT_COMMANDS)
def test_every_command_takes_every_option_and_reads_it_back(
    command: str, options: ExportOptions, deployment: DeploymentOptions
) -> None:
    first = {"export": ["x.pt"], "export-all": ["runs"], "demo": []}[command]
    argv = ["--formats", "torchscript,onnx", "--max-batch-size", "8"]  # (tensorrt needs --device gpu)
    args = _parse(command, *first, *argv, *options_argv(options), *options_argv(deployment))
    assert read_options(ExportOptions, vars(args)) == options
    assert read_options(DeploymentOptions, vars(args)) == deployment
    if command == "demo":
        demo = read_options(DemoOptions, vars(args))
        assert (demo.formats, demo.max_batch_size) == ((Format.TORCHSCRIPT, Format.ONNX), 8)
        assert (demo.export, demo.deployment) == (options, deployment)
    else:
        assert read_export_group(args) == ExportGroup(
            (Format.TORCHSCRIPT, Format.ONNX), 8, options, deployment
        )


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--instances", "two"], "--instances 'two': expected a whole number"),
        (["--device", "tpu"], "--device 'tpu': choose from cpu, gpu, auto"),
        (["--warmup-batch-sizes", "1,x"], "--warmup-batch-sizes 'x'"),
        (["--tensorrt-opt-batch-size", "0"], "--tensorrt-opt-batch-size"),
        (["--opset", "16"], "--opset 16"),
        (["--formats", "onnx,caffe"], "unknown format 'caffe'"),
        (["--ort-accelerator", "cuda"], "--device gpu"),
    ],
)
@pytest.mark.parametrize("command", EXPORT_COMMANDS)
def test_bad_values_are_one_line_before_any_work(
    command: str,
    flags: list[str],
    fragment: str,
    dlrm: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    place = {"export": [str(dlrm)], "export-all": [str(dlrm.parent)], "demo": []}[command]
    work = ["--checkpoints", str(tmp_path / "ckpt")] if command == "demo" else []
    assert main([command, *place, "--repo", str(tmp_path / "repo"), *work, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "repo").exists() and not (tmp_path / "ckpt").exists()


def test_recorded_command_round_trips_and_reproduces_the_artifact(dlrm: Path, tmp_path: Path) -> None:
    config = json.dumps(recsys.get_architecture("dlrm").preset("tiny").to_dict())
    flags = (
        "--formats onnx --max-batch-size 8 --opset 18 --instances 2 --warmup-batch-sizes 1,4 --preset tiny"
    )
    argv = ["export", str(dlrm), "--repo", str(tmp_path / "repo"), *flags.split(), "--config", config]
    assert main(argv) == 0
    first = tmp_path / "repo" / "dlrm_onnx" / "1"
    meta = read_metadata(first)
    assert meta is not None
    recorded = shlex.split(meta["command"])
    assert recorded[:2] == ["tritonstack", "export"]
    given, again = _parse(*argv), _parse(*recorded[1:])
    assert read_export_group(again) == read_export_group(given)
    assert read_model_source(again) == read_model_source(given)

    assert main(recorded[1:]) == 0
    second = tmp_path / "repo" / "dlrm_onnx" / "2"
    assert _sha256(second / "model.onnx") == _sha256(first / "model.onnx")
    meta2 = read_metadata(second)
    assert meta2 is not None and meta2["options"] == meta["options"] and meta2["command"] == meta["command"]


def test_recorded_command_of_a_custom_model(tmp_path: Path) -> None:
    from tests.custom_models import make_scorer

    weights = tmp_path / "scorer.pt"
    torch.save(make_scorer(vocab=20, width=4).state_dict(), weights)
    argv = ["export", str(weights), "--repo", str(tmp_path / "repo"), "--formats", "onnx", "--name", "scorer"]
    argv += ["--arch", "tests.custom_models:make_scorer", "--config", '{"vocab": 20, "width": 4}']
    argv += ["--input", "ids:int64:3:10,20,20", "--input", "dense:float32:4", "--output", "score"]
    assert main(argv) == 0
    meta = read_metadata(tmp_path / "repo" / "scorer_onnx" / "1")
    assert meta is not None
    again = _parse(*shlex.split(meta["command"])[1:])
    assert read_model_source(again) == read_model_source(_parse(*argv))


def test_export_all_takes_the_new_flags(
    dlrm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bare state dicts need --arch and --config; --fp16, --device and --instances reach each version."""
    runs = tmp_path / "runs"
    runs.mkdir()
    state = torch.load(dlrm, weights_only=True)["model_state_dict"]
    torch.save(state, runs / "a.pt")
    torch.save({k: v * 1.01 if v.is_floating_point() else v for k, v in state.items()}, runs / "b.pt")
    config = json.dumps(recsys.get_architecture("dlrm").preset("tiny").to_dict())
    repo = tmp_path / "repo"
    base = ["export-all", str(runs), "--repo", str(repo), "--formats", "onnx", "--max-batch-size", "8"]
    flags = ["--arch", "dlrm", "--config", config, "--fp16", "--device", "gpu", "--instances", "2"]

    assert main([*base, *flags]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 converted, 0 skipped, 0 failed, 2 total"
    config_text = (repo / "dlrm_onnx" / "config.pbtxt").read_text()
    assert "count: 2" in config_text and "KIND_GPU" in config_text
    for version in (1, 2):
        meta = read_metadata(repo / "dlrm_onnx" / str(version))
        assert meta is not None and meta["options"]["export"]["fp16"] is True
        assert "--fp16" in shlex.split(meta["command"])

    assert main([*base, *flags]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 converted, 2 skipped, 0 failed, 2 total"
    assert main([*base, *flags, "--no-fp16"]) == 0  # other options: exported again
    assert capsys.readouterr().out.splitlines()[-1] == "2 converted, 0 skipped, 0 failed, 2 total"
    assert list_versions(repo, "dlrm_onnx") == [1, 2, 3, 4]


@pytest.mark.server
def test_demo_with_the_export_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    argv = ["demo", "--preset", "tiny", "--steps", "2", "--checkpoints", str(tmp_path / "ckpt")]
    argv += ["--repo", str(repo), "--formats", "onnx", "--max-batch-size", "8", "--instances", "2", "--fp16"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # the table wraps at the console's width
    assert "FP16" in out and "FAIL" not in out and "served check at batch 1 and 8" in out
    for model in recsys.ARCHITECTURES:
        assert not (repo / f"{model}_torchscript").exists()
        config_text = (repo / f"{model}_onnx" / "config.pbtxt").read_text()
        assert "max_batch_size: 8" in config_text and "count: 2" in config_text
        meta = read_metadata(repo / f"{model}_onnx" / "1")
        assert meta is not None and meta["options"]["export"]["fp16"] is True
