"""The `tritonstack` command. Each subcommand fills the same options the Python API takes and
calls it; the project's own errors print as one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tritonstack.errors import TritonstackError

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        code: int = args.handler(args)
        return code
    except TritonstackError as exc:
        print(f"tritonstack {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonstack", description="PyTorch checkpoint -> ONNX/TorchScript -> Triton, measured."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from tritonstack.cli import commands

    for name, (add_arguments, handler, help_text) in commands.SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser
