"""The compliance function, in-process: the real app (runtime, CloudEvents binding, lifecycle)
through httpx's ASGI transport, against the session's real RGW and real model server (open_nsfw).

What is checked here, one process: the verdict (reply and log line), the tags merged into the
owner's, the quarantine copy and its idempotence, a failed copy answered 503 and completed by the
retry, removal of the original and the redelivery after it, and every refused configuration.
The same function as a process, end to end, is tests/integration/test_compliance_function.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from common.env import ConfigError
from common.errors import ObjectGone, PermanentError
from common.events import ObjectEvent
from common.runtime import create_app
from common.s3 import ObjectStore, S3Settings, Stale
from functions.compliance.app import ComplianceFunction
from functions.compliance.settings import (
    ComplianceSettings,
    result_settings,
    serving_settings,
)
from functions.compliance.verdict import VERDICT_EVENT_TYPE, nsfw_labels
from testkit.records import binary_event, binary_headers, records, rgw_record
from testkit.samples import photo_jpeg
from tests.fixtures.modelserver import ModelServer
from tests.fixtures.rgw import RgwGateway

LOGGER = "compliance"
Event = tuple[dict[str, str], bytes]


# --- settings and the model's answer: no services -------------------------------------------


@pytest.mark.parametrize("value", ["1.5", "-0.1", "abc", "nan"])
def test_a_threshold_outside_0_to_1_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="COMPLIANCE_THRESHOLD: expected a number from 0 to 1"):
        ComplianceSettings.from_env({"COMPLIANCE_THRESHOLD": value})


def test_removal_without_a_quarantine_bucket_is_refused() -> None:
    with pytest.raises(ConfigError, match="COMPLIANCE_REMOVE_ORIGINAL=true needs QUARANTINE"):
        ComplianceSettings.from_env({"COMPLIANCE_REMOVE_ORIGINAL": "true"})


def test_defaults() -> None:
    assert ComplianceSettings.from_env({}) == ComplianceSettings(0.8, None, False, 10.0)
    assert result_settings({}).result_records is False
    assert result_settings({"RESULT_RECORDS": "true"}).result_records is True
    assert serving_settings({}).model_name == "open_nsfw"
    assert serving_settings({"MODEL_NAME": ""}).model_name == "open_nsfw"
    assert serving_settings({"MODEL_NAME": "my_nsfw"}).model_name == "my_nsfw"


def test_the_score_is_the_nsfw_column_of_probabilities_or_logits() -> None:
    [nsfw, sfw] = nsfw_labels({"probabilities": np.array([[0.25, 0.75]], dtype=np.float32)})
    assert (nsfw.name, nsfw.class_id, sfw.name, sfw.class_id) == ("nsfw", 1, "sfw", 0)
    assert nsfw.score == pytest.approx(0.75) and sfw.score == pytest.approx(0.25)
    [nsfw, _] = nsfw_labels({"logits": np.array([[0.0, np.log(3.0)]])})
    assert nsfw.score == pytest.approx(0.75)
    with pytest.raises(PermanentError, match=r"expected \[N, 2\]"):
        nsfw_labels({"probabilities": np.full((1, 1000), 0.001, dtype=np.float32)})


# --- the app in-process, with real RGW and the real model server ------------------------------


@contextmanager
def compliance_app(rgw: RgwGateway, modelserver: ModelServer, **env: str) -> Iterator[FastAPI]:
    settings = {
        **rgw.env(),
        "RESNET_SERVING_ENDPOINT": modelserver.grpc_target,
        "MODEL_TIMEOUT": "20",
        **env,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        patch.delenv("MODEL_NAME", raising=False)  # this function's default: open_nsfw
        yield create_app(ComplianceFunction)


async def _post_all(app: FastAPI, events: list[Event]) -> list[httpx.Response]:
    # The ASGI transport does not run the lifespan: enter it, so start() and stop() run as in a pod.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
            return [await client.post("/", headers=h, content=b, timeout=60) for h, b in events]


def post(app: FastAPI, *events: Event) -> list[httpx.Response]:
    return asyncio.run(_post_all(app, list(events)))


def upload(rgw: RgwGateway, bucket: str, key: str, body: bytes, **extra: Any) -> dict[str, Any]:
    return dict(rgw.s3_client().put_object(Bucket=bucket, Key=key, Body=body, **extra))


def event_for(bucket: str, key: str, put: dict[str, Any], event_id: str | None = None) -> Event:
    """The CloudEvent RGW's push makes of that PUT: its ETag and version id in the record."""
    record = rgw_record(bucket, key, size=1, etag=str(put["ETag"]).strip('"'))
    record["s3"]["object"]["versionId"] = put.get("VersionId", "")
    headers = binary_headers(
        "com.amazonaws.s3.ObjectCreated:Put", f"ceph:s3.default.{bucket}", event_id, key
    )
    return headers, json.dumps(records(record)).encode()


def classifier_record(put: dict[str, Any]) -> dict[str, str]:
    """The result record a classifier (resnet, mobilenet_v2@1) writes on that version."""
    return {"rgwi:mobilenet_v2@1": f"e:{str(put['ETag']).strip(chr(34))} 285:0.6900:Egyptian cat"}


def tag_set(tags: dict[str, str]) -> list[Any]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def tags_of(rgw: RgwGateway, bucket: str, key: str) -> dict[str, str]:
    tag_set = rgw.s3_client().get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {tag["Key"]: tag["Value"] for tag in tag_set}


def versions(rgw: RgwGateway, bucket: str, key: str) -> list[str]:
    """The version ids RGW holds for `key`."""
    listing = rgw.s3_client().list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]


@pytest.fixture
def quarantine(rgw: RgwGateway) -> Iterator[str]:
    from tests.fixtures.rgw import empty_and_delete_bucket

    s3 = rgw.s3_client()
    name = rgw.unique_name("quarantine")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield name
    if name in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        empty_and_delete_bucket(s3, name)


@pytest.mark.rgw
def test_a_photo_gets_a_verdict_and_is_left_alone(
    rgw: RgwGateway, modelserver: ModelServer, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put = upload(rgw, bucket, "cats/tabby.jpg", photo_jpeg("chelsea"))
    with compliance_app(rgw, modelserver) as app:
        [answer] = post(app, event_for(bucket, "cats/tabby.jpg", put))
    assert answer.status_code == 200, answer.text
    assert answer.headers["ce-type"] == VERDICT_EVENT_TYPE
    assert answer.headers["ce-source"] == "/functions/compliance"
    data = answer.json()
    assert data["flagged"] is False and 0 <= data["score"] < 0.8 and data["threshold"] == 0.8
    assert data["model_id"] == "open_nsfw@1" and data["etag"] == put["ETag"].strip('"')
    assert data["quarantine"] is None and data["original_removed"] is False
    # The runtime's JSON log lines (create_app routes logging to stdout).
    [line] = [entry for entry in json_lines(capsys.readouterr().out) if entry["logger"] == LOGGER]
    assert line["message"].startswith("verdict: not flagged: nsfw ")
    assert line["score"] == pytest.approx(data["score"], abs=1e-6)
    assert (line["flagged"], line["threshold"], line["bucket"], line["key"]) == (
        False,
        0.8,
        bucket,
        "cats/tabby.jpg",
    )
    assert line["trace_id"] == data["trace_id"] and line["result_id"] == answer.headers["ce-id"]
    # Not flagged: nothing written to the object (RESULT_RECORDS is off by default here).
    assert tags_of(rgw, bucket, "cats/tabby.jpg") == {}


@pytest.mark.rgw
def test_with_result_records_a_duplicate_is_answered_from_the_record(
    rgw: RgwGateway, modelserver: ModelServer, bucket: str
) -> None:
    put = upload(rgw, bucket, "r.jpg", photo_jpeg("chelsea"))
    with compliance_app(rgw, modelserver, RESULT_RECORDS="true") as app:
        first, again = post(app, event_for(bucket, "r.jpg", put), event_for(bucket, "r.jpg", put))
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.headers["ce-id"] == first.headers["ce-id"]
    assert (first.json()["recorded"], again.json()["recorded"]) == (False, True)
    assert again.json()["score"] == pytest.approx(first.json()["score"], abs=1e-4)
    assert set(tags_of(rgw, bucket, "r.jpg")) == {"rgwi:open_nsfw@1"}


@pytest.mark.rgw
def test_flagged_tags_merge_with_the_owners_and_the_copy_happens_once(
    rgw: RgwGateway, modelserver: ModelServer, bucket: str, quarantine: str
) -> None:
    put = upload(rgw, bucket, "a/b.jpg", photo_jpeg("chelsea"))
    # 8 tags of the owner, and the record the object's classifier wrote (so no wait for it).
    classifier = {**{f"owner-{n}": str(n) for n in range(8)}, **classifier_record(put)}
    rgw.s3_client().put_object_tagging(
        Bucket=bucket, Key="a/b.jpg", Tagging={"TagSet": tag_set(classifier)}
    )
    # Two deliveries of the one PUT under different ids (RGW's second notification, a
    # reconciliation): the runtime's id window would drop a copy with the same id itself.
    event, duplicate = event_for(bucket, "a/b.jpg", put), event_for(bucket, "a/b.jpg", put)
    with compliance_app(
        rgw, modelserver, COMPLIANCE_THRESHOLD="0", QUARANTINE_BUCKET=quarantine
    ) as app:
        first, again = post(app, event, duplicate)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    data, repeat = first.json(), again.json()
    assert data["flagged"] is True and data["threshold"] == 0.0
    assert data["quarantine"]["bucket"] == quarantine and data["quarantine"]["key"] == "a/b.jpg"
    # The duplicate: the same verdict (same id; RESULT_RECORDS is off here, so the model ran
    # again), and no second copy.
    assert again.headers["ce-id"] == first.headers["ce-id"] and repeat["recorded"] is False
    assert repeat["flagged"] is True and repeat["quarantine"]["bucket"] == quarantine
    assert len(versions(rgw, quarantine, "a/b.jpg")) == 1
    # 8 owner tags + the classifier's record + 2 compliance tags = 11 > 10: one owner tag made
    # room, the record stays.
    tags = tags_of(rgw, bucket, "a/b.jpg")
    assert len(tags) == 10 and tags["compliance"] == "flagged"
    assert float(tags["compliance-score"]) == pytest.approx(data["score"], abs=1e-4)
    assert "rgwi:mobilenet_v2@1" in tags and "rgwi:open_nsfw@1" not in tags
    assert sum(1 for k in tags if k.startswith("owner-")) == 7
    # The copy: same bytes, same tags; the original stays.
    copy = rgw.s3_client().get_object(Bucket=quarantine, Key="a/b.jpg")
    assert copy["Body"].read() == photo_jpeg("chelsea")
    assert tags_of(rgw, quarantine, "a/b.jpg") == tags
    assert rgw.s3_client().head_object(Bucket=bucket, Key="a/b.jpg")["ETag"] == put["ETag"]


@pytest.mark.rgw
def test_a_failed_copy_is_503_and_the_retry_completes_it(
    rgw: RgwGateway, modelserver: ModelServer, bucket: str, quarantine: str
) -> None:
    s3 = rgw.s3_client()
    put = upload(rgw, bucket, "x.jpg", photo_jpeg("chelsea"))
    event = event_for(bucket, "x.jpg", put)

    async def scenario(app: FastAPI) -> tuple[httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://f") as client:
                # The bucket existed at start-up, then went away: the copy fails.
                s3.put_bucket_versioning(
                    Bucket=quarantine, VersioningConfiguration={"Status": "Suspended"}
                )
                s3.delete_bucket(Bucket=quarantine)
                failed = await client.post("/", headers=event[0], content=event[1], timeout=60)
                s3.create_bucket(Bucket=quarantine)
                retried = await client.post("/", headers=event[0], content=event[1], timeout=60)
                return failed, retried

    with compliance_app(
        rgw,
        modelserver,
        COMPLIANCE_THRESHOLD="0",
        QUARANTINE_BUCKET=quarantine,
        COMPLIANCE_TAG_WAIT="0",  # no classifier here
    ) as app:
        failed, retried = asyncio.run(scenario(app))
    assert failed.status_code == 503, failed.text
    assert "the original stays in place" in failed.json()["message"]
    assert retried.status_code == 200, retried.text
    assert retried.json()["quarantine"]["bucket"] == quarantine
    assert s3.get_object(Bucket=quarantine, Key="x.jpg")["Body"].read() == photo_jpeg("chelsea")
    assert s3.head_object(Bucket=bucket, Key="x.jpg")["ETag"] == put["ETag"]


@pytest.mark.rgw
def test_the_original_version_is_removed_and_a_redelivery_still_gets_the_verdict(
    rgw: RgwGateway, modelserver: ModelServer, bucket: str, quarantine: str
) -> None:
    s3 = rgw.s3_client()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put = upload(rgw, bucket, "v.jpg", photo_jpeg("chelsea"))
    event, redelivery = event_for(bucket, "v.jpg", put), event_for(bucket, "v.jpg", put)
    with compliance_app(
        rgw,
        modelserver,
        COMPLIANCE_THRESHOLD="0",
        QUARANTINE_BUCKET=quarantine,
        COMPLIANCE_REMOVE_ORIGINAL="true",
        COMPLIANCE_TAG_WAIT="0",  # no classifier here
    ) as app:
        first, again = post(app, event, redelivery)
    assert first.status_code == 200, first.text
    assert first.json()["original_removed"] is True
    # That version is gone (deleted itself: no delete marker left behind).
    assert versions(rgw, bucket, "v.jpg") == []
    assert s3.list_object_versions(Bucket=bucket).get("DeleteMarkers", []) == []
    assert s3.get_object(Bucket=quarantine, Key="v.jpg")["Body"].read() == photo_jpeg("chelsea")
    # The redelivery finds the version gone, and its verdict on the quarantined copy.
    assert again.status_code == 200, again.text
    assert again.headers["ce-id"] == first.headers["ce-id"]
    assert again.json()["recorded"] is True and again.json()["original_removed"] is True


@pytest.mark.rgw
@pytest.mark.parametrize("wait", ["10", "0"])
def test_the_flag_survives_the_classifiers_late_tag_write(
    rgw: RgwGateway, modelserver: ModelServer, bucket: str, wait: str
) -> None:
    """The classifier gets the same event at the same time, reads the tags first and writes the
    whole set back with its record at the end (resnet, vision). Tagged before that write, the
    flag would be lost; so the compliance function waits for the record (COMPLIANCE_TAG_WAIT).
    With 0 it does not wait: that run shows what the wait prevents."""
    s3 = rgw.s3_client()
    put = upload(rgw, bucket, "late.jpg", photo_jpeg("chelsea"))
    read_at_start = tags_of(rgw, bucket, "late.jpg")  # what the classifier read: nothing yet

    async def scenario(app: FastAPI) -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://f") as client:
                headers, body = event_for(bucket, "late.jpg", put)
                answer = asyncio.create_task(client.post("/", headers=headers, content=body))
                await asyncio.sleep(1.0)  # the classifier's download and Predict
                written = {**read_at_start, **classifier_record(put)}
                await asyncio.to_thread(
                    s3.put_object_tagging,
                    Bucket=bucket,
                    Key="late.jpg",
                    Tagging={"TagSet": tag_set(written)},
                )
                return await answer

    with compliance_app(
        rgw, modelserver, COMPLIANCE_THRESHOLD="0", COMPLIANCE_TAG_WAIT=wait
    ) as app:
        answer = asyncio.run(scenario(app))
    assert answer.status_code == 200 and answer.json()["flagged"] is True, answer.text
    tags = tags_of(rgw, bucket, "late.jpg")
    assert "rgwi:mobilenet_v2@1" in tags
    if wait == "0":
        assert "compliance" not in tags  # lost to the classifier's write
    else:
        assert tags["compliance"] == "flagged"


@pytest.mark.rgw
def test_a_missing_quarantine_bucket_stops_the_start(
    rgw: RgwGateway, modelserver: ModelServer
) -> None:
    with (
        compliance_app(rgw, modelserver, QUARANTINE_BUCKET="no-such-quarantine") as app,
        pytest.raises(ConfigError, match="QUARANTINE_BUCKET=no-such-quarantine"),
    ):
        post(app, binary_event("photos", "a.jpg"))


@pytest.mark.rgw
def test_a_request_that_is_not_a_cloudevent_gets_400(
    rgw: RgwGateway, modelserver: ModelServer
) -> None:
    with compliance_app(rgw, modelserver) as app:
        [answer] = post(app, ({"content-type": "application/json"}, b"{}"))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid-cloudevent"


@pytest.mark.rgw
def test_the_store_copies_and_deletes_only_the_judged_content(
    rgw: RgwGateway, bucket: str, quarantine: str
) -> None:
    """common/s3.py's pinned writes, against RGW: an ETag the object no longer has is `Stale`
    (412 from If-Match), never a copy or a delete of other content. (RGW 16.2 ignores S3's
    copy condition header: this fails unless its own name is sent too.)"""
    store = ObjectStore(S3Settings.from_env(rgw.env()))
    put = upload(rgw, bucket, "p.jpg", b"judged bytes")
    obj = ObjectEvent(bucket, "p.jpg", "ObjectCreated:Put", "e1")
    other = "0" * 32
    with pytest.raises(Stale):
        store.copy_version(obj, other, quarantine)
    with pytest.raises(Stale):
        store.delete_version(obj, other)
    assert store.head_etag(quarantine, "p.jpg") is None
    etag = str(put["ETag"]).strip('"')
    store.copy_version(obj, etag, quarantine)
    assert store.head_etag(quarantine, "p.jpg") == etag
    store.delete_version(obj, etag)
    assert store.head_etag(bucket, "p.jpg") is None
    with pytest.raises(ObjectGone):
        store.require_bucket("no-such-bucket-here")


@pytest.mark.rgw
def test_merging_tags_makes_room_from_the_owners_tags_first(rgw: RgwGateway, bucket: str) -> None:
    s3 = rgw.s3_client()
    upload(rgw, bucket, "t.jpg", b"x")
    obj = ObjectEvent(bucket, "t.jpg", "ObjectCreated:Put", "e1")
    tags = {"rgwi:a@1": "e:1", **{f"o{n}": str(n) for n in range(8)}, "rgwi:b@1": "e:2"}
    s3.put_object_tagging(Bucket=bucket, Key="t.jpg", Tagging={"TagSet": tag_set(tags)})
    store = ObjectStore(S3Settings.from_env(rgw.env()))
    written = store.merge_tags(obj, {"compliance": "flagged", "o3": "new"}, keep="rgwi:")
    assert tags_of(rgw, bucket, "t.jpg") == written
    # 10 tags + 1 new = 11: the first owner tag (o0) goes; o3 is overwritten, not dropped.
    assert set(written) == {"rgwi:a@1", "rgwi:b@1", "compliance", *(f"o{n}" for n in range(1, 8))}
    assert written["o3"] == "new"
