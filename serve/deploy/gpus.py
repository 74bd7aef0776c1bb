"""How many GPUs one replica gets, and whether the repository's configs agree with it.

A pod that requests `nvidia.com/gpu: N` sees exactly N GPUs, numbered 0..N-1 inside the container
whichever physical ones the device plugin picked. Each model's `instance_group`s in `config.pbtxt`
say where Triton puts its instances:

- `KIND_GPU` without `gpus`: `count` instances on every GPU the pod sees, so one config uses all N
  (what `export --device gpu --instances k` writes: k per GPU, N*k in all);
- `KIND_GPU` with `gpus: [...]`: `count` on each listed id, and an id >= N fails to load;
- `KIND_AUTO` (or no group: Triton's default): like `KIND_GPU` when the pod has GPUs, else the CPU;
- `KIND_CPU`: on the CPU, leaving the requested GPUs idle; `KIND_MODEL`: the backend decides.

`plan` turns that into each model's placement and refuses what cannot work or wastes the request:
GPU ids beyond N, GPU instances or TensorRT plans on a replica without GPUs, CPU instances on a
replica that requests GPUs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import UsageError
from tritonstack.formats import Format
from tritonstack.spec import CONFIG_NAME, read_config

Kind = pb.ModelInstanceGroup.Kind

CPU = "cpu"
MODEL = "model"  # placed by the backend
_WHERE = {CPU: "on the CPU", MODEL: "where the backend puts them"}


@dataclass(frozen=True)
class Placement:
    """Where one model's instances run in one replica: device ("cpu", "model" or a GPU id) -> count."""

    model: str
    instances: Mapping[str | int, int]

    def describe(self) -> str:
        gpus = {d: n for d, n in self.instances.items() if isinstance(d, int)}
        parts = []
        if gpus and len(set(gpus.values())) == 1 and len(gpus) > 1:
            parts.append(f"{next(iter(gpus.values()))} on each of GPUs {_ids(sorted(gpus))}")
        else:
            parts.extend(f"{n} on GPU {d}" for d, n in sorted(gpus.items()))
        parts.extend(f"{n} {_WHERE[d]}" for d, n in self.instances.items() if isinstance(d, str))
        total = sum(self.instances.values())
        return f"{self.model}: {', '.join(parts)} ({total} instance{'s' if total != 1 else ''})"


def read_configs(repo: Path) -> dict[str, pb.ModelConfig]:
    """Every model's config in a local repository, by model name."""
    if not repo.is_dir():
        raise UsageError(f"--configs {repo}: not a directory; give the local repository you publish")
    configs = {p.parent.name: read_config(p) for p in sorted(repo.glob(f"*/{CONFIG_NAME}"))}
    if not configs:
        raise UsageError(f"--configs {repo}: no <model>/{CONFIG_NAME} in it; give a Triton model repository")
    return configs


def plan(configs: Mapping[str, pb.ModelConfig], gpus: int) -> list[Placement]:
    """Each model's placement on a replica with `gpus` GPUs, or a one-line error naming the model
    and the fix."""
    if gpus < 0:
        raise UsageError(f"--gpus must be 0 or more, got {gpus}")
    return [_placement(name, config, gpus) for name, config in configs.items()]


def _placement(name: str, config: pb.ModelConfig, gpus: int) -> Placement:
    if config.platform == Format.TENSORRT.platform and gpus == 0:
        raise UsageError(f"{name} is a TensorRT plan, which runs only on a GPU: deploy with --gpus 1 or more")
    groups = list(config.instance_group) or [pb.ModelInstanceGroup(count=1, kind=Kind.Value("KIND_AUTO"))]
    instances: Counter[str | int] = Counter()
    for group in groups:
        count = group.count or 1  # Triton's default count
        kind = Kind.Name(group.kind)
        if kind == "KIND_MODEL":
            instances[MODEL] += count
        elif kind == "KIND_CPU" or (kind == "KIND_AUTO" and gpus == 0):
            if kind == "KIND_CPU" and gpus > 0:
                raise UsageError(
                    f"{name} runs on the CPU (KIND_CPU) but --gpus {gpus} gives each replica GPUs: "
                    "export with --device gpu, or deploy with --gpus 0"
                )
            instances[CPU] += count
        elif gpus == 0:
            raise UsageError(
                f"{name} asks for GPU instances (KIND_GPU) but --gpus is 0: deploy with --gpus N, "
                "or export with --device cpu"
            )
        else:
            beyond = sorted(g for g in group.gpus if g >= gpus)
            if beyond:
                raise UsageError(
                    f"{name} places instances on GPU {_ids(beyond)} but a replica with --gpus {gpus} "
                    f"has GPUs {_ids(list(range(gpus)))}: raise --gpus or fix its instance_group gpus"
                )
            for gpu in group.gpus or range(gpus):
                instances[gpu] += count
    return Placement(name, dict(instances))


def _ids(ids: list[int]) -> str:
    """[0, 1, 2, 3] -> "0-3"; [1, 5] -> "1, 5"."""
    if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(map(str, ids))
