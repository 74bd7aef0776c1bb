"""The base of every architecture config: JSON round-trip and field checks shared by all."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from tritonstack.errors import InvalidArgument

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Frozen config whose `int` fields are positive ints, `tuple[int, ...]` fields tuples of
    positive ints and `bool` fields bools; subclasses add their own checks after these. A field
    that fails them raises `InvalidArgument` (a `ValueError`)."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name, hint in typing.get_type_hints(type(self)).items():
            value = getattr(self, name)
            if hint is int and not _is_positive_int(value):
                raise InvalidArgument(f"{owner}.{name} must be a positive int, got {value!r}")
            if hint == tuple[int, ...] and not (
                isinstance(value, tuple) and all(_is_positive_int(v) for v in value)
            ):
                raise InvalidArgument(f"{owner}.{name} must be a tuple of positive ints, got {value!r}")
            if hint is bool and not isinstance(value, bool):
                raise InvalidArgument(f"{owner}.{name} must be a bool, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields: tuples become lists."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """The config from `to_dict()`'s output (or parsed JSON); unknown or missing keys raise."""
        if not isinstance(d, Mapping):
            raise InvalidArgument(f"{cls.__name__}: expected a JSON object of fields, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InvalidArgument(f"{cls.__name__}: unknown keys {unknown}; valid keys are {known}")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in d]
        if missing:
            raise InvalidArgument(f"{cls.__name__}: missing keys {missing}; valid keys are {known}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def require(condition: bool, message: str) -> None:
    """Raise `InvalidArgument(message)` unless `condition` holds: one-line checks in `__post_init__`."""
    if not condition:
        raise InvalidArgument(message)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value
