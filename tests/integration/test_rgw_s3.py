"""Plain S3 against the real RGW that scripts/rgw-up.sh starts."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.rgw import RgwGateway

pytestmark = pytest.mark.rgw


def test_put_get_list_delete(rgw: RgwGateway, bucket: str) -> None:
    s3 = rgw.s3_client()
    s3.put_object(Bucket=bucket, Key="dir/hello world.txt", Body=b"hello", Metadata={"a": "1"})
    s3.put_object(Bucket=bucket, Key="other.bin", Body=os.urandom(1000))

    got = s3.get_object(Bucket=bucket, Key="dir/hello world.txt")
    assert got["Body"].read() == b"hello"
    assert got["Metadata"] == {"a": "1"}

    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [item["Key"] for item in listed["Contents"]] == ["dir/hello world.txt"]

    s3.delete_object(Bucket=bucket, Key="dir/hello world.txt")
    remaining = s3.list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in remaining["Contents"]] == ["other.bin"]
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="dir/hello world.txt")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_bucket_is_listed_and_fresh(rgw: RgwGateway, bucket: str) -> None:
    s3 = rgw.s3_client()
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_multipart_upload_round_trips(rgw: RgwGateway, bucket: str) -> None:
    s3 = rgw.s3_client()
    payload = os.urandom(12 * 1024 * 1024 + 123)
    # boto3 switches to multipart above 8 MiB by default: 2 parts here.
    s3.upload_fileobj(io.BytesIO(payload), bucket, "big.bin")

    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-2"), "expected a multipart ETag"
    downloaded = io.BytesIO()
    s3.download_fileobj(bucket, "big.bin", downloaded)
    assert hashlib.sha256(downloaded.getvalue()).digest() == hashlib.sha256(payload).digest()


def test_delete_objects_removes_many(rgw: RgwGateway, bucket: str) -> None:
    s3 = rgw.s3_client()
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    answer = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys[:3]]}
    )
    assert sorted(d["Key"] for d in answer["Deleted"]) == keys[:3]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == keys[3:]


def test_wrong_secret_is_refused(rgw: RgwGateway) -> None:
    wrong = RgwGateway(rgw.endpoint, rgw.access_key, "not-the-secret", rgw.data_dir)
    with pytest.raises(ClientError) as refused:
        wrong.s3_client().list_buckets()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_keys_up_to_s3s_1024_bytes(rgw: RgwGateway, bucket: str) -> None:
    # RGW's default `osd max object name len` would refuse keys over ~400 bytes with a 500.
    s3 = rgw.s3_client()
    key = "dir/" + "é" * 508 + ".jpg"
    assert len(key.encode("utf-8")) == 1024
    s3.put_object(Bucket=bucket, Key=key, Body=b"long")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"long"
