"""`demo` and `up`: the whole pipeline on this machine (see docs/demo.md).

Both start, on free 127.0.0.1 ports and in a temporary directory: a throwaway Ceph RGW, the
model server (mobilenet_v2 over TF Serving gRPC, EfficientNet-Lite0 behind the Vision REST
stand-in), every function knative/base declares (receiver, resnet, vision, with the env their
manifests give them), the event source, a dispatcher playing the Knative Channel and Route of
knative/base (fan-out, 50/50 split, retries, dead letters, replies), a dead-letter sink, a
results collector playing the Broker, and the results service behind its Trigger (the page of
every object's results, its URL printed as `results page:`). Everything is stopped and removed
on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.commands import add_command

DEMO_EPILOG = """\
exit status: 0 every photo was classified by the function the split sent it to (with
--compare: by both classifiers, each pair joined by the evaluation function);
1 something did not arrive in time or was dead-lettered (the message says which);
3 the stack could not start (the message says why); 130 interrupted.
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _add_shared(parser: argparse.ArgumentParser) -> None:
    from testkit.stack import REPO_ROOT

    parser.add_argument(
        "--amqp",
        action="store_true",
        help="RGW -> RabbitMQ -> AMQP source instead of the HTTP push adapter (needs the "
        "Debian package rabbitmq-server)",
    )
    parser.add_argument(
        "--knative-dir",
        type=Path,
        default=REPO_ROOT / "knative" / "base",
        help="manifests the functions, their env and the channel's wiring are read from "
        "(default: knative/base)",
    )
    parser.add_argument(
        "--model-cache-dir",
        type=Path,
        help="converted ONNX models (default: the model server's, ~/.cache/rgw-knative-inference)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="copy every process log here before cleanup"
    )
    parser.add_argument(
        "--summary-json", type=Path, metavar="FILE", help="write the outcome as JSON to FILE"
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="sender authentication end to end: a local-only OIDC issuer, tokens from the "
        "channel, and AUTH_* on every function it delivers to (docs/security.md)",
    )


def register(groups: Any) -> None:
    """Add the `demo` and `up` commands to the top-level CLI."""
    from localknative.compare import OVERLAY
    from localknative.demo import DEFAULT_PHOTOS, DEFAULT_TIMEOUT
    from localknative.photos import MAX_PHOTOS

    demo = add_command(
        groups,
        "demo",
        help="run the whole pipeline locally on real RGW, real models and real photos",
        description=__doc__
        + "\n`demo` uploads sample photos (scikit-image's), prints which function got which "
        "object and what it saw, then a summary table, and stops.",
        epilog=DEMO_EPILOG,
    )
    demo.add_argument(
        "--photos",
        type=int,
        default=DEFAULT_PHOTOS,
        metavar="N",
        help=f"how many photos to upload, 1..{MAX_PHOTOS} (default {DEFAULT_PHOTOS})",
    )
    demo.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for every result after the uploads (default {DEFAULT_TIMEOUT:.0f})",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="after the summary, keep the stack up until Ctrl-C (like `up`), with the results "
        "page (its URL is the `results page:` line)",
    )
    demo.add_argument(
        "--compare",
        nargs="?",
        const=OVERLAY,
        type=Path,
        metavar="OVERLAY",
        help="play the evaluation overlay instead of --knative-dir (default "
        "knative/overlays/evaluation): every photo goes to both classifiers, the evaluation "
        "function joins their results, and the agreement table is printed (docs/evaluation.md)",
    )
    _add_shared(demo)
    demo.set_defaults(run=run_demo)

    up = add_command(
        groups,
        "up",
        help="start the whole pipeline locally and keep it running until Ctrl-C",
        description=__doc__
        + "\n`up` starts the stack, prints the results page's URL, how to upload your own files "
        "(aws s3 cp, boto3) and how to curl a CloudEvent at each function, then prints every "
        "result until Ctrl-C.",
    )
    up.add_argument(
        "--photos",
        type=int,
        default=0,
        metavar="N",
        help="also upload N sample photos first (default 0)",
    )
    up.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="with --photos: seconds to wait for their results",
    )
    _add_shared(up)
    up.set_defaults(run=run_up)


def _options(args: argparse.Namespace, keep_running: bool) -> Any:
    from localknative.demo import DemoOptions

    return DemoOptions(
        photos=args.photos,
        timeout=args.timeout,
        amqp=args.amqp,
        keep_running=keep_running,
        summary_json=args.summary_json,
        knative_dir=args.knative_dir,
        model_cache_dir=args.model_cache_dir,
        keep_logs=args.keep_logs,
        auth=args.auth,
    )


def run_demo(args: argparse.Namespace) -> int:
    from localknative.demo import run

    return run(_options(args, args.keep_running), sys.stdout, compare=args.compare)


def run_up(args: argparse.Namespace) -> int:
    from localknative.demo import run

    return run(_options(args, True), sys.stdout)
