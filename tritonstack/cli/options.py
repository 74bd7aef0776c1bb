"""The flags `export`, `export-all` and `demo` share, made from the option dataclasses the Python
API takes (`tritonstack.export.flags` declares them on the fields), and read back into them.

Each flag's default is its field's default: argparse keeps None for a flag left out, and
`read_options` fills in the field default, so the help text and the API never disagree.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack.export.deployment import DeploymentOptions
from tritonstack.export.flags import FORMATS, MAX_BATCH_SIZE, Flag, flags_of, nested, option, read_options
from tritonstack.export.formats import ExportOptions
from tritonstack.formats import Format

if TYPE_CHECKING:
    from tritonstack.export.checkpoint import ModelSource


def export_flags() -> list[Flag]:
    """The option group every export command takes: formats, max batch size, exporter and
    deployment options."""
    return [FORMATS, MAX_BATCH_SIZE, *flags_of(ExportOptions), *flags_of(DeploymentOptions)]


@dataclass(frozen=True)
class ExportGroup:
    """The export option group as the API takes it."""

    formats: tuple[Format, ...]
    max_batch_size: int
    options: ExportOptions
    deployment: DeploymentOptions


def read_export_group(args: argparse.Namespace) -> ExportGroup:
    """The group, checked before any work: what Triton would refuse (a plan on CPU instances,
    say) is a usage error before a checkpoint is read."""
    values = vars(args)
    group = ExportGroup(
        FORMATS.read(values),
        MAX_BATCH_SIZE.read(values),
        read_options(ExportOptions, values),
        read_options(DeploymentOptions, values),
    )
    group.deployment.check(group.formats)
    return group


@dataclass(frozen=True)
class DemoOptions:
    """What `run_demo` takes; its last four fields are the export option group."""

    preset: str = option("default", "model sizes: default (seed registry) or tiny", metavar="NAME")
    steps: int = option(100, "training steps per model", metavar="N")
    batch_size: int = option(512, "training batch size", metavar="N")
    checkpoints: Path = option(Path("checkpoints"), "folder the trained checkpoints are written to")
    repo: Path = option(Path("triton_repo"), "Triton model repository to export into")
    external: str | None = option(
        None, "check a running Triton serving --repo instead of starting one", metavar="HOST:PORT"
    )
    formats: tuple[Format, ...] = FORMATS.field()
    max_batch_size: int = MAX_BATCH_SIZE.field()
    export: ExportOptions = nested(ExportOptions)
    deployment: DeploymentOptions = nested(DeploymentOptions)


def add_flags(parser: argparse.ArgumentParser, flags: Iterable[Flag]) -> None:
    """Add each flag with its default in the help; a flag left out parses as None."""
    for flag in flags:
        default = flag.default_text()
        help_text = flag.help + (f" (default: {default})" if default is not None else "")
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": None, "help": help_text.replace("%", "%%")}
        if flag.is_switch:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = flag.shown_metavar()
        parser.add_argument(flag.name, **kwargs)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """How to rebuild a model its checkpoint does not describe (`ModelSource`)."""
    parser.add_argument("--arch", help="architecture for a bare state dict, or package.module:callable")
    parser.add_argument("--preset", help="preset of a built-in architecture, for a bare state dict")
    parser.add_argument("--config", help="config as inline JSON or a JSON file; kwargs for a custom callable")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DTYPE:DIMS[:HIGH]",
        help="an input of a custom model, e.g. ids:int64:4:1000 (repeatable)",
    )
    parser.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAME",
        help="an output of a custom model (repeatable)",
    )
    parser.add_argument(
        "--allow-partial", action="store_true", help="load the weights that fit, warn about the rest"
    )


def read_model_source(args: argparse.Namespace) -> ModelSource:
    from tritonstack.cli.config_option import parse_config
    from tritonstack.export.checkpoint import ModelSource
    from tritonstack.export.custom import CustomArch, parse_input

    config: Mapping[str, Any] | None = parse_config(args.config)
    if args.arch and ":" in args.arch:
        custom = CustomArch(args.arch, tuple(parse_input(t) for t in args.input), tuple(args.output))
        return ModelSource(config=config, custom=custom, allow_partial=args.allow_partial)
    return ModelSource(arch=args.arch, preset=args.preset, config=config, allow_partial=args.allow_partial)


def add_repo_flag(p: argparse.ArgumentParser) -> None:
    """`--repo` of the commands that write or read a repository: a folder or `s3://BUCKET/PREFIX`
    (kept as text: a Path would fold `s3://` into a local folder named `s3:`)."""
    p.add_argument(
        "--repo",
        default="triton_repo",
        help="Triton model repository: a folder, or s3://BUCKET/PREFIX (endpoint and credentials from "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... or AWS_PROFILE)",
    )
