"""`notifications` commands: set up, show and remove RGW topics and bucket notifications.

Connection settings come from the environment (see common/s3.py: AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and their aliases); scripts/rgw-up.sh
prints exactly these. Results are printed as JSON on stdout, errors as one line on stderr.

With SOURCE_PUSH_SECRET (or SOURCE_PUSH_SECRET_FILE) set, `setup` appends that secret to an
http(s) endpoint's path, the same secret the source's HTTP adapter checks (source.push_auth), and
`show` prints *** in its place. The secret is never taken from the command line (it would show in
the process list) and never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError

from cli.commands import add_command
from common.env import ConfigError, Env
from common.s3 import S3Settings, make_s3_client, make_sns_client
from source.notification_specs import (
    AMQP_ACK_LEVELS,
    OBJECT_EVENTS,
    NotificationSpec,
    SpecError,
    TopicSpec,
)
from source.notifications import NotificationError, SetupResult
from source.notifications import remove as remove_notifications
from source.notifications import setup as setup_notifications
from source.notifications import show as show_notifications
from source.push_auth import PushAuth, applies_to

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

    ClientAction = Callable[[S3Client, SNSClient], None]

EXIT_USAGE = 2
EXIT_FAILED = 1


HELP = "RGW topics and bucket notifications"

SETUP_HELP = "create or update a topic and the bucket notification that feeds it"
SETUP_DESCRIPTION = """Create or update topic TOPIC (push endpoint and options) and the bucket's
notification with Id ID (default: the topic name) so that they match the flags. Other
notifications on the bucket are kept. Running it twice gives the same state."""
REMOVE_HELP = "remove bucket notifications (and a topic)"
REMOVE_DESCRIPTION = """Remove notifications from the bucket: with --topic, those publishing to
TOPIC and then the topic itself (unless --keep-topic); with --id, those Ids; with neither, all
of them. Removing what is not there is not an error."""


def register(groups: Any) -> None:
    """Add the `notifications` group to the top-level CLI."""
    group = add_command(groups, "notifications", HELP, __doc__)
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    setup = add_command(commands, "setup", SETUP_HELP, SETUP_DESCRIPTION)
    setup.add_argument("--bucket", required=True, help="bucket whose events to publish")
    setup.add_argument("--topic", required=True, help="topic name (also the AMQP routing key)")
    setup.add_argument(
        "--endpoint",
        required=True,
        help="push endpoint: http(s)://host:port/path or amqp://host:port "
        "(no user:password@ over http/amqp: RGW refuses it)",
    )
    setup.add_argument("--id", help="notification Id on the bucket (default: the topic name)")
    setup.add_argument(
        "--persistent",
        action="store_true",
        help="queue events in RGW and retry until delivered (asynchronous); default: push "
        "within the S3 request and drop the event if the endpoint fails",
    )
    setup.add_argument(
        "--events",
        nargs="+",
        default=["s3:ObjectCreated:*"],
        metavar="EVENT",
        help=f"events to publish (default s3:ObjectCreated:*); one of: "
        f"{', '.join(sorted(OBJECT_EVENTS))}",
    )
    setup.add_argument("--prefix", help="only keys starting with PREFIX")
    setup.add_argument(
        "--suffix",
        nargs="+",
        action="extend",
        default=[],
        metavar="SUFFIX",
        help="only keys ending with one of these (case-sensitive); several become an RGW "
        "regex filter",
    )
    setup.add_argument(
        "--amqp-exchange",
        help="AMQP exchange to publish to (required for amqp endpoints; it must exist, type topic)",
    )
    setup.add_argument(
        "--amqp-ack-level",
        choices=AMQP_ACK_LEVELS,
        help="when RGW counts an AMQP message as delivered (default broker)",
    )
    setup.add_argument(
        "--opaque-data", default="", help="text copied into every record's opaqueData"
    )
    setup.add_argument(
        "--cloudevents",
        action="store_true",
        help="ask RGW to push CloudEvents (honoured by Ceph 18+; 16.2 pushes plain S3 records)",
    )
    setup.add_argument(
        "--no-verify-ssl",
        action="store_true",
        help="do not check the TLS certificate of an https/amqps endpoint",
    )
    setup.add_argument(
        "--without-push-secret",
        action="store_true",
        help="do not append $SOURCE_PUSH_SECRET to an http(s) endpoint (by default it is, when "
        "set: the source's HTTP adapter then refuses pushes without it)",
    )
    setup.set_defaults(run=run_setup)

    show = commands.add_parser(
        "show",
        help="print a bucket's notifications and their topics as JSON",
        description="Print the bucket's notifications, each with its topic's attributes.",
    )
    show.add_argument("--bucket", required=True, help="bucket to inspect")
    show.set_defaults(run=run_show)

    remove = add_command(commands, "remove", REMOVE_HELP, REMOVE_DESCRIPTION)
    remove.add_argument("--bucket", required=True, help="bucket to change")
    remove.add_argument("--topic", help="only notifications publishing to this topic")
    remove.add_argument(
        "--id", action="append", default=[], help="only this notification Id (repeatable)"
    )
    remove.add_argument(
        "--keep-topic", action="store_true", help="with --topic: keep the topic itself"
    )
    remove.set_defaults(run=run_remove)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _push_auth() -> PushAuth | None:
    return PushAuth.from_env(Env())


def run_setup(args: argparse.Namespace) -> int:
    push_auth: PushAuth | None = None
    try:
        push_auth = None if args.without_push_secret else _push_auth()
        endpoint = args.endpoint
        secret_in_path = push_auth is not None and applies_to(endpoint)
        if push_auth is not None and secret_in_path:
            endpoint = push_auth.endpoint(endpoint)
        topic = TopicSpec(
            name=args.topic,
            endpoint=endpoint,
            secret_in_path=secret_in_path,
            persistent=args.persistent,
            opaque_data=args.opaque_data,
            amqp_exchange=args.amqp_exchange,
            amqp_ack_level=args.amqp_ack_level,
            cloudevents=args.cloudevents,
            verify_ssl=not args.no_verify_ssl,
        )
        notification = NotificationSpec(
            id=args.id or args.topic,
            topic=args.topic,
            events=tuple(args.events),
            prefix=args.prefix,
            suffixes=tuple(args.suffix),
        )
    except (SpecError, ConfigError) as exc:
        message = str(exc) if push_auth is None else push_auth.redact(str(exc))
        return _fail(message, EXIT_USAGE)
    return _with_clients(
        lambda s3, sns: _report_setup(
            setup_notifications(s3, sns, args.bucket, topic, notification),
            args.bucket,
            notification.id,
        )
    )


def _report_setup(result: SetupResult, bucket: str, notification_id: str) -> None:
    _print_json(
        {
            "bucket": bucket,
            "notification_id": notification_id,
            "topic_arn": result.topic_arn,
            "notification_changed": result.notification_changed,
        }
    )


def run_show(args: argparse.Namespace) -> int:
    try:
        push_auth = _push_auth()
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)

    def show(s3: S3Client, sns: SNSClient) -> None:
        shown = show_notifications(s3, sns, args.bucket)
        if push_auth is not None:
            # The topic's EndPoint holds the secret as RGW stores it.
            shown = json.loads(push_auth.redact(json.dumps(shown)))
        _print_json(shown)

    return _with_clients(show)


def run_remove(args: argparse.Namespace) -> int:
    if args.keep_topic and args.topic is None:
        return _fail("--keep-topic needs --topic", EXIT_USAGE)
    return _with_clients(
        lambda s3, sns: _print_json(
            {
                "bucket": args.bucket,
                "removed_ids": remove_notifications(
                    s3,
                    sns,
                    args.bucket,
                    topic=args.topic,
                    ids=args.id,
                    delete_topic_too=not args.keep_topic,
                ),
                "deleted_topic": args.topic if args.topic and not args.keep_topic else None,
            }
        )
    )


def _with_clients(action: ClientAction) -> int:
    try:
        settings = S3Settings.from_env()
        if settings.endpoint_url is None:
            return _fail(
                'no RGW endpoint: set AWS_ENDPOINT_URL_S3 (eval "$(scripts/rgw-up.sh DIR)" '
                "prints it)",
                EXIT_USAGE,
            )
        action(make_s3_client(settings), make_sns_client(settings))
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (SpecError, NotificationError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    except BotoCoreError as exc:  # unreachable endpoint, timeouts, missing credentials
        return _fail(f"talking to RGW: {exc}", EXIT_FAILED)
    return 0
