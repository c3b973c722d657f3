"""`config`: print every environment variable the project reads, as the README's Markdown table.

Each program declares its variables with `common.env.env_var` in the module whose settings read
them; this command imports those modules, so one registry documents them all, grouped as
declared. `make docs` (scripts/render_config_table.py) writes the same table into README.md, and a
unit test fails when the README's copy is stale.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from cli.commands import add_command
from common.env import REGISTRY, EnvVar

FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"


def function_settings_modules() -> tuple[ModuleType, ...]:
    """A function's own variables live in `functions/<name>/settings.py`, beside the function:
    found here, so that a new function's variables reach the table with no edit in this file."""
    return tuple(
        importlib.import_module(f"functions.{path.parent.name}.settings")
        for path in sorted(FUNCTIONS.glob("*/settings.py"))
    )


def settings_modules() -> tuple[ModuleType, ...]:
    """The modules that declare variables, in the order the README lists them: the functions'
    runtime first, the model server last. Imported here, not at the top, so that the rest of
    the CLI does not pay for gRPC, boto3 and FastAPI."""
    import common.classifier
    import common.runtime
    import common.s3
    import common.tfserving
    import common.vision
    import modelserver.settings
    import results.settings
    import source.settings

    return (
        common.runtime,
        common.s3,
        common.classifier,
        common.tfserving,
        common.vision,
        *function_settings_modules(),
        source.settings,
        results.settings,
        modelserver.settings,
    )


def load_all_settings_modules() -> list[EnvVar]:
    """Every declared variable, module by module, each module's in declaration order (not import
    order, which differs between a CLI run and a test session)."""
    ordered: list[EnvVar] = []
    for module in settings_modules():
        declared = {id(var) for var in vars(module).values() if isinstance(var, EnvVar)}
        ordered += [var for var in REGISTRY if id(var) in declared and var not in ordered]
    return ordered


def describe_markdown(variables: list[EnvVar]) -> str:
    """The README's table of variables, one table per group."""
    rows: list[str] = []
    group = None
    for var in variables:
        if var.group != group:
            group = var.group
            rows += [
                "",
                f"**{group}**",
                "",
                "| variable | default | meaning |",
                "| --- | --- | --- |",
            ]
        names = " / ".join(f"`{n}`" for n in var.names)
        if var.secret:
            names += " (or `*_FILE`)"
        default = f"`{var.default}`" if var.default is not None else ""
        rows.append(f"| {names} | {default} | {var.help.replace('|', '/')} |")
    return "\n".join(rows).strip() + "\n"


def config_table() -> str:
    return describe_markdown(load_all_settings_modules())


def run(_: argparse.Namespace) -> int:
    sys.stdout.write(config_table())
    return 0


HELP = "print every environment variable the programs read (the README's table)"


def register(groups: Any) -> None:
    """Add the `config` command to the top-level CLI."""
    parser = add_command(groups, "config", HELP, __doc__)
    parser.set_defaults(run=run)
