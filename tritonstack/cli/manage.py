"""Subcommands that manage a model repository: `export-all` and `models` (list, promote, prune).
Registered in `commands.SUBCOMMANDS`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tritonstack.cli import options as cli_options


def add_export_all(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", type=Path, help="folder searched for checkpoints (files and checkpoint-N/)")
    cli_options.add_repo_flag(p)
    p.add_argument("--force", action="store_true", help="re-export checkpoints already exported")
    cli_options.add_source_flags(p)
    cli_options.add_flags(p, cli_options.export_flags())


def export_all(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from tritonstack.errors import UsageError
    from tritonstack.export.batch import export_all, find_checkpoints
    from tritonstack.export.object_store import open_repository

    group = cli_options.read_export_group(args)
    source = cli_options.read_model_source(args)
    if not args.checkpoints.is_dir():
        raise UsageError(f"{args.checkpoints} is not a folder: give the folder holding the checkpoints")
    with open_repository(args.repo, write=True) as repo, Progress(transient=True) as progress:
        task = progress.add_task("exporting", total=len(find_checkpoints(args.checkpoints)))
        summary = export_all(
            args.checkpoints,
            group.formats,
            repo,
            source=source,
            options=group.options,
            deployment=group.deployment,
            max_batch_size=group.max_batch_size,
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


def add_models(p: argparse.ArgumentParser) -> None:
    cli_options.add_repo_flag(p)
    p.add_argument("--json", action="store_true", help="print the versions as JSON")
    p.set_defaults(action=_list_models)
    actions = p.add_subparsers(dest="models_action", metavar="ACTION")
    promote = actions.add_parser("promote", help="set a version's status and what Triton loads")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--status", required=True, choices=["production", "staging", "ab-test"])
    promote.set_defaults(action=_promote)
    prune = actions.add_parser("prune", help="remove old versions (never one with a status)")
    prune.add_argument("name")
    prune.add_argument("--keep", type=int, required=True, help="newest versions to keep")
    prune.add_argument("--yes", action="store_true", help="remove them (default: only list them)")
    prune.set_defaults(action=_prune)
    for sub in (promote, prune):
        sub.add_argument("--repo", default=argparse.SUPPRESS)


def models(args: argparse.Namespace) -> int:
    from tritonstack.errors import UsageError
    from tritonstack.export.object_store import open_repository
    from tritonstack.export.state import STATE_NAME, state_problem

    shown = str(args.repo).rstrip("/")
    # Listing and a dry-run prune change nothing: they publish nothing and take no lock.
    write = args.action is _promote or (args.action is _prune and args.yes)
    # Writers refuse an unreadable tritonstack.json before any work (open_repository); readers
    # go on, each version's record shown unreadable, and say so once.
    with open_repository(args.repo, write=write) as repo:
        if not repo.is_dir():
            raise UsageError(f"no model repository at {args.repo}: pass --repo")
        problem = state_problem(repo)
        if problem is not None:
            print(
                f"warning: {shown}/{STATE_NAME} {problem}: every version's record is unreadable (none is "
                "pruned); restore it from a backup, or move it aside to start a fresh one",
                file=sys.stderr,
            )
        code: int = args.action(argparse.Namespace(**{**vars(args), "repo": repo, "shown_as": shown}))
    return code


def _list_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tritonstack.export.registry import list_registry

    # An object store's versions are listed from a local mirror: notes name the store instead.
    rows = [
        dataclasses.replace(r, notes=r.notes.replace(str(args.repo), args.shown_as))
        for r in list_registry(args.repo)
    ]
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return 0
    table = Table("Model", "Version", "Format", "Size", "Latency", "Status", "Notes")
    for r in rows:
        latency = "—" if r.latency_ms is None else f"{r.latency_ms:.2f} ms"
        size = f"{r.size_bytes / 1e6:.2f} MB"
        table.add_row(r.model, str(r.version), r.format, size, latency, r.status or "—", r.notes)
    Console().print(table)
    return 0


def _promote(args: argparse.Namespace) -> int:
    from tritonstack.export.registry import client_default_version, default_version, promote, served_versions

    promote(args.repo, args.name, args.version, args.status)
    triton, ours = default_version(args.repo, args.name), client_default_version(args.repo, args.name)
    reach = (
        f"v{ours}"
        if ours == triton
        else f"v{ours} from tritonstack clients, v{triton} from other Triton clients (the highest loaded)"
    )
    print(
        f"{args.name} v{args.version}: {args.status}; Triton loads versions "
        f"{served_versions(args.repo, args.name)}, unversioned requests go to {reach}"
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from tritonstack.export.registry import prune_plan, remove_version

    plan = prune_plan(args.repo, args.name, args.keep)
    for version in plan:
        if args.yes:
            remove_version(args.repo, args.name, version)
        print(f"{'removed' if args.yes else 'would remove'} {args.name} v{version}")
    if plan and not args.yes:
        print("dry run: pass --yes to remove them")
    return 0
