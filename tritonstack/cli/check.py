"""`tritonstack check-repo REPO [--triton-release YY.MM]`: lint a model repository against what
the native backends of a Triton release load. One line per finding (file, problem, fix) on
stdout, a summary on stderr; exit 0 without errors (warnings alone pass), 1 with errors, 2 for a
usage error (no such repository, an unknown release), as linters do; a crash of the checker
itself is a bug and prints its traceback (the CLI's rule)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tritonstack.releases import DEFAULT_RELEASE, RELEASES

EXIT_FINDINGS = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", type=Path, help="the model repository (the folder holding model folders)")
    p.add_argument(
        "--triton-release",
        default=DEFAULT_RELEASE,
        metavar="YY.MM",
        help=f"the NVIDIA Triton release to check against: {', '.join(RELEASES)} "
        f"(default: {DEFAULT_RELEASE})",
    )


def handler(args: argparse.Namespace) -> int:
    from tritonstack.export.check_repo import Severity, check_repository
    from tritonstack.releases import triton_release

    release = triton_release(args.triton_release)
    findings = check_repository(args.repo, release)
    for finding in findings:
        print(finding)
    errors = sum(f.severity is Severity.ERROR for f in findings)
    print(
        f"{args.repo}: {errors} errors, {len(findings) - errors} warnings for Triton {release.name}",
        file=sys.stderr,
    )
    return EXIT_FINDINGS if errors else 0
