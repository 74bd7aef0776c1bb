"""`tritonstack check-repo`: hand-written repositories, each breaking one rule the native
backends of Triton 24.10 enforce (or one thing they silently ignore), and a clean one; our own
exports are clean; `export` runs the same rules on what it writes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack import recsys
from tritonstack.cli import main
from tritonstack.export.check_repo import Finding, Severity, check_repository, check_version
from tritonstack.export.checkpoint import load_model
from tritonstack.export.pipeline import export_to_repository
from tritonstack.export.state import record_export
from tritonstack.formats import Format
from tritonstack.recsys.train import train
from tritonstack.releases import triton_release

RELEASE = triton_release("24.10")
ONNX_CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }}
output {{ name: "y" data_type: {out_type} dims: [ 4 ] }}
{extra}"""
TORCHSCRIPT_CONFIG = """name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
{inputs}
{outputs}
{extra}"""


class Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Pair(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


def _io(kind: str, names: list[str]) -> str:
    return "\n".join(f'{kind} {{ name: "{n}" data_type: TYPE_FP32 dims: [ 4 ] }}' for n in names)


def write_onnx_model(
    repo: Path,
    name: str = "m_onnx",
    *,
    out_type: str = "TYPE_FP32",
    extra: str = "",
    opset: int = 21,
    ir_version: int = 10,
    graph_output: str = "y",
    graph_rank: int = 2,
) -> Path:
    """A hand-written ONNX model (y = x) and its config; returns the version directory."""
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(ONNX_CONFIG.format(name=name, out_type=out_type, extra=extra))
    dims: list[str | int] = ["batch", 4, 1]
    shape = dims[:graph_rank]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [graph_output])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(graph_output, TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.save(model, str(version_dir / "model.onnx"))
    return version_dir


def write_torchscript_model(
    repo: Path,
    name: str = "m_torchscript",
    *,
    inputs: tuple[str, ...] = ("a", "b"),
    outputs: tuple[str, ...] = ("sum",),
    module: nn.Module | None = None,
    extra: str = "",
) -> Path:
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True)
    text = TORCHSCRIPT_CONFIG.format(
        name=name, inputs=_io("input", list(inputs)), outputs=_io("output", list(outputs)), extra=extra
    )
    (repo / name / "config.pbtxt").write_text(text)
    torch.jit.script(module or Add()).save(str(version_dir / "model.pt"))  # type: ignore[no-untyped-call]
    return version_dir


def _findings(repo: Path) -> list[Finding]:
    return check_repository(repo, RELEASE)


def _only(repo: Path, severity: Severity, *words: str) -> Finding:
    """The one finding of the repository, which must have `severity` and say each of `words`."""
    findings = _findings(repo)
    assert len(findings) == 1, [str(f) for f in findings]
    (finding,) = findings
    assert finding.severity is severity and all(w in str(finding) for w in words), str(finding)
    return finding


def test_a_clean_hand_written_repository_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_onnx_model(tmp_path)
    write_torchscript_model(
        tmp_path, extra='parameters { key: "tritonstack.id_high.a" value { string_value: "9" } }'
    )
    assert _findings(tmp_path) == []
    assert main(["check-repo", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "0 errors, 0 warnings for Triton 24.10" in captured.err


def test_errors_exit_1_with_one_line_per_finding_naming_file_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_onnx_model(tmp_path, opset=22)
    write_onnx_model(tmp_path, "n_onnx", ir_version=11)
    assert main(["check-repo", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(": error: " in line and "; fix: " in line for line in lines)
    assert lines[0].startswith(str(tmp_path / "m_onnx" / "1" / "model.onnx"))
    assert main(["check-repo", str(tmp_path / "nowhere")]) == 2
    assert main(["check-repo", str(tmp_path), "--triton-release", "20.01"]) == 2


def test_opset_above_the_release(tmp_path: Path) -> None:
    write_onnx_model(tmp_path, opset=22)
    _only(tmp_path, Severity.ERROR, "opset 22", "loads up to 21", "--opset 21")
    assert check_repository(tmp_path, triton_release("25.01"))  # 25.01's ONNX Runtime 1.20.1 stops at 21 too


def test_ir_version_above_the_release(tmp_path: Path) -> None:
    write_onnx_model(tmp_path, ir_version=11)
    _only(tmp_path, Severity.ERROR, "IR version 11", "loads up to 10")


def test_onnx_output_dtype_differs_from_the_config(tmp_path: Path) -> None:
    write_onnx_model(tmp_path, out_type="TYPE_INT64")
    _only(tmp_path, Severity.ERROR, "output 'y' is FP32 in the graph but TYPE_INT64 in the config")


def test_onnx_config_names_a_tensor_the_graph_lacks(tmp_path: Path) -> None:
    write_onnx_model(tmp_path, graph_output="score")
    _only(tmp_path, Severity.ERROR, "config output 'y' is not a graph output", "['score']")


def test_onnx_rank_differs_from_the_config_with_its_batch_axis(tmp_path: Path) -> None:
    write_onnx_model(tmp_path, graph_rank=3)
    _only(tmp_path, Severity.ERROR, "rank 3 in the graph, the config declares 2")


def test_tensorrt_plan_on_cpu_instances(tmp_path: Path) -> None:
    (tmp_path / "m_tensorrt" / "1").mkdir(parents=True)
    (tmp_path / "m_tensorrt" / "1" / "model.plan").write_bytes(b"plan")
    config = 'name: "m_tensorrt"\nplatform: "tensorrt_plan"\nmax_batch_size: 8\n'
    config += 'input { name: "x" data_type: TYPE_FP32 dims: [ 4 ] }\n'
    config += 'output { name: "y" data_type: TYPE_FP32 dims: [ 4 ] }\n'
    (tmp_path / "m_tensorrt" / "config.pbtxt").write_text(config + "instance_group { kind: KIND_CPU }\n")
    _only(tmp_path, Severity.ERROR, "KIND_CPU", "supports only GPU device", "KIND_GPU")
    (tmp_path / "m_tensorrt" / "config.pbtxt").write_text(config + "instance_group { kind: KIND_GPU }\n")
    assert _findings(tmp_path) == []


def test_tensorrt_plan_built_by_another_tensorrt(tmp_path: Path) -> None:
    test_tensorrt_plan_on_cpu_instances(tmp_path)  # a clean plan on GPU instances
    version_dir = tmp_path / "m_tensorrt" / "1"
    record_export(version_dir, {"artifact": {"tensorrt": "10.8.0.43", "version_compatible": False}})
    _only(tmp_path, Severity.ERROR, "built by TensorRT 10.8.0.43", "ships TensorRT 10.5.0")
    record_export(version_dir, {"artifact": {"tensorrt": "10.3.0", "version_compatible": True}})
    _only(tmp_path, Severity.WARNING, "--backend-config=tensorrt,version-compatible=true")


def test_inter_op_thread_count_aborts_torchscript(tmp_path: Path) -> None:
    extra = 'parameters { key: "INTER_OP_THREAD_COUNT" value { string_value: "1" } }'
    write_torchscript_model(tmp_path, extra=extra)
    _only(tmp_path, Severity.ERROR, "INTER_OP_THREAD_COUNT aborts Triton 24.10", "remove the parameter")


def test_parameters_the_native_backend_ignores(tmp_path: Path) -> None:
    extra = 'parameters { key: "intra_op_thread_count" value { string_value: "2" } }'
    write_torchscript_model(tmp_path, extra=extra)
    _only(tmp_path, Severity.WARNING, "'intra_op_thread_count' is ignored", "spell it INTRA_OP_THREAD_COUNT")


def test_the_parameter_our_gpu_export_writes_is_no_finding(tmp_path: Path) -> None:
    """`export --device gpu` writes FORCE_CPU_ONLY_INPUT_TENSORS for our stand-ins; check-repo, which
    export runs, told the user to remove it (seen on the H200)."""
    extra = (
        "instance_group { kind: KIND_GPU count: 1 }\n"
        'parameters { key: "FORCE_CPU_ONLY_INPUT_TENSORS" value { string_value: "no" } }'
    )
    write_onnx_model(tmp_path, extra=extra)
    write_torchscript_model(tmp_path, extra=extra)
    assert _findings(tmp_path) == []


def test_ort_tensorrt_accelerator_parameters(tmp_path: Path) -> None:
    accelerator = (
        'optimization { execution_accelerators { gpu_execution_accelerator { name: "tensorrt" '
        'parameters { key: "trt_engine_cache_enable" value: "1" } %s } } }'
    )
    write_onnx_model(tmp_path, extra=accelerator % "")
    _only(tmp_path, Severity.WARNING, "no trt_engine_cache_path", "--ort-trt-engine-cache")
    (tmp_path / "m_onnx" / "config.pbtxt").write_text(
        ONNX_CONFIG.format(
            name="m_onnx",
            out_type="TYPE_FP32",
            extra=accelerator % 'parameters { key: "trt_engine_cache_path" value: "/cache" } '
            'parameters { key: "cache_dir" value: "/x" }',
        )
    )
    _only(tmp_path, Severity.ERROR, "refuses TensorRT accelerator parameter 'cache_dir'")


def test_torchscript_input_bound_by_position_to_another_argument(tmp_path: Path) -> None:
    """forward(a, b) with config inputs [b, x]: not all are argument names and not all are
    <name>__<index>, so libtorch binds by position: b feeds argument a."""
    write_torchscript_model(tmp_path, inputs=("b", "x"))
    _only(tmp_path, Severity.ERROR, "input 'b' is bound by position to forward() argument 'a'")


def test_torchscript_named_index_inputs_must_cover_every_position(tmp_path: Path) -> None:
    write_torchscript_model(tmp_path, inputs=("in__0", "in__2"))
    _only(tmp_path, Severity.ERROR, "by the <name>__<index> suffix", "0..1 once each")


def test_torchscript_output_index_that_position_contradicts(tmp_path: Path) -> None:
    write_torchscript_model(tmp_path, outputs=("diff__1", "sum"), module=Pair())
    _only(tmp_path, Severity.ERROR, "output 'diff__1' says index 1 but is bound by position 0")


def test_torchscript_inputs_named_neither_way_are_bound_by_position(tmp_path: Path) -> None:
    write_torchscript_model(tmp_path, inputs=("left", "right"))
    _only(tmp_path, Severity.WARNING, "neither forward() arguments ['a', 'b'] nor <name>__<index>")


def test_torchscript_counts_of_inputs_and_outputs(tmp_path: Path) -> None:
    write_torchscript_model(tmp_path, inputs=("a",))
    _only(tmp_path, Severity.ERROR, "forward() takes 2 inputs ['a', 'b'], the config declares 1")
    write_torchscript_model(tmp_path, "pair_torchscript", module=Pair())
    [_, pair] = _findings(tmp_path)
    assert "forward() returns 2 tensors, the config declares 1 outputs" in str(pair)


def test_torchscript_archive_format_newer_than_the_release_libtorch(tmp_path: Path) -> None:
    version_dir = write_torchscript_model(tmp_path)
    source = zipfile.ZipFile(version_dir / "model.pt")
    with zipfile.ZipFile(version_dir / "newer.pt", "w") as newer:
        for item in source.infolist():
            data = source.read(item)
            newer.writestr(
                item,
                b"11\n" if item.filename.endswith("/version") and item.filename.count("/") == 1 else data,
            )
    source.close()
    (version_dir / "newer.pt").replace(version_dir / "model.pt")
    _only(tmp_path, Severity.ERROR, "TorchScript format 11", "reads up to 10")


def test_artifacts_that_do_not_parse_are_findings_not_a_crash(tmp_path: Path) -> None:
    (write_onnx_model(tmp_path) / "model.onnx").write_bytes(b"\x00garbage")
    (write_torchscript_model(tmp_path) / "model.pt").write_bytes(b"garbage")
    onnx_finding, torchscript_finding = _findings(tmp_path)
    assert "not an ONNX model" in str(onnx_finding) and onnx_finding.severity is Severity.ERROR
    assert "not a TorchScript archive" in str(torchscript_finding)


def test_files_in_a_version_directory_other_than_the_artifact(tmp_path: Path) -> None:
    version_dir = write_onnx_model(tmp_path)
    (version_dir / "metadata.json").write_text("{}")
    _only(tmp_path, Severity.WARNING, "metadata of an older export", "leave it untouched")
    (version_dir / "metadata.json").unlink()
    (version_dir / "notes.txt").write_text("hello")
    _only(tmp_path, Severity.WARNING, "notes.txt", "move it out of the version directory")


def test_onnx_external_data_is_part_of_the_artifact(tmp_path: Path) -> None:
    version_dir = write_onnx_model(tmp_path)
    model = onnx.load(str(version_dir / "model.onnx"))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(256, np.float32), "w"))
    onnx.save(
        model,
        str(version_dir / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (version_dir / "weights.bin").is_file()
    assert _findings(tmp_path) == []


def test_a_config_without_a_version(tmp_path: Path) -> None:
    version_dir = write_onnx_model(tmp_path)
    (version_dir / "model.onnx").unlink()
    version_dir.rmdir()
    _only(tmp_path, Severity.ERROR, "no version directory")


def test_a_version_policy_naming_missing_versions(tmp_path: Path) -> None:
    write_onnx_model(tmp_path, extra="version_policy { specific { versions: [ 1, 4 ] } }")
    _only(tmp_path, Severity.WARNING, "lists missing versions [4]")


def test_a_version_without_its_model_file(tmp_path: Path) -> None:
    write_onnx_model(tmp_path)
    (tmp_path / "m_onnx" / "2").mkdir()
    _only(tmp_path, Severity.ERROR, "no model.onnx")


def test_top_level_folders_that_are_no_models(tmp_path: Path) -> None:
    write_onnx_model(tmp_path)
    (tmp_path / ".staging").mkdir()
    _only(tmp_path, Severity.ERROR, ".staging", "hidden ones too", "remove the folder")


def test_intra_op_threads_that_differ_across_torchscript_models(tmp_path: Path) -> None:
    threads = 'parameters {{ key: "INTRA_OP_THREAD_COUNT" value {{ string_value: "{}" }} }}'
    write_torchscript_model(tmp_path, "one_torchscript", extra=threads.format(1))
    write_torchscript_model(tmp_path, "two_torchscript", extra=threads.format(2))
    findings = _findings(tmp_path)
    assert [f.path.parent.name for f in findings] == ["one_torchscript", "two_torchscript"]
    assert all(
        f.severity is Severity.WARNING and "one_torchscript=1, two_torchscript=2" in str(f) for f in findings
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check")
    config = recsys.get_architecture("dlrm").preset("tiny")
    train("dlrm", config, steps=3, batch_size=32, lr=1e-3, seed=0, checkpoint_path=root / "dlrm.pt")
    return root / "dlrm.pt"


def test_our_exports_are_clean_and_export_reports_what_check_repo_warns(
    tmp_path: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    loaded = load_model(trained, max_batch_size=4)
    results = export_to_repository(loaded, [Format.ONNX, Format.TORCHSCRIPT], repo)
    assert _findings(repo) == [] and all(r.warnings == () for r in results)
    # Another TorchScript model with another thread count: the export says so, as check-repo does.
    args = ["export", str(trained), "--repo", str(repo), "--name", "other", "--formats", "torchscript"]
    assert main([*args, "--intra-op-threads", "2", "--max-batch-size", "4"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if ": warning: " in line]
    assert len(printed) == 1 and "dlrm_torchscript=1, other_torchscript=2" in printed[0]
    assert [str(f) for f in _findings(repo)][-1] == printed[0]
    assert main(["check-repo", str(repo)]) == 0  # warnings alone pass


def test_a_staged_version_is_checked_as_export_checks_it_before_publishing(tmp_path: Path) -> None:
    """`export` runs `check_version` on the staged artifact and the config it is about to write;
    an error there stops it before the version is published."""
    staged = write_torchscript_model(tmp_path / "staging")
    config = text_format.Parse((staged.parent / "config.pbtxt").read_text(), pb.ModelConfig())
    assert check_version(config, staged, RELEASE, tmp_path / "repo" / "config.pbtxt") == []
    config.parameters["INTER_OP_THREAD_COUNT"].string_value = "1"
    [finding] = check_version(config, staged, RELEASE, tmp_path / "repo" / "config.pbtxt")
    assert finding.severity is Severity.ERROR and "INTER_OP_THREAD_COUNT" in finding.problem
