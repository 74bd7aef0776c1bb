"""TensorRT export. It runs where TensorRT and a CUDA GPU are present and is skipped elsewhere,
with the reason; where they are absent, asking for it is a one-line error naming the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tritonstack import recsys
from tritonstack.errors import ExportError, UsageError
from tritonstack.export.checkpoint import LoadedModel, load_model
from tritonstack.export.deployment import DeploymentOptions, Device
from tritonstack.export.formats import ExportOptions, TensorRTOptions, exporter
from tritonstack.export.pipeline import ExportResult, export_to_repository
from tritonstack.export.verify import verify
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.runtimes.runners import TorchRunner, runner_for
from tritonstack.runtimes.tensorrt import require_tensorrt


def _tensorrt_missing() -> str | None:
    try:
        require_tensorrt()
    except ExportError as exc:
        return str(exc)
    return None


MISSING = _tensorrt_missing()
GPU = DeploymentOptions(device=Device.GPU)


@pytest.fixture(scope="module")
def dlrm(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = tmp_path_factory.mktemp("trt") / "dlrm.pt"
    train(
        "dlrm",
        recsys.get_architecture("dlrm").preset("tiny"),
        steps=2,
        batch_size=32,
        lr=1e-3,
        seed=0,
        checkpoint_path=path,
    )
    return load_model(path, max_batch_size=32)


@pytest.mark.skipif(MISSING is None, reason="TensorRT is present here")
def test_missing_tensorrt_is_one_clear_line(dlrm: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as err:
        exporter(Format.TENSORRT)(dlrm.module, dlrm.spec, tmp_path, ExportOptions())
    message = str(err.value)
    assert "\n" not in message and "tritonstack[tensorrt]" in message and "other formats" in message
    assert not (tmp_path / "model.plan").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(MISSING is not None, reason=f"needs TensorRT and a CUDA GPU: {MISSING}")
@pytest.mark.parametrize(("fp16", "atol"), [(False, 1e-4), (True, 1e-2)])
def test_engine_matches_pytorch(dlrm: LoadedModel, tmp_path: Path, fp16: bool, atol: float) -> None:
    cache = tmp_path / "timing.cache"
    options = ExportOptions(fp16=fp16, tensorrt=TensorRTOptions(opt_batch_size=8, timing_cache=cache))
    artifact = exporter(Format.TENSORRT)(dlrm.module, dlrm.spec, tmp_path, options)
    assert artifact.path.name == "model.plan" and cache.is_file()
    verify(runner_for(artifact), TorchRunner(dlrm.module, dlrm.spec), dlrm.spec, atol=atol, rtol=atol * 10)


@pytest.mark.skipif(MISSING is None, reason="TensorRT is present here")
def test_other_formats_still_export_without_tensorrt(dlrm: LoadedModel, tmp_path: Path) -> None:
    done: list[ExportResult] = []
    with pytest.raises(ExportError, match="TensorRT is not installed"):
        export_to_repository(
            dlrm, [Format.TENSORRT, Format.ONNX], tmp_path, deployment=GPU, on_done=done.append
        )
    assert [r.model_name for r in done] == ["dlrm_onnx"]
    assert (tmp_path / "dlrm_onnx" / "1" / "model.onnx").is_file()
    assert not (tmp_path / "dlrm_tensorrt").exists()


def test_plans_on_cpu_instances_are_refused_before_any_work(dlrm: LoadedModel, tmp_path: Path) -> None:
    """Triton's tensorrt backend refuses KIND_CPU instances: asking for them is a usage error,
    raised before the ONNX export listed first."""
    repo = tmp_path / "repo"
    with pytest.raises(UsageError, match="--formats tensorrt needs --device gpu"):
        export_to_repository(dlrm, [Format.ONNX, Format.TENSORRT], repo, deployment=DeploymentOptions())
    assert not repo.exists()


def test_why_tensorrt_is_missing_is_kept_as_the_cause(
    dlrm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not installed: said so, with Python's ModuleNotFoundError chained (through the pipeline
    too); installed but not loading: the import's own reason, not "not installed"."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # how Python refuses a module that is absent
    with pytest.raises(ExportError, match="TensorRT is not installed") as err:
        export_to_repository(dlrm, [Format.TENSORRT], tmp_path / "repo", deployment=GPU)
    assert isinstance(err.value.__cause__, ModuleNotFoundError)

    broken = tmp_path / "site" / "tensorrt"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise ImportError("libnvinfer.so.10: cannot open shared object file")\n'
    )
    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.syspath_prepend(str(broken.parent))
    with pytest.raises(
        ExportError, match=r"TensorRT cannot be imported \(libnvinfer.so.10: cannot open"
    ) as err:
        require_tensorrt()
    assert isinstance(err.value.__cause__, ImportError)
