"""The built-in architectures by name: config type, presets, model, tensor spec, data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torch import nn

from tritonstack.errors import UsageError
from tritonstack.recsys import dcn_v2, dlrm, two_tower
from tritonstack.recsys.config import Config
from tritonstack.recsys.ctr import ctr_inputs
from tritonstack.recsys.data import CtrTeacher, PairTeacher, Teacher
from tritonstack.spec import DEFAULT_MAX_BATCH_SIZE, ModelSpec, TensorSpec

C = TypeVar("C", bound=Config)


@dataclass(frozen=True)
class Architecture(Generic[C]):
    """`output` is the single output's name; `logits` says whether it is a logit (else a
    probability). `teacher(config, seed)` makes the synthetic training data."""

    name: str
    config_type: type[C]
    presets: Mapping[str, C]
    model: Callable[[C], nn.Module]
    inputs: Callable[[C], tuple[TensorSpec, ...]]
    output: str
    logits: bool
    teacher: Callable[[C, int], Teacher]

    def preset(self, name: str) -> C:
        if name not in self.presets:
            raise UsageError(f"{self.name} has no preset {name!r}: choose one of {sorted(self.presets)}")
        return self.presets[name]

    def config(self, fields: Mapping[str, Any] | None, preset: str | None = None) -> C:
        """The config from `fields` (parsed JSON: `--config`, or a checkpoint's) when given, else
        the named preset; bad fields raise `InvalidArgument`."""
        return self.preset(preset or "") if fields is None else self.config_type.from_dict(fields)

    def build(self, config: Config) -> nn.Module:
        return self.model(self._checked(config))

    def spec(
        self, config: Config, model_name: str | None = None, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    ) -> ModelSpec:
        return ModelSpec(
            model_name or self.name,
            self.inputs(self._checked(config)),
            (TensorSpec(self.output, "float32", (1,)),),
            max_batch_size,
        )

    def _checked(self, config: Config) -> C:
        if not isinstance(config, self.config_type):
            raise UsageError(f"{self.name} needs a {self.config_type.__name__}, got {type(config).__name__}")
        return config


def _two_tower_inputs(config: two_tower.TwoTowerConfig) -> tuple[TensorSpec, ...]:
    users, items = config.user_vocab_sizes, config.item_vocab_sizes
    return (
        TensorSpec("user_features", "int64", (len(users),), high=users),
        TensorSpec("item_features", "int64", (len(items),), high=items),
    )


_REGISTRY: dict[str, Architecture[Any]] = {
    a.name: a
    for a in (
        Architecture(
            "two_tower",
            two_tower.TwoTowerConfig,
            two_tower.PRESETS,
            two_tower.TwoTower,
            _two_tower_inputs,
            output="score",
            logits=True,
            teacher=PairTeacher,
        ),
        Architecture(
            "dlrm",
            dlrm.DLRMConfig,
            dlrm.PRESETS,
            dlrm.DLRM,
            ctr_inputs,
            output="probability",
            logits=False,
            teacher=CtrTeacher,
        ),
        Architecture(
            "dcn_v2",
            dcn_v2.DCNv2Config,
            dcn_v2.PRESETS,
            dcn_v2.DCNv2,
            ctr_inputs,
            output="probability",
            logits=False,
            teacher=CtrTeacher,
        ),
    )
}

ARCHITECTURES: tuple[str, ...] = tuple(_REGISTRY)


def get_architecture(name: str) -> Architecture[Any]:
    if name not in _REGISTRY:
        raise UsageError(f"unknown architecture {name!r}: choose one of {list(ARCHITECTURES)}")
    return _REGISTRY[name]


def build_from_dict(arch_name: str, config_dict: Mapping[str, Any]) -> tuple[nn.Module, ModelSpec]:
    """The model and its spec from a JSON-style config (bad fields raise `InvalidArgument`, a
    `ValueError`)."""
    arch = get_architecture(arch_name)
    config = arch.config(config_dict)
    return arch.build(config), arch.spec(config)
