"""The project's command line: `python -m cli GROUP COMMAND ...` (installed as
`rgw-inference`).

Each command group lives in its own module that exposes `register(subparsers)`; it adds its
parser and sets `run` (a function taking the parsed arguments and returning an exit code) as the
parser default. To add a group, write the module and list it in COMMAND_GROUPS.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

COMMAND_GROUPS: tuple[str, ...] = (
    "cli.notifications",
    "cli.local",
    "cli.config_table",
    "cli.new_function",
    "cli.check_cluster",
    "cli.reconcile",
)

Runner = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rgw-inference",
        description="Tools for the RGW -> Knative inference pipeline.",
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for module_name in COMMAND_GROUPS:
        importlib.import_module(module_name).register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Runner = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
