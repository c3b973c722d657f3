"""S3 notification records and the CloudEvents that carry them, for tests and benchmarks.

- `s3_record(bucket, key)`: the fields a function reads, nothing more.
- `rgw_record(bucket, key, event_name, size)`: one record exactly as RGW 16.2's HTTP push sends
  it (`eventSource: ceph:s3`, ids, owner, sequencer...).
- `records(*items)`: the `{"Records": [...]}` body around them.
- `binary_event(bucket, key, ...)`: headers and body of the binary-mode CloudEvent the source
  sends for one object, to POST to a function.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

S3_EVENT_TYPE_PREFIX = "com.amazonaws.s3."


def s3_record(bucket: str, key: str, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One S3 notification record (RGW's flavour) naming an object."""
    return {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "",
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "eventName": event_name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
    }


def rgw_record(
    bucket: str, key: str, event_name: str = "ObjectCreated:Put", size: int = 0, etag: str = ""
) -> dict[str, Any]:
    """One S3 record exactly as RGW 16.2's HTTP push sends it (`eventSource: ceph:s3`).

    `etag` is empty unless given: the functions treat an ETag other than the object's as a
    stale event (the object was overwritten since), so a made-up one would hide the object."""
    event_tag = uuid.uuid4().hex
    return {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "",
        "eventTime": "2026-11-28T21:38:19.047572Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "test"},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {
            "x-amz-request-id": f"{uuid.uuid4()}.4103.1",
            "x-amz-id-2": "1007-default-default",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "resnet-tests",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "test"},
                "arn": f"arn:aws:s3:::{bucket}",
                "id": f"{uuid.uuid4()}.4105.3",
            },
            "object": {
                "key": key,
                "size": size,
                "eTag": etag,
                "versionId": "",
                "sequencer": "CB490B6B7CC10B03",
                "metadata": [],
                "tags": [],
            },
        },
        "eventId": f"1795901899.051102.{event_tag}",
        "opaqueData": "",
    }


def rgw_legacy_event(bucket: str, key: str, bucket_id: str = "b.1") -> dict[str, Any]:
    """One event of RGW 16.2's legacy pub/sub pull API (`dev.knative.source.rgwpubsub`, the
    RGWEvent shape), as RGW's test suite prints it."""
    return {
        "id": "1795903315.683091.3b94fd83",
        "event": "OBJECT_CREATE",
        "timestamp": "2026-11-28T22:01:55.683091Z",
        "info": {
            "attrs": {"mtime": "2026-11-28T22:00:45.461610Z"},
            "bucket": {"bucket_id": bucket_id, "name": bucket, "tenant": ""},
            "key": {"instance": "", "name": key},
        },
    }


def records(*items: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(items)}


def binary_headers(
    event_type: str, source: str, event_id: str | None = None, subject: str | None = None
) -> dict[str, str]:
    """The ce-* headers of a binary-mode CloudEvent with a JSON body."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id or str(uuid.uuid4()),
        "ce-source": source,
        "ce-type": event_type,
    }
    if subject is not None:
        headers["ce-subject"] = subject
    headers["content-type"] = "application/json"
    return headers


def binary_event(
    bucket: str,
    key: str,
    event_name: str = "ObjectCreated:Put",
    size: int = 0,
    event_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of the binary-mode CloudEvent the source sends for one RGW record."""
    headers = binary_headers(
        S3_EVENT_TYPE_PREFIX + event_name, f"ceph:s3.default.{bucket}", event_id, subject=key
    )
    body = json.dumps(records(rgw_record(bucket, key, event_name, size))).encode()
    return headers, body
