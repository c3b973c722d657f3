"""The RGW (S3) client: created once per process, reads only from the configured endpoint.

`ObjectStore.download` checks the object's size before reading it and refuses objects over the
cap; it reads at most cap + 1 bytes even if the object grows in between. S3 errors are mapped to
the runtime's permanent/transient errors so a function never has to look at botocore codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ReadTimeoutError

from common.env import ConfigError, Env, Secret, env_var, parse_endpoint_url
from common.errors import (
    EventError,
    Forbidden,
    ObjectGone,
    PermanentError,
    TooLarge,
    TransientError,
)
from common.events import ObjectEvent

MAX_TAGS = 10  # S3's limit per object

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient


S3 = "S3 / Ceph RGW (resnet, vision, source)"
S3_ENDPOINT = env_var(
    "AWS_ENDPOINT_URL_S3",
    "RGW endpoint URL. The only place objects are read from, never a URL found in an event. "
    "A bare host[:port] (the seed's S3_HOSTNAME) means http://.",
    S3,
    aliases=("AWS_ENDPOINT_URL", "S3_HOSTNAME"),
)
S3_ACCESS_KEY = env_var(
    "AWS_ACCESS_KEY_ID", "Access key id.", S3, aliases=("S3_ACCESS_KEY_ID",), secret=True
)
S3_SECRET_KEY = env_var(
    "AWS_SECRET_ACCESS_KEY",
    "Secret access key.",
    S3,
    aliases=("S3_SECRET_ACCESS_KEY",),
    secret=True,
)
S3_REGION = env_var(
    "AWS_REGION",
    "Region name; RGW's default zonegroup answers to 'default'.",
    S3,
    "default",
    aliases=("AWS_DEFAULT_REGION",),
)
S3_MAX_OBJECT_BYTES = env_var(
    "S3_MAX_OBJECT_BYTES",
    "Largest object a function downloads; larger is refused with 413 before reading it.",
    S3,
    str(20 * 1024 * 1024),
)
S3_CONNECT_TIMEOUT = env_var("S3_CONNECT_TIMEOUT", "Seconds to connect to RGW.", S3, "2")
S3_READ_TIMEOUT = env_var("S3_READ_TIMEOUT", "Seconds to wait for RGW to answer.", S3, "10")
S3_MAX_ATTEMPTS = env_var(
    "S3_MAX_ATTEMPTS", "Attempts per S3 call (bounded retries on transient errors).", S3, "3"
)
ALLOWED_BUCKETS = env_var(
    "ALLOWED_BUCKETS",
    "Comma-separated buckets a function may read; an event naming another gets 403. "
    "Empty: any bucket the credentials can read.",
    S3,
)


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    region: str = "default"
    max_object_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    max_attempts: int = 3
    allowed_buckets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        env = Env(environ)
        raw_endpoint = env.string(S3_ENDPOINT)
        endpoint = None
        if raw_endpoint is not None:
            try:
                endpoint = parse_endpoint_url(raw_endpoint)
            except ValueError:
                raise ConfigError(
                    f"{S3_ENDPOINT.name}: expected an http(s) URL or host[:port], "
                    f"got {raw_endpoint!r}"
                ) from None
        return cls(
            endpoint_url=endpoint,
            access_key_id=env.secret(S3_ACCESS_KEY),
            secret_access_key=env.secret(S3_SECRET_KEY),
            region=env.required_str(S3_REGION),
            max_object_bytes=env.integer(S3_MAX_OBJECT_BYTES, 1),
            connect_timeout=env.number(S3_CONNECT_TIMEOUT, 0.01),
            read_timeout=env.number(S3_READ_TIMEOUT, 0.01),
            max_attempts=env.integer(S3_MAX_ATTEMPTS, 1, 10),
            allowed_buckets=env.csv(ALLOWED_BUCKETS),
        )


def _client_kwargs(settings: S3Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "region_name": settings.region,
        "config": Config(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            # RGW 16.2 predates the flexible checksums boto3 sends by default since 1.36.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    }
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.access_key_id and settings.secret_access_key:
        kwargs["aws_access_key_id"] = settings.access_key_id.reveal()
        kwargs["aws_secret_access_key"] = settings.secret_access_key.reveal()
    return kwargs


def make_s3_client(settings: S3Settings) -> S3Client:
    """A boto3 S3 client for RGW: path-style addressing, timeouts, bounded retries."""
    return boto3.session.Session().client("s3", **_client_kwargs(settings))


def make_sns_client(settings: S3Settings) -> SNSClient:
    """A boto3 SNS client on the RGW endpoint: RGW's topic API for bucket notifications."""
    return boto3.session.Session().client("sns", **_client_kwargs(settings))


@dataclass(frozen=True)
class ObjectTags:
    tags: dict[str, str]
    version_id: str | None  # the version RGW answered for (None: unversioned bucket)


@dataclass(frozen=True)
class DownloadedObject:
    bucket: str
    key: str
    version_id: str | None
    content_type: str | None
    etag: str | None
    data: bytes


class ObjectStore:
    """Reads objects named by events, within the configured limits."""

    def __init__(self, settings: S3Settings, client: S3Client | None = None) -> None:
        self._settings = settings
        self._client = client or make_s3_client(settings)
        self._client.meta.events.register("before-sign.s3.CopyObject", _rgw_copy_if_match)

    @property
    def client(self) -> S3Client:
        return self._client

    def check_bucket(self, bucket: str) -> None:
        allowed = self._settings.allowed_buckets
        if allowed and bucket not in allowed:
            raise Forbidden(f"bucket {bucket!r} is not in ALLOWED_BUCKETS")

    def download(self, obj: ObjectEvent, if_match: bool = False) -> DownloadedObject:
        """The object's bytes; TooLarge before reading anything when it is over the cap.

        With `if_match`, an event for a version the object no longer has raises `Stale`
        before a byte of the body is read: in a versioned bucket the GET asks for the current
        version and compares its version id with the event's; else, with an ETag in the event,
        RGW answers 412 when the object now holds other content (overwritten since).
        """
        self.check_bucket(obj.bucket)
        cap = self._settings.max_object_bytes
        version: dict[str, Any] = {}
        if obj.version_id and not if_match:
            version["VersionId"] = obj.version_id
        elif if_match and obj.etag and not obj.version_id:
            version["IfMatch"] = f'"{obj.etag}"'
        where = f"s3://{obj.bucket}/{obj.key}"
        try:
            # One GET: its Content-Length is checked before a byte of the body is read, and the
            # body is read to at most cap+1 bytes, so a lying or growing object cannot make us
            # hold more than the cap in memory. (No Range header: RGW answers ranged GETs of
            # small objects ~40 ms slower; no HEAD first: it would double the round trips.)
            response = self._client.get_object(Bucket=obj.bucket, Key=obj.key, **version)
            body = response["Body"]
            current = response.get("VersionId")
            moved = (
                current != obj.version_id
                if current
                else bool(obj.etag) and obj.etag != _etag(response)
            )
            if if_match and obj.version_id and moved:
                body.close()
                raise Stale(f"{where}: the current version is {current}, not {obj.version_id}")
            size = int(response.get("ContentLength", 0))
            if size > cap:
                body.close()
                raise TooLarge(f"{where} is {size} bytes; S3_MAX_OBJECT_BYTES is {cap}")
            data = body.read(cap + 1)
            if len(data) > cap:
                body.close()  # do not drain the rest; the connection is dropped instead
        except ClientError as exc:
            if _status(exc) == 412:
                raise Stale(f"{where} no longer has ETag {obj.etag}") from None
            raise _map_client_error(exc, where) from None
        except (ConnectionError, ReadTimeoutError, BotoCoreError) as exc:
            raise TransientError(f"RGW unreachable while reading {where}: {exc}") from None
        if len(data) > cap:
            raise TooLarge(f"{where} grew beyond S3_MAX_OBJECT_BYTES ({cap}) while reading")
        return DownloadedObject(
            bucket=obj.bucket,
            key=obj.key,
            version_id=obj.version_id,
            content_type=response.get("ContentType"),
            etag=_etag(response),
            data=data,
        )

    def get_tags(self, obj: ObjectEvent) -> ObjectTags:
        """The tag set of the event's version and the version id RGW names in its answer: one
        metadata call, no body."""
        self.check_bucket(obj.bucket)
        version: dict[str, Any] = {"VersionId": obj.version_id} if obj.version_id else {}
        where = f"s3://{obj.bucket}/{obj.key}"
        try:
            response = self._client.get_object_tagging(Bucket=obj.bucket, Key=obj.key, **version)
        except ClientError as exc:
            raise _map_client_error(exc, where) from None
        except (ConnectionError, ReadTimeoutError, BotoCoreError) as exc:
            raise TransientError(
                f"RGW unreachable while reading the tags of {where}: {exc}"
            ) from None
        tags = {t["Key"]: t["Value"] for t in response.get("TagSet", [])}
        return ObjectTags(tags, response.get("VersionId") or None)

    def put_tags(self, obj: ObjectEvent, tags: Mapping[str, str]) -> None:
        """Replace the object's tag set (S3 allows 10 tags, 128-char keys, 256-char values)."""
        version: dict[str, Any] = {"VersionId": obj.version_id} if obj.version_id else {}
        tag_set: list[Any] = [
            {"Key": k[:128], "Value": v[:256]} for k, v in list(tags.items())[:10]
        ]
        where = f"s3://{obj.bucket}/{obj.key}"
        try:
            self._client.put_object_tagging(
                Bucket=obj.bucket, Key=obj.key, Tagging={"TagSet": tag_set}, **version
            )
        except ClientError as exc:
            raise _map_client_error(exc, where) from None
        except (ConnectionError, ReadTimeoutError, BotoCoreError) as exc:
            raise TransientError(f"RGW unreachable while tagging {where}: {exc}") from None

    # --- writes the compliance function needs: merge tags, copy and delete exact versions ---

    def merge_tags(
        self, obj: ObjectEvent, tags: Mapping[str, str], keep: str = ""
    ) -> dict[str, str]:
        """Write `tags` into the version's tag set and keep every other tag (the owner's, the
        result records): read, merge, write. Over S3's 10 tags, other tags make room, those
        whose key starts with `keep` last; none of `tags` is ever dropped. Returns what was
        written. (Two writers at once: RGW answers 409, a TransientError, and the retry reads
        the other's tags.)"""
        current = self.get_tags(obj).tags
        merged = {k: v for k, v in current.items() if k not in tags}
        excess = len(merged) + len(tags) - MAX_TAGS
        if excess > 0:
            # sorted() is stable: unprotected tags first, each group in the order RGW gave.
            order = sorted(merged, key=lambda k: bool(keep) and k.startswith(keep))
            for victim in order[:excess]:
                del merged[victim]
        merged.update(tags)
        self.put_tags(obj, merged)
        return merged

    def head_etag(self, bucket: str, key: str) -> str | None:
        """The ETag of the current version of `bucket/key`, None if there is none."""
        where = f"s3://{bucket}/{key}"
        try:
            response = self._call(
                where, "reading", lambda: self._client.head_object(Bucket=bucket, Key=key)
            )
        except ObjectGone:
            return None
        return _etag(response)

    def current_tags(self, bucket: str, key: str) -> dict[str, str] | None:
        """The tags of the current version of `bucket/key` (any bucket, e.g. a destination
        outside ALLOWED_BUCKETS), None if there is no such object."""
        where = f"s3://{bucket}/{key}"
        try:
            response = self._call(
                where,
                "reading the tags of",
                lambda: self._client.get_object_tagging(Bucket=bucket, Key=key),
            )
        except ObjectGone:
            return None
        return {t["Key"]: t["Value"] for t in response.get("TagSet", [])}

    def require_bucket(self, bucket: str) -> None:
        """HeadBucket: ObjectGone if it does not exist, Forbidden if these keys may not use it."""
        self._call(f"s3://{bucket}", "checking", lambda: self._client.head_bucket(Bucket=bucket))

    def copy_version(self, obj: ObjectEvent, etag: str | None, bucket: str) -> str | None:
        """Server-side CopyObject of exactly the event's version to `bucket` under the same key,
        with its metadata and tags; returns the copy's version id (None: unversioned bucket).

        The source is pinned: its version id in a versioned bucket, else `CopySourceIfMatch`
        on the ETag (also under RGW 16.2's header name, `_rgw_copy_if_match`), so an object
        overwritten since is never copied in its place (`Stale`)."""
        self.check_bucket(obj.bucket)
        source: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        pin: dict[str, Any] = {}
        if obj.version_id and obj.version_id != "null":
            source["VersionId"] = obj.version_id
        elif etag:
            pin["CopySourceIfMatch"] = f'"{etag}"'
        where = f"s3://{obj.bucket}/{obj.key} -> s3://{bucket}/{obj.key}"
        response = self._call(
            where,
            "copying",
            lambda: self._client.copy_object(
                Bucket=bucket,
                Key=obj.key,
                CopySource=source,  # type: ignore[arg-type]
                MetadataDirective="COPY",
                TaggingDirective="COPY",
                **pin,
            ),
            stale=f"{where}: the source no longer has ETag {etag}",
        )
        return response.get("VersionId") or None

    def delete_version(self, obj: ObjectEvent, etag: str | None) -> None:
        """Delete exactly the event's version: by version id in a versioned bucket (the version
        itself, no delete marker); else only if the object still has `etag` (HEAD with
        If-Match first: S3's DeleteObject has no condition, so a write between the two calls
        is the one remaining race)."""
        self.check_bucket(obj.bucket)
        where = f"s3://{obj.bucket}/{obj.key}"
        version: dict[str, Any] = {}
        if obj.version_id and obj.version_id != "null":
            version["VersionId"] = obj.version_id
        elif etag:
            self._call(
                where,
                "checking",
                lambda: self._client.head_object(
                    Bucket=obj.bucket, Key=obj.key, IfMatch=f'"{etag}"'
                ),
                stale=f"{where} no longer has ETag {etag}; not deleted",
            )
        self._call(
            where,
            "deleting",
            lambda: self._client.delete_object(Bucket=obj.bucket, Key=obj.key, **version),
        )

    def _call(
        self, where: str, doing: str, call: Callable[[], Any], stale: str | None = None
    ) -> Any:
        """One S3 call with its errors mapped (permanent 4xx, transient 5xx / unreachable);
        with `stale`, a 412 (a failed If-Match) raises `Stale` with that message."""
        try:
            return call()
        except ClientError as exc:
            if stale is not None and _status(exc) == 412:
                raise Stale(stale) from None
            raise _map_client_error(exc, where) from None
        except (ConnectionError, ReadTimeoutError, BotoCoreError) as exc:
            raise TransientError(f"RGW unreachable while {doing} {where}: {exc}") from None


def _rgw_copy_if_match(request: Any, **_: Any) -> None:
    """RGW 16.2 ignores S3's `x-amz-copy-source-if-match` and reads `x-amz-copy-if-match`
    instead (a copy whose source changed would go through): send the condition under both."""
    condition = request.headers.get("x-amz-copy-source-if-match")
    if condition is not None and "x-amz-copy-if-match" not in request.headers:
        request.headers["x-amz-copy-if-match"] = condition


def _etag(response: Mapping[str, Any]) -> str | None:
    return str(response.get("ETag", "")).strip('"') or None


class Stale(Exception):
    """The event names a version of the object RGW no longer holds (overwritten since)."""


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


_GONE = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound"}
_BUSY = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _map_client_error(exc: ClientError, where: str) -> EventError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _GONE or status == 404:
        return ObjectGone(f"{where} does not exist (any more)")
    if code in _DENIED or status == 403:
        return Forbidden(f"RGW denied access to {where} ({code or status})")
    # 409 OperationAborted: RGW refuses concurrent writes to one object's tags (two events of
    # the same object tagged at once); the next attempt succeeds, so the channel must retry.
    if status >= 500 or status == 409 or code in _BUSY:
        return TransientError(f"RGW error on {where}: {code or status}")
    return PermanentError(f"RGW refused the request for {where}: {code or status}")
