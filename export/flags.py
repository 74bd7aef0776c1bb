"""Command-line flags of the export options, declared on the option dataclasses themselves.

A field made with `option(default, help)` is a flag named after it (`opset` -> `--opset`); a field
made with `nested(Options, prefix)` contributes the nested dataclass's flags (`tensorrt.timing_cache`
-> `--tensorrt-timing-cache`). The field default is the flag's default: the CLI shows it and fills
what a user leaves out with it, and `options_argv` writes option objects back as flags, so an
export can record the command that reproduces it.

Values reach `read_options` as the text typed on the command line (booleans as bool, a flag not
given as None), so a bad value is a one-line `UsageError` naming the flag.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tritonstack.errors import UsageError
from tritonstack.formats import DEFAULT_FORMATS, Format
from tritonstack.spec import ModelSpec

T = TypeVar("T")
Options = TypeVar("Options")

_FLAG = "tritonstack.flag"
_HELP = "tritonstack.help"
_NAME = "tritonstack.flag_name"
_METAVAR = "tritonstack.metavar"
_PREFIX = "tritonstack.flag_prefix"


@dataclass(frozen=True)
class Flag:
    """One `--flag VALUE` (or `--flag/--no-flag` for a boolean) and how its value is read and written."""

    name: str
    hint: Any  # the value's type: int, str, Path, bool, an Enum, X | None, tuple[X, ...]
    default: Any
    help: str
    metavar: str | None = None
    parse_text: Callable[[str], Any] | None = None  # instead of parsing by `hint`

    @property
    def dest(self) -> str:
        """The attribute the parsed command line holds this flag's value in."""
        return self.name.removeprefix("--").replace("-", "_")

    @property
    def is_switch(self) -> bool:
        return self.hint is bool

    def field(self) -> Any:
        """A dataclass field whose flag is this one (a flag shared by several option groups)."""
        return dataclasses.field(default=self.default, metadata={_FLAG: self})

    def read(self, values: Mapping[str, Any]) -> Any:
        """The flag's value from the parsed command line, or its default when it was not given."""
        given = values.get(self.dest)
        if given is None:
            return self.default
        if self.is_switch:
            return bool(given)
        if self.parse_text is not None:
            return self.parse_text(given)
        return _parse(self.hint, given, self.name)

    def argv(self, value: Any) -> list[str]:
        """The arguments that give this value; none for None (the flag's "not set")."""
        if self.is_switch:
            return [self.name if value else "--no-" + self.name.removeprefix("--")]
        return [] if value is None else [self.name, _text(value)]

    def shown_metavar(self) -> str | None:
        """How help texts show the value: the declared metavar, or an enum's choices."""
        if self.metavar is None and isinstance(self.hint, type) and issubclass(self.hint, enum.Enum):
            return "{" + ",".join(str(member.value) for member in self.hint) + "}"
        return self.metavar

    def default_text(self) -> str | None:
        """The default as a user would type it, for help texts; None when there is none."""
        if self.is_switch:
            return "on" if self.default else "off"
        return None if self.default is None else _text(self.default)


def option(default: T, help: str, *, name: str | None = None, metavar: str | None = None) -> T:
    """A dataclass field with a default that is also a flag (`--<field-name>` unless `name`)."""
    metadata = {_HELP: help, _NAME: name, _METAVAR: metavar}
    value: T = dataclasses.field(default=default, metadata=metadata)
    return value


def nested(options_type: Callable[[], T], prefix: str = "") -> T:
    """A field holding another option dataclass, whose flags join this one's (names prefixed)."""
    value: T = dataclasses.field(default_factory=options_type, metadata={_PREFIX: prefix})
    return value


def flags_of(options_type: type, prefix: str = "") -> list[Flag]:
    """Every flag of an option dataclass, nested ones included, in field order."""
    flags: list[Flag] = []
    for _, item in _items(options_type, prefix):
        flags += flags_of(item.options_type, item.prefix) if isinstance(item, _Nested) else [item]
    return flags


def read_options(options_type: type[Options], values: Mapping[str, Any], prefix: str = "") -> Options:
    """Build the options from a parsed command line (`vars(args)`); a flag not given takes the
    field's default, and a value that does not parse is a `UsageError` naming the flag."""
    kwargs = {
        name: read_options(item.options_type, values, item.prefix)
        if isinstance(item, _Nested)
        else item.read(values)
        for name, item in _items(options_type, prefix)
    }
    return options_type(**kwargs)


def options_argv(options: object, prefix: str = "") -> list[str]:
    """The flags that rebuild `options` through `read_options`, every field written out (so the
    command keeps its meaning when a default changes)."""
    argv: list[str] = []
    for name, item in _items(type(options), prefix):
        value = getattr(options, name)
        argv += options_argv(value, item.prefix) if isinstance(item, _Nested) else item.argv(value)
    return argv


@dataclass(frozen=True)
class _Nested:
    options_type: type
    prefix: str


def _items(options_type: type, prefix: str) -> Iterator[tuple[str, Flag | _Nested]]:
    """Each field's name with its flag, or with the nested option dataclass it holds."""
    hints = typing.get_type_hints(options_type)
    for f in dataclasses.fields(options_type):
        if _FLAG in f.metadata:
            yield f.name, f.metadata[_FLAG]
        elif _PREFIX in f.metadata:
            yield f.name, _Nested(hints[f.name], prefix + f.metadata[_PREFIX])
        elif _HELP in f.metadata:
            name = f.metadata[_NAME] or "--" + prefix + f.name.replace("_", "-")
            yield f.name, Flag(name, hints[f.name], f.default, f.metadata[_HELP], f.metadata[_METAVAR])
        else:
            raise TypeError(
                f"{options_type.__name__}.{f.name} is declared with neither option() nor nested()"
            )


def _parse(hint: Any, text: str, flag: str) -> Any:
    """`text` as a value of type `hint`; a `UsageError` naming `flag` when it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = (a for a in args if a is not type(None))
        return _parse(inner, text, flag)
    if origin is tuple:
        return tuple(_parse(args[0], part.strip(), flag) for part in text.split(",") if part.strip())
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(text)
        except ValueError as exc:
            choices = ", ".join(str(member.value) for member in hint)
            raise UsageError(f"{flag} {text!r}: choose from {choices}") from exc
    if hint is int:
        try:
            return int(text)
        except ValueError as exc:
            raise UsageError(f"{flag} {text!r}: expected a whole number") from exc
    if hint is Path:
        return Path(text)
    if hint is str:
        return text
    raise TypeError(f"{flag}: no parser for values of type {hint}")


def _text(value: Any) -> str:
    """A value as it is typed on the command line (the inverse of `_parse`)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


# Flags every export takes beside its option dataclasses (`export_to_repository` and `load_model`
# take them as arguments).
FORMATS = Flag(
    "--formats",
    tuple[Format, ...],
    DEFAULT_FORMATS,
    "formats to export, comma-separated",
    metavar=",".join(f.value for f in Format),
    parse_text=lambda text: tuple(Format.parse_list(text)),
)


def _max_batch_size(text: str) -> int:
    """Checked as it is read: `export-all` and `demo` would otherwise fail per model, after work."""
    value: int = _parse(int, text, "--max-batch-size")
    if value < 1:
        raise UsageError(f"--max-batch-size must be at least 1, got {value}")
    return value


MAX_BATCH_SIZE = Flag(
    "--max-batch-size",
    int,
    next(f.default for f in dataclasses.fields(ModelSpec) if f.name == "max_batch_size"),
    "the largest batch Triton may form (config.pbtxt max_batch_size)",
    metavar="N",
    parse_text=_max_batch_size,
)
