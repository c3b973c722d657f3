"""How a command group adds its command to the `rgw-inference` parser (see cli/main.py)."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(
    groups: Any, name: str, help: str, description: str | None, **options: Any
) -> argparse.ArgumentParser:
    """The parser of one command (or command group) under `rgw-inference`: `help` is its line in
    `rgw-inference --help`; `description` (usually the module's docstring) keeps its line breaks
    and indented examples as written."""
    parser: argparse.ArgumentParser = groups.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **options,
    )
    return parser
