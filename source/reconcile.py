"""Bucket reconciliation: one synthetic ObjectCreated CloudEvent per object with no result record.

    python -m source.reconcile --bucket photos --sink http://...   (also `rgw-inference reconcile`)

It lists the bucket (the current version of each key), reads each object's tags, and posts, for
every object whose current version carries no result record (`common.result_records`: from any
classifier, or from `--model` only), the CloudEvent the source would have sent for its PUT: an S3
record with key, size, ETag (and version id), mapped by `source.mapping`. That covers events RGW
lost or expired, buckets filled before their notifications existed, and a new model version
(whose record key differs). The event id is derived from the object version, so running it twice
before the functions caught up sends the same ids again, which a consumer drops.

Resumable: keys are listed in order; `--state FILE` keeps the last key whose event the sink took
(every key before it is done), and a later run with the same file starts after it. Without a
state file, the progress lines on stderr name that key for `--start-after`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from common.cloudevents_http import to_binary_headers
from common.result_records import records_in
from common.tracing import TraceParent
from source.mapping import lineage, to_cloudevent

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("source.reconcile")

RECONCILE_ID = "rgw-inference-reconcile"
POST_ATTEMPTS = 5


@dataclass(frozen=True)
class Options:
    bucket: str
    sink: str
    prefix: str = ""
    model: str | None = None
    rate: float | None = None  # objects per second at most
    dry_run: bool = False
    start_after: str = ""
    state: Path | None = None
    workers: int = 8
    region: str = "default"


@dataclass(frozen=True)
class Listed:
    key: str
    etag: str
    size: int
    version_id: str | None
    last_modified: datetime


@dataclass
class Summary:
    listed: int = 0
    classified: int = 0
    sent: int = 0
    last_key: str = ""
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed[:20]}


def listing(s3: S3Client, options: Options, start_after: str) -> Iterator[Listed]:
    """The current version of every key under the prefix, after `start_after`, in key order."""
    versioning = s3.get_bucket_versioning(Bucket=options.bucket).get("Status")
    if versioning in ("Enabled", "Suspended"):
        marker: dict[str, Any] = {"KeyMarker": start_after} if start_after else {}
        for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=options.bucket, Prefix=options.prefix, **marker
        ):
            for version in page.get("Versions", []):
                if version.get("IsLatest"):
                    version_id = version.get("VersionId")
                    yield _listed(version, None if version_id in (None, "null") else version_id)
        return
    for listed in s3.get_paginator("list_objects_v2").paginate(
        Bucket=options.bucket, Prefix=options.prefix, StartAfter=start_after
    ):
        for item in listed.get("Contents", []):
            yield _listed(item, None)


def _listed(item: Mapping[str, Any] | Any, version_id: str | None) -> Listed:
    return Listed(
        key=str(item["Key"]),
        etag=str(item.get("ETag", "")).strip('"'),
        size=int(item.get("Size", 0)),
        version_id=version_id,
        last_modified=item["LastModified"],
    )


def has_record(s3: S3Client, bucket: str, obj: Listed, model: str | None) -> bool:
    """Whether the object's current version carries a result record (of `model`, if given:
    `name` matches every version of it, `name@version` only that one)."""
    version: dict[str, Any] = {"VersionId": obj.version_id} if obj.version_id else {}
    tags = s3.get_object_tagging(Bucket=bucket, Key=obj.key, **version)["TagSet"]
    markers = {f"e:{obj.etag}"} | ({f"v:{obj.version_id}"} if obj.version_id else set())
    for model_id, record in records_in({t["Key"]: t["Value"] for t in tags}).items():
        wanted = model is None or model_id == model or model_id.startswith(model + "@")
        if wanted and record.marker in markers:
            return True
    return False


def synthetic_record(bucket: str, obj: Listed) -> dict[str, Any]:
    """The S3 record RGW would have pushed for the object's PUT (eventTime: its mtime)."""
    when = obj.last_modified.astimezone(UTC).isoformat(timespec="milliseconds")
    return {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "",
        "eventTime": when.replace("+00:00", "Z"),
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": RECONCILE_ID},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {"x-amz-request-id": "", "x-amz-id-2": ""},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": RECONCILE_ID,
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": obj.key,
                "size": obj.size,
                "eTag": obj.etag,
                "versionId": obj.version_id or "",
                "sequencer": "",
            },
        },
        "eventId": RECONCILE_ID,
        "opaqueData": "",
    }


class Pacer:
    """At most `rate` calls of `wait` per second, across threads."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            time.sleep(delay)


def post(client: httpx.Client, options: Options, obj: Listed) -> None:
    """One event to the sink, retried on 5xx/429/transport errors; raises if it never lands."""
    event = to_cloudevent(
        synthetic_record(options.bucket, obj),
        options.region,
        extensions=lineage(TraceParent.new(), datetime.now(UTC)),
    )
    headers, body = to_binary_headers(event)
    delay = 0.2
    for attempt in range(POST_ATTEMPTS):
        try:
            answer = client.post(options.sink, headers=headers, content=body)
        except httpx.TransportError as exc:
            problem = str(exc) or type(exc).__name__
        else:
            if answer.is_success:
                return
            problem = f"HTTP {answer.status_code}"
            if answer.status_code < 500 and answer.status_code != 429:
                break
        if attempt + 1 < POST_ATTEMPTS:
            time.sleep(delay)
            delay *= 2
    raise RuntimeError(f"the sink refused {obj.key}: {problem}")


def read_state(path: Path | None, options: Options) -> str:
    if path is None or not path.exists():
        return options.start_after
    state = json.loads(path.read_text())
    if state.get("bucket") != options.bucket or state.get("prefix") != options.prefix:
        raise SystemExit(f"{path} is the state of another bucket or prefix")
    return max(str(state.get("last_key", "")), options.start_after)


def write_state(path: Path | None, options: Options, last_key: str) -> None:
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    state = {"bucket": options.bucket, "prefix": options.prefix, "last_key": last_key}
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)  # atomic: a kill leaves the old state or the new one


def reconcile(s3: S3Client, client: httpx.Client, options: Options) -> Summary:
    summary = Summary(last_key=read_state(options.state, options))
    pacer = Pacer(options.rate)

    def one(obj: Listed) -> tuple[Listed, str]:
        if has_record(s3, options.bucket, obj, options.model):
            return obj, "classified"
        if options.dry_run:
            return obj, "would-send"
        pacer.wait()
        post(client, options, obj)
        return obj, "sent"

    last_report = time.monotonic()
    with ThreadPoolExecutor(options.workers) as pool:
        # map() yields in listing order: when a result arrives, every key before it is done,
        # so the state never skips an object whose event is still in flight.
        for obj, outcome in pool.map(one, listing(s3, options, summary.last_key)):
            summary.listed += 1
            summary.classified += outcome == "classified"
            summary.sent += outcome != "classified"
            if outcome == "would-send":
                sys.stdout.write(f"{obj.key}\n")
            summary.last_key = obj.key
            if not options.dry_run:
                write_state(options.state, options, obj.key)
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                log.info("reconciling", extra=summary.as_dict())
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", required=True, help="the bucket to reconcile")
    parser.add_argument("--sink", required=True, help="where to POST the events (the Channel)")
    parser.add_argument("--prefix", default="", help="only keys under this prefix")
    parser.add_argument(
        "--model",
        help="only records of this model (`name`: any version; `name@version`: that one); "
        "default: a record of any classifier counts",
    )
    parser.add_argument("--rate", type=float, help="at most this many events per second")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent")
    parser.add_argument("--start-after", default="", help="resume after this key")
    parser.add_argument("--state", type=Path, help="file keeping the last key done (resumes)")
    parser.add_argument("--workers", type=int, default=8, help="objects checked in parallel")


_FROM_ARGS = ("bucket", "sink", "prefix", "model", "rate", "dry_run", "start_after", "state")


def run(args: argparse.Namespace) -> int:
    from common.logs import configure_logging
    from common.s3 import S3Settings, make_s3_client

    configure_logging("INFO")
    settings = S3Settings.from_env()
    given = {name: getattr(args, name) for name in _FROM_ARGS}
    options = Options(**given, workers=max(1, args.workers), region=settings.region)
    s3 = make_s3_client(settings)
    limits = httpx.Limits(max_connections=options.workers)
    with httpx.Client(timeout=30.0, limits=limits) as client:
        try:
            summary = reconcile(s3, client, options)
        except RuntimeError as exc:
            log.error(str(exc))
            return 1
    log.info("reconciled", extra=summary.as_dict())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m source.reconcile", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
