"""Exporters: each format's artifact runs in its own runtime and agrees with PyTorch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.custom_models import make_scorer
from tritonstack.errors import ExportError, UsageError, VerificationError
from tritonstack.export.checkpoint import LoadedModel, ModelSource, load_model
from tritonstack.export.custom import CustomArch, parse_input
from tritonstack.export.formats import ExportOptions, exporter
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.verify import check_model_outputs, tolerances, verify
from tritonstack.formats import DEFAULT_FORMATS, Format
from tritonstack.runtimes.runners import TorchRunner, runner_for
from tritonstack.spec import TensorSpec


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = tmp_path_factory.mktemp("ckpt") / "w.pt"
    torch.manual_seed(0)
    torch.save(make_scorer().state_dict(), path)
    custom = CustomArch(
        "tests.custom_models:make_scorer",
        (parse_input("ids:int64:3:50"), parse_input("dense:float32:4")),
        ("p",),
    )
    return load_model(path, ModelSource(custom=custom), max_batch_size=32)


@pytest.mark.parametrize("fmt", DEFAULT_FORMATS)
def test_export_and_verify(fmt: Format, scorer: LoadedModel, tmp_path: Path) -> None:
    artifact = exporter(fmt)(scorer.module, scorer.spec, tmp_path, ExportOptions())
    assert artifact.path.name == fmt.filename and artifact.size_bytes > 0
    report = verify(runner_for(artifact), TorchRunner(scorer.module, scorer.spec), scorer.spec)
    assert {d.batch_size for d in report.diffs} == {1, 32}
    assert report.max_abs < 1e-5


def test_onnx_graph_is_named_checked_and_batch_dynamic(scorer: LoadedModel, tmp_path: Path) -> None:
    artifact = exporter(Format.ONNX)(scorer.module, scorer.spec, tmp_path, ExportOptions(opset=18))
    model = onnx.load(str(artifact.path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["ids", "dense"]
    assert [o.name for o in model.graph.output] == ["p"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input)
    assert artifact.details["opset"] == 18


def test_verification_fails_loudly_when_the_artifact_differs(scorer: LoadedModel, tmp_path: Path) -> None:
    artifact = exporter(Format.TORCHSCRIPT)(scorer.module, scorer.spec, tmp_path, ExportOptions())
    changed = make_scorer()
    changed.load_state_dict(scorer.module.state_dict())
    with torch.no_grad():
        changed.lin.bias.add_(0.5)
    with pytest.raises(VerificationError, match=r"torchscript disagrees .* p at batch 1: max abs"):
        verify(runner_for(artifact), TorchRunner(changed, scorer.spec), scorer.spec)


def test_format_list_parsing() -> None:
    assert Format.parse_list("onnx, torchscript") == [Format.ONNX, Format.TORCHSCRIPT]
    with pytest.raises(
        UsageError, match="unknown format 'tensorrtx': choose from onnx, torchscript, tensorrt"
    ):
        Format.parse_list("onnx,tensorrtx")


@pytest.mark.parametrize("fmt", DEFAULT_FORMATS)
def test_fp16_artifacts_are_half_size_with_float32_io(fmt: Format, tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(make_scorer(vocab=5000, width=32).state_dict(), tmp_path / "w.pt")
    custom = CustomArch(
        "tests.custom_models:make_scorer",
        (parse_input("ids:int64:3:5000"), parse_input("dense:float32:4")),
        ("p",),
    )
    big = load_model(tmp_path / "w.pt", ModelSource(config={"vocab": 5000, "width": 32}, custom=custom))
    sizes = {}
    for fp16 in (False, True):
        out = tmp_path / str(fp16)
        out.mkdir()
        artifact = exporter(fmt)(big.module, big.spec, out, ExportOptions(fp16=fp16))
        sizes[fp16] = artifact.size_bytes
        atol, rtol = tolerances(fp16)
        report = verify(
            runner_for(artifact), TorchRunner(big.module, big.spec), big.spec, atol=atol, rtol=rtol
        )
        assert report.max_abs < atol
        assert runner_for(artifact).infer(big.spec.random_inputs(2))["p"].dtype == np.float32
    assert sizes[True] < 0.6 * sizes[False]


def _custom(tmp_path: Path, factory: str) -> LoadedModel:
    torch.manual_seed(0)
    torch.save(make_scorer().state_dict(), tmp_path / "w.pt")
    return load_model(tmp_path / "w.pt", ModelSource(custom=CustomArch(f"tests.custom_models:{factory}")))


@pytest.mark.parametrize(("factory", "kind"), [("make_dict_scorer", "dict"), ("make_list_scorer", "list")])
def test_dict_and_list_outputs_are_refused_before_any_export(factory: str, kind: str, tmp_path: Path) -> None:
    """Triton's pytorch backend fails every request of a model returning a dict or a list of
    Tensors, so no format of it is exported: one line naming the fix."""
    loaded = _custom(tmp_path, factory)
    with pytest.raises(ExportError) as err:
        export_to_repository(loaded, list(DEFAULT_FORMATS), tmp_path / "repo")
    message = str(err.value)
    assert message.startswith(f"{factory}: forward() returns a {kind}: ") and "\n" not in message
    assert "tuple of Tensors" in message and "return out['score']" in message
    assert not (tmp_path / "repo").exists()


def test_dict_output_of_a_custom_model_is_a_usage_error(tmp_path: Path) -> None:
    inputs = (parse_input("ids:int64:3:50"), parse_input("dense:float32:4"))
    custom = CustomArch("tests.custom_models:make_dict_scorer", inputs, ("score",))
    with pytest.raises(UsageError, match=r"make_dict_scorer: forward\(\) returns a dict: .*tuple of Tensors"):
        custom.build({}, None, 8)


def test_a_forward_returning_another_number_of_tensors_is_refused() -> None:
    """One tensor for two outputs: refused by a custom model's build (two --output) and by the
    check every export runs first, in the same words."""
    inputs = (parse_input("ids:int64:3:50"), parse_input("dense:float32:4"))
    named = r"forward\(\) returns 1 tensors but the model has 2 outputs \['score', 'extra'\]"
    with pytest.raises(UsageError, match=f"^tests.custom_models:make_scorer: {named}: return one tensor"):
        CustomArch("tests.custom_models:make_scorer", inputs, ("score", "extra")).build({}, None, 8)
    module, spec = CustomArch("tests.custom_models:make_scorer", inputs, ("score",)).build({}, None, 8)
    two = replace(spec, outputs=(*spec.outputs, TensorSpec("extra", "float32", (1,))))
    with pytest.raises(ExportError, match=f"^make_scorer: {named}: return one tensor"):
        check_model_outputs(module, two)


def test_output_dtype_other_than_the_configs_is_refused_before_any_export(tmp_path: Path) -> None:
    loaded = _custom(tmp_path, "make_double_scorer")
    with pytest.raises(VerificationError) as err:
        export_to_repository(loaded, list(DEFAULT_FORMATS), tmp_path / "repo")
    assert str(err.value) == (
        "make_double_scorer: pytorch returns output 'score' as float64 but the config declares float32: "
        "return float32 from forward() (e.g. .to(torch.float32)) or declare the output as float64"
    )
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("fmt", DEFAULT_FORMATS)
def test_verification_checks_the_artifacts_output_dtype(fmt: Format, tmp_path: Path) -> None:
    loaded = _custom(tmp_path, "make_double_scorer")
    artifact = exporter(fmt)(loaded.module, loaded.spec, tmp_path, ExportOptions())
    with pytest.raises(
        VerificationError, match=f"{runner_for(artifact).name} returns output 'score' as float64"
    ):
        verify(runner_for(artifact), TorchRunner(loaded.module, loaded.spec), loaded.spec)
