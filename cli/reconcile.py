"""`reconcile`: post a synthetic ObjectCreated event for every object with no result record.

The work is `source.reconcile` (it ships in the source's image, where the CronJob runs it as
`python -m source.reconcile`); this module only puts it on the `rgw-inference` command line.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.commands import add_command


def run(args: argparse.Namespace) -> int:
    # Imported here: boto3 and httpx are not worth loading for every other command.
    from source.reconcile import run as reconcile

    return reconcile(args)


HELP = "send one ObjectCreated event per object whose current version has no result"


def register(groups: Any) -> None:
    """Add the `reconcile` command to the top-level CLI."""
    from source.reconcile import __doc__ as description
    from source.reconcile import add_arguments

    parser = add_command(groups, "reconcile", HELP, description)
    add_arguments(parser)
    parser.set_defaults(run=run)
