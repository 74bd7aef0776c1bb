"""A target Triton release: `export --triton-release` picks what that release's runtimes load,
and our ONNX export loads and answers the same in the very ONNX Runtime version Triton 24.10
ships (installed beside the project's by `make`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.errors import ExportError, UsageError
from tritonstack.export.checkpoint import load_model
from tritonstack.export.formats import ExportOptions, TensorRTOptions
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.state import read_metadata
from tritonstack.export.tensorrt import check_tensorrt_version
from tritonstack.export.torchscript import archive_format_version
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.releases import DEFAULT_RELEASE, RELEASES, triton_release
from tritonstack.spec import Array

RELEASE = triton_release(DEFAULT_RELEASE)
# `make` installs the release's ONNX Runtime here (pip install --target), apart from the project's.
RELEASE_ORT = Path(sys.executable).parent.parent / "runtimes" / f"onnxruntime-{RELEASE.onnxruntime}"
_RUN_IN_RELEASE_ORT = """
import json, sys
import numpy as np, onnxruntime as ort
path, feeds = sys.argv[1], json.loads(sys.argv[2])
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
arrays = {k: np.asarray(v["data"], dtype=v["dtype"]) for k, v in feeds.items()}
print(json.dumps({"version": ort.__version__, "out": session.run(None, arrays)[0].tolist()}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=root / "dlrm.pt")
    export_to_repository(
        load_model(root / "dlrm.pt", max_batch_size=4), [Format.ONNX, Format.TORCHSCRIPT], root / "repo"
    )
    return root / "repo"


def _run_in_release_ort(path: Path, feeds: dict[str, Array]) -> subprocess.CompletedProcess[str]:
    if not (RELEASE_ORT / "onnxruntime").is_dir():
        pytest.fail(f"ONNX Runtime {RELEASE.onnxruntime} is not at {RELEASE_ORT}: run make (it installs it)")
    payload = {k: {"data": v.tolist(), "dtype": str(v.dtype)} for k, v in feeds.items()}
    return subprocess.run(
        [sys.executable, "-c", _RUN_IN_RELEASE_ORT, str(path), json.dumps(payload)],
        env={**os.environ, "PYTHONPATH": str(RELEASE_ORT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_default_release_is_the_embedded_triton_and_picks_its_highest_opset() -> None:
    assert (RELEASE.name, RELEASE.triton) == ("24.10", "2.51.0")  # nvidia-pytriton 0.7.0's Triton
    assert ExportOptions().resolved_opset == RELEASE.max_opset
    assert ExportOptions(opset=18).resolved_opset == 18
    with pytest.raises(
        UsageError, match=r"--opset 22: Triton 24.10's ONNX Runtime 1.19.2 loads opsets up to 21"
    ):
        ExportOptions(opset=22)
    with pytest.raises(UsageError, match="unknown release, choose from " + ", ".join(RELEASES)):
        ExportOptions(triton_release="23.01")


def test_a_bad_release_stops_export_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.pt"  # never read: the options are checked first
    assert main(["export", str(missing), "--triton-release", "99.99", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--triton-release '99.99'" in err and "nowhere" not in err


def test_onnx_export_loads_and_answers_the_same_in_the_release_onnxruntime(
    exported: Path, tmp_path: Path
) -> None:
    version_dir = exported / "dlrm_onnx" / "1"
    model = onnx.load(str(version_dir / "model.onnx"))
    opset = next(o.version for o in model.opset_import if o.domain == "")
    assert (opset, model.ir_version) == (RELEASE.max_opset, RELEASE.max_ir_version)
    meta = read_metadata(version_dir)
    assert meta is not None and meta["artifact"]["triton_release"] == RELEASE.name
    assert (meta["opset"], meta["artifact"]["ir_version"]) == (opset, model.ir_version)

    feeds = load_model(exported.parent / "dlrm.pt", max_batch_size=4).spec.random_inputs(3)
    ours = ort.InferenceSession(str(version_dir / "model.onnx")).run(None, feeds)[0]
    run = _run_in_release_ort(version_dir / "model.onnx", feeds)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["version"] == RELEASE.onnxruntime
    np.testing.assert_allclose(np.asarray(answer["out"], np.float32), ours, rtol=1e-5, atol=1e-6)

    # The control: the same graph stamped one opset higher is refused by that runtime.
    newer = onnx.load(str(version_dir / "model.onnx"))
    next(o for o in newer.opset_import if o.domain == "").version = RELEASE.max_opset + 1
    onnx.save(newer, str(tmp_path / "newer.onnx"))
    refused = _run_in_release_ort(tmp_path / "newer.onnx", feeds)
    assert refused.returncode != 0 and "opset" in refused.stderr


def test_onnx_graphs_are_named_after_their_content(exported: Path, tmp_path: Path) -> None:
    """ONNX Runtime's TensorRT engine cache names engines after the graph's name and tensor
    names: two exports with other weights must not share a name, the same export keeps it."""
    first = onnx.load(str(exported / "dlrm_onnx" / "1" / "model.onnx")).graph.name
    loaded = load_model(exported.parent / "dlrm.pt", max_batch_size=4)
    export_to_repository(loaded, [Format.ONNX], exported)
    assert onnx.load(str(exported / "dlrm_onnx" / "2" / "model.onnx")).graph.name == first
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=1, checkpoint_path=tmp_path / "other.pt")
    (result,) = export_to_repository(
        load_model(tmp_path / "other.pt", max_batch_size=4), [Format.ONNX], exported
    )
    other = onnx.load(str(result.version_dir / "model.onnx")).graph.name
    assert other != first and other.startswith("dlrm_") and first.startswith("dlrm_")


def test_torchscript_records_an_archive_format_the_release_reads(exported: Path) -> None:
    version_dir = exported / "dlrm_torchscript" / "1"
    meta = read_metadata(version_dir)
    version = archive_format_version(version_dir / "model.pt")
    assert meta is not None and meta["artifact"]["torchscript_format"] == version
    assert version <= RELEASE.torchscript_max_format


def test_tensorrt_plans_only_from_the_release_tensorrt_or_version_compatible() -> None:
    """Checked before any build; the rule alone (no TensorRT needed)."""
    exact = RELEASE.tensorrt + ".18"
    check_tensorrt_version(exact, ExportOptions())
    with pytest.raises(ExportError, match="--backend-config=tensorrt,version-compatible=true"):
        check_tensorrt_version("10.8.0.43", ExportOptions())
    compatible = ExportOptions(tensorrt=TensorRTOptions(version_compatible=True))
    check_tensorrt_version("10.3.0.26", compatible)  # older, same major: its lean runtime runs on 10.5
    with pytest.raises(ExportError, match=f"install tensorrt=={RELEASE.tensorrt}"):
        check_tensorrt_version("10.8.0.43", compatible)  # a newer plan never runs on an older TensorRT
    with pytest.raises(ExportError):
        check_tensorrt_version("9.3.0", compatible)
