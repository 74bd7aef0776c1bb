"""Subcommands that manage a model repository: `export-all`. Registered in `commands.SUBCOMMANDS`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_export_all(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", type=Path, help="folder searched for checkpoints (files and checkpoint-N/)")
    p.add_argument("--formats", default="onnx,torchscript", help="comma-separated: onnx, torchscript")
    p.add_argument("--repo", type=Path, default=Path("triton_repo"), help="Triton model repository")
    p.add_argument("--force", action="store_true", help="re-export checkpoints already exported")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--opset", type=int, default=20, help="ONNX opset")
    p.add_argument("--arch", help="architecture for bare state dicts")
    p.add_argument("--preset", help="preset of --arch, for bare state dicts")


def export_all(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from export.batch import export_all, find_checkpoints
    from export.checkpoint import ModelSource
    from export.formats import ExportOptions, Format
    from tritonstack.errors import UsageError

    formats = Format.parse_list(args.formats)
    if not args.checkpoints.is_dir():
        raise UsageError(f"{args.checkpoints} is not a folder: give the folder holding the checkpoints")
    with Progress(transient=True) as progress:
        task = progress.add_task("exporting", total=len(find_checkpoints(args.checkpoints)))
        summary = export_all(
            args.checkpoints,
            formats,
            args.repo,
            source=ModelSource(arch=args.arch, preset=args.preset),
            options=ExportOptions(opset=args.opset),
            max_batch_size=args.max_batch_size,
            force=args.force,
            on_item=lambda path: progress.update(task, advance=1, description=path.name),
        )
    for path, results in summary.converted:
        versions = ", ".join(f"{r.model_name} v{r.version}" for r in results)
        print(f"converted {path}: {versions}")
    for path, reason in summary.skipped:
        print(f"skipped   {path}: {reason}")
    for path, reason in summary.failed:
        print(f"failed    {path}: {reason}")
    print(
        f"{len(summary.converted)} converted, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed, {summary.total} total"
    )
    return 1 if summary.failed else 0
