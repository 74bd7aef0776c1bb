"""`tritonstack check-repo`: a model repository (ours or hand-written) against what the native
backends of one Triton release load, before any server sees it.

Each finding names the file, the problem and the fix. Errors are what the release refuses or
runs wrongly (a load failure, an abort, a tensor bound to the wrong input); warnings are what
works but costs (a parameter it ignores, a file no backend reads that a later write turns into
a reload, one thread count for several TorchScript models). Models whose backend is none of the
three native ones we export for (Python, ensembles) are skipped.
"""

from __future__ import annotations

import enum
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import ExportError, UsageError, first_line
from tritonstack.export.embeddings import MANIFEST_NAME
from tritonstack.export.native_rules import (
    NATIVE_PARAMETERS,
    ORT_TENSORRT_ACCELERATOR_PARAMETERS,
    OWN_PARAMETER_PREFIX,
    STAND_IN_PARAMETERS,
    Binding,
    input_binding,
    named_index,
    output_binding,
)
from tritonstack.export.state import LEGACY_METADATA_NAME, read_metadata
from tritonstack.formats import Format
from tritonstack.releases import TritonRelease
from tritonstack.spec import CONFIG_NAME

if TYPE_CHECKING:
    import onnx


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    path: Path
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.severity.value}: {self.problem}; fix: {self.fix}"


def check_repository(repo: Path, release: TritonRelease) -> list[Finding]:
    """Every finding of every model directory, then those across models."""
    if not repo.is_dir():
        raise UsageError(f"no model repository at {repo}: give the folder holding the model folders")
    findings: list[Finding] = []
    configs: dict[Path, pb.ModelConfig] = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        model_findings, config = _check_model_dir(model_dir, release)
        findings += model_findings
        if config is not None:
            configs[model_dir / CONFIG_NAME] = config
    return findings + list(_shared_thread_count(configs))


def thread_count_findings(repo: Path) -> list[Finding]:
    """Only the rule across models, from the configs alone (what `export` runs after publishing)."""
    configs = {}
    for config_path in sorted(repo.glob(f"*/{CONFIG_NAME}")):
        try:
            configs[config_path] = text_format.Parse(config_path.read_text(), pb.ModelConfig())
        except (OSError, text_format.ParseError):
            continue  # check-repo reports it
    return list(_shared_thread_count(configs))


def check_version(
    config: pb.ModelConfig, version_dir: Path, release: TritonRelease, config_path: Path
) -> list[Finding]:
    """The findings of one version as the release would load it with `config` (what `export`
    runs on a staged version before publishing it)."""
    fmt = format_of(config)
    if fmt is None:
        return []
    return [
        *check_config(config, config_path, fmt, release),
        *_check_version_dir(version_dir, config, fmt, release),
    ]


def format_of(config: pb.ModelConfig) -> Format | None:
    """The native backend a config names (by platform or backend), or None for another one."""
    backends = {"onnxruntime": Format.ONNX, "pytorch": Format.TORCHSCRIPT, "tensorrt": Format.TENSORRT}
    for fmt in Format:
        if config.platform == fmt.platform:
            return fmt
    return backends.get(config.backend) if not config.platform else None


def check_config(config: pb.ModelConfig, path: Path, fmt: Format, release: TritonRelease) -> list[Finding]:
    """Instance kinds, parameters and the ONNX Runtime accelerator of one config."""
    findings = []
    if fmt is Format.TENSORRT:
        for group in config.instance_group:
            if group.kind in (pb.ModelInstanceGroup.KIND_CPU, pb.ModelInstanceGroup.KIND_MODEL):
                kind = pb.ModelInstanceGroup.Kind.Name(group.kind)
                findings.append(
                    _error(
                        path,
                        f"a TensorRT plan on {kind} instances: the tensorrt backend supports only GPU device",
                        "set instance_group kind: KIND_GPU",
                    )
                )
    findings += _check_parameters(config, path, fmt, release)
    if fmt is Format.ONNX:
        findings += _check_ort_accelerators(config, path)
    return findings


def _check_model_dir(model_dir: Path, release: TritonRelease) -> tuple[list[Finding], pb.ModelConfig | None]:
    config_path = model_dir / CONFIG_NAME
    if not config_path.is_file():
        fix = (
            "remove the folder from the repository"
            if model_dir.name.startswith(".")
            else "write its config.pbtxt"
        )
        return [
            _error(
                model_dir,
                "no config.pbtxt: Triton takes every top-level folder, hidden ones too, for a model",
                fix,
            )
        ], None
    try:
        config = text_format.Parse(config_path.read_text(), pb.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        return [
            _error(config_path, f"not a model config Triton parses: {exc}", "correct the field it names")
        ], None
    fmt = format_of(config)
    if fmt is None:
        return [], None
    findings = []
    if config.name and config.name != model_dir.name:
        findings.append(
            _error(
                config_path,
                f"names model {config.name!r} in folder {model_dir.name!r}",
                f'set name: "{model_dir.name}" or rename the folder',
            )
        )
    findings += check_config(config, config_path, fmt, release)
    versions = sorted(
        (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    findings += _check_policy(config, config_path, [int(v.name) for v in versions])
    for version_dir in versions:
        findings += _check_version_dir(version_dir, config, fmt, release)
    return findings, config


def _check_policy(config: pb.ModelConfig, path: Path, versions: list[int]) -> list[Finding]:
    if not versions:
        return [
            _error(
                path.parent,
                "no version directory: Triton has nothing to load",
                "export a version (a folder named 1 holding the model file)",
            )
        ]
    if config.version_policy.WhichOneof("policy_choice") != "specific":
        return []
    listed = list(config.version_policy.specific.versions)
    missing = sorted(set(listed) - set(versions))
    if not missing:
        return []
    if len(missing) == len(listed):
        return [
            _error(
                path,
                f"the version policy lists {missing}, none of which exists",
                "list existing versions (tritonstack models promote)",
            )
        ]
    return [
        _warning(
            path,
            f"the version policy lists missing versions {missing}",
            "promote existing versions or remove those from version_policy",
        )
    ]


def _check_parameters(
    config: pb.ModelConfig, path: Path, fmt: Format, release: TritonRelease
) -> Iterator[Finding]:
    known = NATIVE_PARAMETERS[fmt]
    for key in config.parameters:
        if key.startswith(OWN_PARAMETER_PREFIX) or key in STAND_IN_PARAMETERS:
            continue  # ours: native backends ignore them by design
        if fmt is Format.TORCHSCRIPT and key == "INTER_OP_THREAD_COUNT" and not release.interop_threads_safe:
            yield _error(
                path,
                f"parameter INTER_OP_THREAD_COUNT aborts Triton {release.name}: its pytorch backend calls "
                "at::set_num_interop_threads on every model load, which throws on the second",
                "remove the parameter",
            )
        elif key not in known:
            same = [k for k in known if k.lower() == key.lower()]
            fix = f"spell it {same[0]}" if same else "remove it"
            yield _warning(
                path, f"parameter {key!r} is ignored by Triton {release.name}'s {fmt.platform} backend", fix
            )


def _check_ort_accelerators(config: pb.ModelConfig, path: Path) -> Iterator[Finding]:
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        if accelerator.name != "tensorrt":
            continue
        for key in accelerator.parameters:
            if key not in ORT_TENSORRT_ACCELERATOR_PARAMETERS:
                yield _error(
                    path,
                    f"the onnxruntime backend refuses TensorRT accelerator parameter {key!r}",
                    "remove it",
                )
        cache = accelerator.parameters.get("trt_engine_cache_enable", "0").lower() in ("1", "true")
        if cache and not accelerator.parameters.get("trt_engine_cache_path"):
            yield _warning(
                path,
                "the TensorRT engine cache has no trt_engine_cache_path: engines land in tritonserver's "
                "working directory and are lost on restart",
                "set trt_engine_cache_path to a directory outside the repository "
                "(export --ort-trt-engine-cache DIR)",
            )


def _check_version_dir(
    version_dir: Path, config: pb.ModelConfig, fmt: Format, release: TritonRelease
) -> list[Finding]:
    artifact = version_dir / (config.default_model_filename or fmt.filename)
    if not artifact.is_file():
        return [
            _error(
                version_dir,
                f"no {artifact.name}: the {fmt.platform} backend loads that file",
                f"put the model file there as {artifact.name}, or set default_model_filename",
            )
        ]
    findings: list[Finding] = []
    expected = {artifact.name}
    if fmt is Format.ONNX:
        model = _load_onnx(artifact)
        if model is None:
            findings.append(
                _error(
                    artifact, "not an ONNX model: it does not parse", "export it again (or replace the file)"
                )
            )
        else:
            expected |= _external_data_files(model)
            findings += _check_onnx(model, artifact, config, release)
    elif fmt is Format.TORCHSCRIPT:
        findings += _check_torchscript(artifact, config, release)
    else:
        findings += _check_plan_record(version_dir, artifact, release)
    if (version_dir / MANIFEST_NAME).is_file():
        expected |= _embedding_files(version_dir)
    findings += _check_contents(version_dir, expected)
    return findings


def _check_contents(version_dir: Path, expected: set[str]) -> Iterator[Finding]:
    for extra in sorted(p for p in version_dir.iterdir() if p.name not in expected):
        if extra.name == LEGACY_METADATA_NAME:
            yield _warning(
                extra,
                "metadata of an older export inside the version: a write to it reloads the version",
                "leave it untouched: tritonstack reads it, and records in the repository's tritonstack.json",
            )
        else:
            yield _warning(
                extra,
                "a file no backend reads inside the version: cloud repositories download it with every "
                "load, and a change to it reloads the version",
                "move it out of the version directory",
            )


def _load_onnx(path: Path) -> onnx.ModelProto | None:
    """The model's graph (weights stored outside it are not read), or None when it does not parse."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return None


def _external_data_files(model: onnx.ModelProto) -> set[str]:
    import onnx

    files = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            files |= {entry.value for entry in tensor.external_data if entry.key == "location"}
    return files


def _embedding_files(version_dir: Path) -> set[str]:
    import json

    manifest = json.loads((version_dir / MANIFEST_NAME).read_text())
    return {MANIFEST_NAME} | {
        part["file"] for part in manifest.values() if isinstance(part, dict) and "file" in part
    }


def _check_onnx(
    model: onnx.ModelProto, path: Path, config: pb.ModelConfig, release: TritonRelease
) -> Iterator[Finding]:
    from onnx import helper

    where = f"Triton {release.name}'s ONNX Runtime {release.onnxruntime}"
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > release.max_opset:
        yield _error(
            path,
            f"opset {opset}, but {where} loads up to {release.max_opset}",
            f"export again with --opset {release.max_opset} (or --triton-release of a later release)",
        )
    if model.ir_version > release.max_ir_version:
        yield _error(
            path,
            f"IR version {model.ir_version}, but {where} loads up to {release.max_ir_version}",
            f"export again for --triton-release {release.name}",
        )
    initializers = {t.name for t in model.graph.initializer}
    graph = {
        "input": {v.name: v for v in model.graph.input if v.name not in initializers},
        "output": {v.name: v for v in model.graph.output},
    }
    batch = 1 if config.max_batch_size > 0 else 0
    for kind, declared in (("input", config.input), ("output", config.output)):
        for tensor in declared:
            value = graph[kind].get(tensor.name)
            if value is None:
                yield _error(
                    path,
                    f"config {kind} {tensor.name!r} is not a graph {kind} (it has {sorted(graph[kind])})",
                    "name the config's tensors after the graph's",
                )
                continue
            wanted = pb.DataType.Name(tensor.data_type).removeprefix("TYPE_")
            elem = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            got = _wire_name(str(elem))
            if got != wanted:
                yield _error(
                    path,
                    f"{kind} {tensor.name!r} is {got} in the graph but TYPE_{wanted} in the config",
                    f"declare TYPE_{got} in config.pbtxt or export with that dtype",
                )
            rank = len(value.type.tensor_type.shape.dim)
            dims = len(tensor.reshape.shape) if tensor.HasField("reshape") else len(tensor.dims)
            if rank != dims + batch:
                yield _error(
                    path,
                    f"{kind} {tensor.name!r} has rank {rank} in the graph, the config declares "
                    f"{dims + batch} (batch axis included: {bool(batch)})",
                    "make the config's dims match the graph",
                )
        if kind == "input":
            for name in sorted(set(graph[kind]) - {t.name for t in declared}):
                yield _error(
                    path,
                    f"graph input {name!r} is missing from the config: no request can carry it",
                    "declare it in config.pbtxt",
                )


def _wire_name(numpy_name: str) -> str:
    from tritonstack.spec import SUPPORTED_DTYPES, wire_dtype

    return wire_dtype(numpy_name) if numpy_name in SUPPORTED_DTYPES else numpy_name.upper()


def _check_torchscript(path: Path, config: pb.ModelConfig, release: TritonRelease) -> Iterator[Finding]:
    import torch

    from tritonstack.export.torchscript import archive_format_version

    try:
        version = archive_format_version(path)
    except (ExportError, OSError, ValueError, zipfile.BadZipFile) as exc:
        yield _error(
            path, f"not a TorchScript archive libtorch reads: {exc}", "save the model with torch.jit.save"
        )
        return
    if version > release.torchscript_max_format:
        yield _error(
            path,
            f"TorchScript format {version}, but Triton {release.name}'s libtorch {release.libtorch} "
            f"reads up to {release.torchscript_max_format}",
            "save it with an older torch",
        )
        return
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except RuntimeError as exc:
        yield _error(
            path, f"libtorch cannot load it: {first_line(exc)}", "save the model with torch.jit.save"
        )
        return
    schema = module.forward.schema
    arguments = [a.name for a in schema.arguments[1:]]
    inputs = [t.name for t in config.input]
    if len(arguments) != len(inputs):
        yield _error(
            path,
            f"forward() takes {len(arguments)} inputs {arguments}, the config declares {len(inputs)}",
            "declare one config input per forward() argument",
        )
        return
    yield from _check_binding(path, "input", inputs, input_binding(inputs, arguments), arguments)
    outputs = [t.name for t in config.output]
    yield from _check_binding(path, "output", outputs, output_binding(outputs), None)
    returned = _returned_tensors(schema)
    if returned is not None and returned != len(outputs):
        yield _error(
            path,
            f"forward() returns {returned} tensors, the config declares {len(outputs)} outputs",
            "declare one config output per returned tensor",
        )


def _check_binding(
    path: Path, kind: str, names: list[str], binding: Binding, arguments: list[str] | None
) -> Iterator[Finding]:
    """How libtorch.cc binds the config's tensors, and where that binding goes wrong."""
    if binding is Binding.NAMED_INDEX:
        indices = [named_index(n) for n in names]
        if sorted(i for i in indices if i is not None) != list(range(len(names))):
            yield _error(
                path,
                f"{kind}s {names} are bound {binding.value}, whose indices must be "
                f"0..{len(names) - 1} once each",
                f"rename them <name>__0 .. <name>__{len(names) - 1}",
            )
        return
    if binding is not Binding.POSITION:
        return
    for position, name in enumerate(names):
        index = named_index(name)
        if arguments is not None and name in arguments and arguments.index(name) != position:
            yield _error(
                path,
                f"input {name!r} is bound by position to forward() argument {arguments[position]!r} "
                "(another config input is not an argument name)",
                "name every config input after a forward() argument, in any order",
            )
        elif index is not None and index != position:
            yield _error(
                path,
                f"{kind} {name!r} says index {index} but is bound by position {position} "
                f"(not every {kind} has a <name>__<index> name)",
                f"give every {kind} a <name>__<index> name, or order them as forward() does",
            )
    if arguments is not None and not any(n in arguments for n in names):
        yield _warning(
            path,
            f"inputs {names} are neither forward() arguments {arguments} nor <name>__<index> names: "
            "the pytorch backend binds them by position, with a warning",
            "name the config's inputs after forward()'s arguments",
        )


def _returned_tensors(schema: object) -> int | None:
    """How many tensors forward() returns, from its schema; None when the schema does not say."""
    import torch

    returns = getattr(schema, "returns", [])
    if len(returns) != 1:
        return None
    kind = returns[0].type
    if isinstance(kind, torch.TupleType):
        return len(kind.elements())
    return 1 if isinstance(kind, torch.TensorType) else None


def _check_plan_record(version_dir: Path, artifact: Path, release: TritonRelease) -> Iterator[Finding]:
    recorded = (read_metadata(version_dir) or {}).get("artifact", {})
    built = recorded.get("tensorrt")
    if built is None or release.tensorrt_matches(built):
        return
    if recorded.get("version_compatible") and release.runs_version_compatible(built):
        yield _warning(
            artifact,
            f"a version-compatible plan of TensorRT {built}",
            "start tritonserver with --backend-config=tensorrt,version-compatible=true",
        )
        return
    yield _error(
        artifact,
        f"built by TensorRT {built}; Triton {release.name} ships TensorRT {release.tensorrt} and "
        "loads only plans of that version",
        f"build it again with TensorRT {release.tensorrt} (export --triton-release {release.name})",
    )


def _shared_thread_count(configs: dict[Path, pb.ModelConfig]) -> Iterable[Finding]:
    """The pytorch backend sets INTRA_OP_THREAD_COUNT with at::set_num_threads, for the whole
    server: with different counts, the model loaded last decides for all."""
    counts = {
        path: config.parameters["INTRA_OP_THREAD_COUNT"].string_value
        if "INTRA_OP_THREAD_COUNT" in config.parameters
        else "default"
        for path, config in configs.items()
        if format_of(config) is Format.TORCHSCRIPT
    }
    if len(set(counts.values())) < 2:
        return []
    summary = ", ".join(f"{p.parent.name}={c}" for p, c in sorted(counts.items()))
    return [
        _warning(
            path,
            f"INTRA_OP_THREAD_COUNT differs across TorchScript models ({summary}): the pytorch "
            "backend applies it process-wide, the model loaded last wins",
            "give every TorchScript model the same count (export --intra-op-threads N)",
        )
        for path in sorted(counts)
    ]


def _error(path: Path, problem: str, fix: str) -> Finding:
    return Finding(Severity.ERROR, path, problem, fix)


def _warning(path: Path, problem: str, fix: str) -> Finding:
    return Finding(Severity.WARNING, path, problem, fix)
