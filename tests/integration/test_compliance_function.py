"""The compliance function as a process: real photos in a real RGW bucket, real CloudEvents over
HTTP, real gRPC to the real model server serving open_nsfw; beside it the resnet function and
the receiver, for the status codes and the audit trail it must share with them."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from functions.compliance.verdict import VERDICT_EVENT_TYPE
from testkit.processes import python_argv
from testkit.samples import photo_jpeg, png_bomb
from testkit.services import running_function
from tests.fixtures.modelserver import ModelServer
from tests.fixtures.processes import free_port
from tests.fixtures.resnet import FunctionFactory, RunningFunction
from tests.fixtures.rgw import RgwGateway, empty_and_delete_bucket
from tests.functions.test_compliance import event_for as pushed_event
from tests.functions.test_compliance import tags_of

pytestmark = pytest.mark.rgw

ComplianceFactory = Callable[..., RunningFunction]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def compliance_function(
    rgw: RgwGateway, modelserver: ModelServer, log_dir: Path
) -> Iterator[ComplianceFactory]:
    """`compliance_function(**env)`: `python -m functions.compliance` on a free port, pointed at
    the session's RGW and model server (MODEL_NAME left to the function's default)."""
    with ExitStack() as stack:

        def start(wait_ready: bool = True, **env: str) -> RunningFunction:
            settings = {
                **rgw.env(),
                "RESNET_SERVING_ENDPOINT": modelserver.grpc_target,
                "MODEL_TIMEOUT": "20",
                "LOG_LEVEL": "INFO",
                **env,
            }
            health = "readiness" if wait_ready else "liveness"
            started = stack.enter_context(running_function(log_dir, "compliance", settings, health))
            return RunningFunction(started.process, started.port, started.env)

        yield start


@pytest.fixture
def quarantine(rgw: RgwGateway) -> Iterator[str]:
    s3 = rgw.s3_client()
    name = rgw.unique_name("quarantine")
    s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete_bucket(s3, name)


def put_and_post(
    function: RunningFunction, rgw: RgwGateway, bucket: str, key: str, body: bytes
) -> httpx.Response:
    """Upload, then deliver the CloudEvent RGW's push makes of it, with a known traceparent."""
    put = rgw.s3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
    return post_event(function.url, event_for(bucket, key, put))


def event_for(bucket: str, key: str, put: Any) -> tuple[dict[str, str], bytes]:
    """The in-process tests' event for that PUT, with a known traceparent."""
    headers, body = pushed_event(bucket, key, put)
    headers["ce-traceparent"] = TRACEPARENT
    return headers, body


def post_event(url: str, event: tuple[dict[str, str], bytes]) -> httpx.Response:
    return httpx.post(url + "/", headers=event[0], content=event[1], timeout=60.0)


def verdict_lines(function: RunningFunction, key: str) -> list[dict[str, Any]]:
    return [
        line
        for line in function.log_lines()
        if line.get("logger") == "compliance" and line.get("key") == key
    ]


def test_a_real_photo_is_not_flagged_and_the_verdict_shares_the_receivers_trace(
    rgw: RgwGateway, bucket: str, compliance_function: ComplianceFactory, log_dir: Path
) -> None:
    function = compliance_function()
    put = rgw.s3_client().put_object(Bucket=bucket, Key="cat.jpg", Body=photo_jpeg("chelsea"))
    event = event_for(bucket, "cat.jpg", put)
    answer = post_event(function.url, event)
    assert answer.status_code == 200, answer.text
    assert answer.headers["ce-type"] == VERDICT_EVENT_TYPE
    assert answer.headers["ce-subject"] == "cat.jpg"
    data = answer.json()
    assert data["flagged"] is False and 0.0 <= data["score"] < 0.8
    assert (data["bucket"], data["key"], data["threshold"]) == (bucket, "cat.jpg", 0.8)
    assert data["model_id"] == "open_nsfw@1" and data["trace_id"] == TRACE_ID
    # The reply continues the incoming trace: same trace id, a new span.
    assert answer.headers["ce-traceparent"].split("-")[1] == TRACE_ID
    [line] = verdict_lines(function, "cat.jpg")
    assert line["trace_id"] == TRACE_ID and line["flagged"] is False
    assert line["score"] == pytest.approx(data["score"], abs=1e-6)
    assert "compliance" not in tags_of(rgw, bucket, "cat.jpg")

    # The audit trail: the receiver's line for the same event carries the same trace id.
    with running_function(log_dir, "receiver", {"LOG_LEVEL": "INFO"}) as receiver:
        assert post_event(f"http://127.0.0.1:{receiver.port}", event).status_code == 200
        [audit] = [
            entry
            for entry in receiver.log_lines()
            if entry.get("logger") == "receiver" and entry.get("key") == "cat.jpg"
        ]
    assert audit["trace_id"] == line["trace_id"] == TRACE_ID


def test_threshold_0_flags_tags_in_place_and_copies_to_quarantine(
    rgw: RgwGateway, bucket: str, quarantine: str, compliance_function: ComplianceFactory
) -> None:
    function = compliance_function(
        COMPLIANCE_THRESHOLD="0", QUARANTINE_BUCKET=quarantine, COMPLIANCE_TAG_WAIT="0"
    )
    body = photo_jpeg("chelsea")
    answer = put_and_post(function, rgw, bucket, "in/cat.jpg", body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["flagged"] is True and data["threshold"] == 0.0
    assert data["quarantine"] == {"bucket": quarantine, "key": "in/cat.jpg", "version_id": None}
    s3 = rgw.s3_client()
    assert s3.get_object(Bucket=quarantine, Key="in/cat.jpg")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="in/cat.jpg")["Body"].read() == body  # still there
    tags = tags_of(rgw, bucket, "in/cat.jpg")
    assert tags["compliance"] == "flagged"
    assert float(tags["compliance-score"]) == pytest.approx(data["score"], abs=1e-4)
    assert not [k for k in tags if k.startswith("rgwi:")]  # RESULT_RECORDS: off by default here
    [line] = verdict_lines(function, "in/cat.jpg")
    assert line["flagged"] is True and line["quarantine_bucket"] == quarantine
    assert line["trace_id"] == TRACE_ID


def test_remove_original_leaves_only_the_quarantined_copy(
    rgw: RgwGateway, bucket: str, quarantine: str, compliance_function: ComplianceFactory
) -> None:
    function = compliance_function(
        COMPLIANCE_THRESHOLD="0",
        QUARANTINE_BUCKET=quarantine,
        COMPLIANCE_REMOVE_ORIGINAL="true",
        COMPLIANCE_TAG_WAIT="0",
    )
    body = photo_jpeg("coffee")
    answer = put_and_post(function, rgw, bucket, "cup.jpg", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["original_removed"] is True
    s3 = rgw.s3_client()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert s3.get_object(Bucket=quarantine, Key="cup.jpg")["Body"].read() == body
    assert tags_of(rgw, quarantine, "cup.jpg")["compliance"] == "flagged"


def test_bad_objects_get_the_same_statuses_as_resnet(
    rgw: RgwGateway,
    bucket: str,
    compliance_function: ComplianceFactory,
    resnet_function: FunctionFactory,
) -> None:
    compliance = compliance_function()
    resnet = resnet_function("mobilenet_v2")
    cases = [
        ("notes.jpg", b"this is a text file, not a JPEG\n" * 20, 415),
        ("bomb.png", png_bomb(28000), 413),
    ]
    for key, body, status in cases:
        answers = [put_and_post(f, rgw, bucket, key, body) for f in (compliance, resnet)]
        assert [a.status_code for a in answers] == [status, status], [a.text for a in answers]
    missing = [f.post_object_event(bucket, "never.jpg") for f in (compliance, resnet)]
    assert [a.status_code for a in missing] == [410, 410]
    assert compliance.readiness().status_code == 200  # and it carries on


def test_model_server_down_is_503_like_resnet(
    rgw: RgwGateway,
    bucket: str,
    compliance_function: ComplianceFactory,
    resnet_function: FunctionFactory,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    compliance = compliance_function(
        wait_ready=False, RESNET_SERVING_ENDPOINT=nowhere, MODEL_TIMEOUT="2"
    )
    resnet = resnet_function(
        "mobilenet_v2", serving_endpoint=nowhere, wait_ready=False, MODEL_TIMEOUT="2"
    )
    assert compliance.readiness().status_code == resnet.readiness().status_code == 503
    answers = [
        put_and_post(f, rgw, bucket, "cat.jpg", photo_jpeg("chelsea")) for f in (compliance, resnet)
    ]
    assert [a.status_code for a in answers] == [503, 503], [a.text for a in answers]
    assert nowhere in answers[0].json()["message"]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"COMPLIANCE_THRESHOLD": "2"}, "COMPLIANCE_THRESHOLD: expected a number from 0 to 1"),
        ({"COMPLIANCE_REMOVE_ORIGINAL": "true"}, "needs QUARANTINE_BUCKET"),
        ({"QUARANTINE_BUCKET": "no-such-quarantine-bucket"}, "QUARANTINE_BUCKET="),
    ],
)
def test_a_bad_configuration_stops_the_process(
    rgw: RgwGateway, modelserver: ModelServer, env: dict[str, str], says: str
) -> None:
    settings = {
        **rgw.env(),
        "RESNET_SERVING_ENDPOINT": modelserver.grpc_target,
        "PORT": str(free_port()),
        **env,
    }
    done = subprocess.run(
        python_argv("-m", "functions.compliance"),
        env={"PATH": "/usr/bin:/bin", **settings},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert says in done.stdout + done.stderr


DOC = Path(__file__).resolve().parents[2] / "docs" / "compliance.md"


def doc_block(language: str, containing: str) -> str:
    """The docs' fenced code block of `language` that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)
    [block] = [b for b in blocks if containing in b]
    return str(block)


def test_the_docs_ways_to_find_flagged_objects_work(
    rgw: RgwGateway, bucket: str, compliance_function: ComplianceFactory, tmp_path: Path
) -> None:
    """docs/compliance.md, "Finding every flagged object of a bucket": its boto3 function, its
    jq and grep lines, run as printed (bucket name and log file swapped in)."""
    s3 = rgw.s3_client()
    judged = compliance_function(COMPLIANCE_THRESHOLD="0.5")
    both = compliance_function(COMPLIANCE_THRESHOLD="0", COMPLIANCE_TAG_WAIT="0")
    for function, key in ((judged, "kept.jpg"), (both, "flagged.jpg")):
        answer = put_and_post(function, rgw, bucket, key, photo_jpeg("chelsea"))
        assert answer.status_code == 200, answer.text
    s3.put_object(Bucket=bucket, Key="untouched.txt", Body=b"never judged")

    namespace: dict[str, Any] = {}
    exec(doc_block("python", "def flagged_objects"), namespace)  # the docs' code, as printed
    found = list(namespace["flagged_objects"](s3, bucket))
    assert [key for key, _ in found] == ["flagged.jpg"]
    assert 0.0 <= found[0][1] < 0.5

    # The two functions' logs as the one log file the docs name, in a scratch directory.
    text = "".join(f.process.log_path.read_text() for f in (judged, both))
    (tmp_path / "compliance.log").write_text(text)
    script = doc_block("sh", "jq -c 'select(.logger").replace('"photos"', f'"{bucket}"')
    done = subprocess.run(
        ["bash", "-c", f"set -eo pipefail\n{script}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, (script, done.stderr)
    # One line from jq, one from the grep pipeline: the flagged object, nothing else.
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [entry["key"] for entry in entries] == ["flagged.jpg", "flagged.jpg"], done.stdout
    assert entries[0]["score"] == pytest.approx(found[0][1], abs=1e-4)
