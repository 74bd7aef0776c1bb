"""The `tritonstack` command. Each subcommand fills the same options the Python API takes and
calls it. The boundary is here: a user error (the project's own errors, and the operating
system's refusals of a path) prints as one line on stderr and exits 2; an unexpected error is a
bug and prints its traceback, exit 1. `--debug` (or `TRITONSTACK_DEBUG=1`) prints the full
chained traceback of a user error too."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from tritonstack.errors import TritonstackError

EXIT_USAGE = 2
EXIT_BUG = 1
DEBUG_ENV = "TRITONSTACK_DEBUG"
_DEBUG_HELP = f"on an error, print the full chained traceback (also: {DEBUG_ENV}=1)"
_EPILOG = (
    "A user error prints one line on stderr and exits 2; --debug (or TRITONSTACK_DEBUG=1) prints its "
    "full traceback, causes included. An unexpected error is a bug: it prints a traceback and exits 1."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:  # errors handled on the way (a failed format, a skipped checkpoint) log their tracebacks
        logging.getLogger("tritonstack").setLevel(logging.DEBUG)
    try:
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_user_error(exc):
            traceback.print_exc()
            print(
                f"tritonstack {args.command}: unexpected error, a bug in tritonstack: please report it "
                "with the traceback above",
                file=sys.stderr,
            )
            return EXIT_BUG
        if debug:
            traceback.print_exception(exc)
        print(f"tritonstack {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _is_user_error(exc: Exception) -> bool:
    """The project's own errors, and the operating system refusing a path the user gave (a
    missing folder, no permission, a file where a folder should be)."""
    return isinstance(exc, TritonstackError) or (isinstance(exc, OSError) and exc.filename is not None)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, OSError):
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        return f"{paths}: {exc.strerror or type(exc).__name__}"
    return str(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonstack",
        description="PyTorch checkpoint -> ONNX/TorchScript -> Triton, measured.",
        epilog=_EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from tritonstack.cli import commands

    for name, (add_arguments, handler, help_text) in commands.SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG)
        add_arguments(p)
        p.set_defaults(handler=handler)
    _accept_debug_after_subcommands(parser)
    return parser


def _accept_debug_after_subcommands(parser: argparse.ArgumentParser) -> None:
    """`--debug` also after a subcommand (`tritonstack models promote ... --debug`), where users
    type it; SUPPRESS leaves a `--debug` given before the subcommand in place."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
                _accept_debug_after_subcommands(sub)
