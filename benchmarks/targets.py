"""Which served models a run measures, and what their configs say about each: tensors, version,
format, device and threads, wherever the model came from.

Everything comes from `config.pbtxt` (a local repository) or from the server's model-config RPC
(`--url` alone): no checkpoint or architecture is needed to benchmark a model. `--models` takes
repository names (`conv_onnx`) or base names (`conv`: every format of it). The version measured
is the one our clients send unversioned requests to: the production version `models promote`
records, else the highest one Triton loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import UsageError
from tritonstack.export.registry import client_default_version
from tritonstack.export.repository import list_versions
from tritonstack.formats import Format
from tritonstack.spec import (
    CONFIG_NAME,
    Array,
    ModelSpec,
    TensorSpec,
    production_version,
    read_config,
    string_parameters,
)

# Triton's backend name for each format, as `backend` reads once Triton has filled it in.
_BACKENDS = {Format.ONNX: "onnxruntime", Format.TORCHSCRIPT: "pytorch", Format.TENSORRT: "tensorrt"}


@dataclass(frozen=True)
class BenchTarget:
    """One served model version: its repository name, the base name it shares with its other
    formats, its config and spec, and the artifact on disk (None: only the server has it)."""

    name: str
    version: int
    config: pb.ModelConfig
    artifact: Path | None

    @property
    def format(self) -> Format | None:
        return format_of(self.config)

    @property
    def base(self) -> str:
        """`conv` for `conv_onnx`; the whole name when it carries no format suffix."""
        fmt = self.format
        suffix = f"_{fmt.value}" if fmt is not None else ""
        return self.name.removesuffix(suffix) if suffix and self.name.endswith(suffix) else self.name

    @property
    def format_name(self) -> str:
        """The format's name, or the backend's for models no format describes."""
        fmt = self.format
        return fmt.value if fmt is not None else self.config.backend or self.config.platform

    @property
    def spec(self) -> ModelSpec:
        """The tensors as requests carry them (`ModelSpec.from_config`)."""
        try:
            return ModelSpec.from_config(self.config)
        except ValueError as exc:
            raise UsageError(f"cannot benchmark {self.name}: {exc}") from exc

    @property
    def artifact_spec(self) -> ModelSpec:
        """The tensors as the artifact takes them: inputs with the config's `reshape` applied (a
        scalar per row travels as [1] and reaches the model as [])."""
        spec, shapes = self.spec, _reshapes(self.config)
        inputs = tuple(TensorSpec(t.name, t.dtype, shapes.get(t.name, t.shape), t.high) for t in spec.inputs)
        return ModelSpec(spec.name, inputs, spec.outputs, spec.max_batch_size)

    def artifact_feeds(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """A request's arrays as the artifact takes them (Triton applies `reshape` before the backend)."""
        shapes = _reshapes(self.config)
        return {
            name: a.reshape(a.shape[0], *shapes[name]) if name in shapes else a for name, a in feeds.items()
        }

    @property
    def device(self) -> str:
        """`cuda` when the config puts its instances on a GPU, else `cpu`."""
        on_gpu = any(g.kind == pb.ModelInstanceGroup.KIND_GPU for g in self.config.instance_group)
        return "cuda" if on_gpu else "cpu"

    @property
    def threads(self) -> int:
        """The intra-op threads the config gives each instance (0: the runtime's default)."""
        fmt = self.format
        if fmt is None or fmt.thread_parameters is None:
            return 0
        return int(string_parameters(self.config).get(fmt.thread_parameters[0], "") or "0")

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "model": self.base,
            "format": self.format_name,
            "version": self.version,
            "platform": self.config.platform,
            "backend": self.config.backend,
            "max_batch_size": self.config.max_batch_size,
            "device": self.device,
            "threads": self.threads,
            "artifact": str(self.artifact) if self.artifact is not None else None,
        }


def format_of(config: pb.ModelConfig) -> Format | None:
    """The artifact's format, from `platform` or `backend`; None for any other backend."""
    for fmt, backend in _BACKENDS.items():
        if config.platform == fmt.platform or config.backend == backend:
            return fmt
    return None


def _reshapes(config: pb.ModelConfig) -> dict[str, tuple[int, ...]]:
    return {i.name: tuple(i.reshape.shape) for i in config.input if i.HasField("reshape")}


def select(names: Sequence[str], available: Sequence[str], where: str) -> list[str]:
    """Repository names for `names` (each a repository name, or a base name standing for every
    `<name>_<format>` there is); every model when `names` is empty."""
    if not available:
        raise UsageError(
            f"no model in {where}: run `tritonstack demo` or `tritonstack export` first, "
            "or pass --repo DIR / --url HOST:PORT"
        )
    if not names:
        return sorted(available)
    chosen: list[str] = []
    for name in names:
        matches = [name] if name in available else [f"{name}_{f.value}" for f in Format]
        found = [m for m in matches if m in available]
        if not found:
            raise UsageError(
                f"no model {name!r} in {where}: choose from {', '.join(sorted(available))} "
                "(a base name such as dlrm selects every format of it)"
            )
        chosen += [m for m in found if m not in chosen]
    return chosen


def check_batch_sizes(targets: Sequence[BenchTarget], sizes: Sequence[int], option: str) -> None:
    """Every batch size within every target's max_batch_size, else one line naming the fix."""
    for target in targets:
        over = [b for b in sizes if b > target.config.max_batch_size]
        if over:
            raise UsageError(
                f"{option}: {','.join(map(str, over))} over {target.name}'s max_batch_size "
                f"{target.config.max_batch_size}: drop them, or export it with a larger --max-batch-size"
            )


def local_targets(repo: Path, names: Sequence[str]) -> list[BenchTarget]:
    """The selected models of a local repository, each at the version our clients send to."""
    available = [p.parent.name for p in repo.glob(f"*/{CONFIG_NAME}")] if repo.is_dir() else []
    targets = []
    for name in select(names, available, str(repo)):
        config = read_config(repo / name / CONFIG_NAME)
        version = _local_version(repo, name)
        fmt = format_of(config)
        filename = config.default_model_filename or (fmt.filename if fmt is not None else "")
        artifact = repo / name / str(version) / filename if filename else None
        targets.append(BenchTarget(name, version, config, artifact))
    return targets


def _local_version(repo: Path, name: str) -> int:
    """The version our clients send unversioned requests to (`export.registry`), which must exist."""
    version = client_default_version(repo, name)
    if version is None:
        raise UsageError(f"model {name} has no version in {repo / name}: export one first")
    if version not in list_versions(repo, name):
        raise UsageError(f"{name}: its production version {version} is not in {repo / name}")
    return version


async def remote_targets(
    client: grpcaio.InferenceServerClient, names: Sequence[str], url: str
) -> list[BenchTarget]:
    """The selected models of the server at `url`, configs from its model-config RPC, each at the
    version our clients send to (production when recorded, else the highest ready one)."""
    index = (await client.get_model_repository_index()).models
    ready: dict[str, list[int]] = {}
    for entry in index:
        if entry.state == "READY" and entry.version.isdigit():
            ready.setdefault(entry.name, []).append(int(entry.version))
    targets = []
    for name in select(names, list(ready), f"the server at {url}"):
        production = production_version((await client.get_model_config(name)).config)
        if production is not None and production not in ready[name]:
            raise UsageError(f"{name}: production version {production} is not loaded on the server at {url}")
        version = production if production is not None else max(ready[name])
        config = (await client.get_model_config(name, str(version))).config
        targets.append(BenchTarget(name, version, config, None))
    return targets
