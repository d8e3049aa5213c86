"""The ``speechlab`` command.  Each subcommand lives in its own module exposing ``register(subparsers)``;
the module is imported only to build the parser, and heavy libraries load only when a command runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that each define ``register(subparsers: argparse._SubParsersAction) -> None``; the parser they add
# sets ``func`` (``Callable[[argparse.Namespace], int]``) as its default.
COMMAND_MODULES: tuple[str, ...] = (
    "pytest_speechlab.commands.convert",
    "pytest_speechlab.commands.validate",
    "pytest_speechlab.commands.serve",
    "pytest_speechlab.commands.loadcheck",
    "pytest_speechlab.commands.records",
    "pytest_speechlab.commands.check",
    "pytest_speechlab.commands.ab",
    "pytest_speechlab.commands.scorecard",
    "pytest_speechlab.commands.capability",
    "pytest_speechlab.commands.init",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="speechlab", description="pytest-speechlab tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not shipped in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``speechlab`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
