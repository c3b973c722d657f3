"""RGW's pushes to the source's HTTP adapter, authenticated by the push secret, on real RGW.

One secret (SOURCE_PUSH_SECRET) configures both ends: the source's set-up gives RGW the push
endpoint with the secret as its last path segment, and the adapter refuses (401, counted, never
forwarded) a push whose path lacks it. Runs on Ceph 16.2 by default and on 18.2 under
`make test-ceph18` (CEPH18_TESTS names tests/integration/test_source_*.py).

Each test here has its own listening socket and its own topic: a source that refuses pushes must
never serve the session's shared listener, where another test's queued entries may arrive (a
persistent topic re-pushes a refused entry at once, in a tight loop, on RGW 16.2).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from source.push_auth import PushAuth
from testkit.processes import loopback_listener
from testkit.rgw import PARKED_ENDPOINT, RgwCluster
from testkit.sink import Recorder, start_recorder
from tests.fixtures.rgw import RgwGateway
from tests.fixtures.source import cloudevents_in, running_source, wait_for_subjects

pytestmark = pytest.mark.rgw

REPO = Path(__file__).resolve().parents[2]
UNAUTHENTICATED = "source_pushes_unauthenticated_total"
# A record as RGW 16.2 pushes it: a forged push needs nothing more to look real.
FORGED_BODY = json.dumps(
    {
        "Records": [
            {
                "eventVersion": "2.2",
                "eventSource": "ceph:s3",
                "awsRegion": "",
                "eventTime": "2026-12-01T10:00:00.000000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "forged"},
                    "object": {"key": "forged.jpg", "size": 1, "eTag": "x", "sequencer": "1"},
                },
            }
        ]
    }
).encode()


def metric(source_url: str, name: str) -> float:
    for line in httpx.get(f"{source_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for_metric(source_url: str, name: str, value: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(source_url, name) < value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} stayed at {metric(source_url, name)}, wanted {value}")
        time.sleep(0.1)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = loopback_listener()
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def push_secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def own_topic(rgw: RgwGateway) -> Iterator[str]:
    """A persistent topic of this test's own, parked again afterwards (nothing listens there,
    and its queue is empty by then)."""
    topic = rgw.claim_persistent_topic()
    yield topic
    rgw.sns_client().create_topic(
        Name=topic, Attributes={"push-endpoint": PARKED_ENDPOINT, "persistent": "true"}
    )


def test_rgw_push_with_the_secret_is_forwarded(
    rgw: RgwGateway,
    source_bucket: str,
    own_topic: str,
    listener: socket.socket,
    push_secret: str,
    log_dir: Path,
    recorder: Recorder,
) -> None:
    env = {**rgw.env(), "SOURCE_PUSH_SECRET": push_secret}
    args = ["--setup-bucket", source_bucket, "--topic", own_topic, "--deadline", "2"]
    with running_source(log_dir, "http", recorder.url("/"), env, args, listener=listener) as src:
        rgw.s3_client().put_object(Bucket=source_bucket, Key="signed.jpg", Body=b"x")
        [event] = wait_for_subjects(recorder, {"signed.jpg"}, bucket=source_bucket)
        assert metric(src.url(""), UNAUTHENTICATED) == 0
        log = src.process.log_path.read_text()
    assert event.data["s3"]["object"]["key"] == "signed.jpg"
    # RGW was given the endpoint with the secret as its last path segment...
    attributes = rgw.sns_client().get_topic_attributes(TopicArn=rgw.topic_arn(own_topic))
    address = json.loads(attributes["Attributes"]["EndPoint"])["EndpointAddress"]
    assert address.rstrip("/").endswith(f"/{push_secret}")
    # ... and the source's log (set-up line included) never shows it.
    assert push_secret not in log
    assert "***" in log


def test_forged_push_without_the_secret_is_refused_counted_and_not_forwarded(
    listener: socket.socket, push_secret: str, log_dir: Path, recorder: Recorder
) -> None:
    env = {"SOURCE_PUSH_SECRET": push_secret}
    with running_source(log_dir, "http", recorder.url("/"), env, listener=listener) as src:
        for path in ("/", "/not-the-secret-but-just-as-long-0123456789", f"/{push_secret}x"):
            answer = httpx.post(src.url(path), content=FORGED_BODY, timeout=10)
            assert answer.status_code == 401, (path, answer.text)
        assert metric(src.url(""), UNAUTHENTICATED) == 3
        # RGW's other way to carry it, user:password@ in the endpoint, arrives as Basic auth.
        wrong = httpx.BasicAuth("rgw", "not-the-secret-but-just-as-long-0123456789")
        answer = httpx.post(src.url("/"), content=FORGED_BODY, auth=wrong, timeout=10)
        assert answer.status_code == 401
        assert metric(src.url(""), UNAUTHENTICATED) == 4
        assert metric(src.url(""), 'source_events_received_total{way="http"}') == 0
        # The same body with the secret goes through: the refusals were the secret's doing.
        answer = httpx.post(src.url(f"/{push_secret}"), content=FORGED_BODY, timeout=10)
        assert answer.status_code == 200
        basic = httpx.BasicAuth("rgw", push_secret)
        answer = httpx.post(src.url("/"), content=FORGED_BODY, auth=basic, timeout=10)
        assert answer.status_code == 200
        log = src.process.log_path.read_text()
    forwarded = cloudevents_in(recorder)
    assert [event.subject for event in forwarded] == ["forged.jpg", "forged.jpg"]
    assert push_secret not in log


def test_rgw_push_without_the_secret_is_refused_and_dropped(
    rgw: RgwGateway,
    source_bucket: str,
    listener: socket.socket,
    push_secret: str,
    log_dir: Path,
    recorder: Recorder,
) -> None:
    """A topic that lacks the secret (set up by hand, or before the source had one): RGW's push
    is refused and counted, and nothing reaches the sink. The topic is not persistent, so RGW
    pushes inside the PUT, once, and drops the event (a persistent one would keep re-pushing)."""
    topic = rgw.unique_name("unsigned")
    port = listener.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "cli",
        "notifications",
        "setup",
        "--bucket",
        source_bucket,
        "--topic",
        topic,
        "--endpoint",
        f"http://127.0.0.1:{port}/",
        "--without-push-secret",
    ]
    child_env = {**os.environ, **rgw.env(), "SOURCE_PUSH_SECRET": push_secret}
    done = subprocess.run(
        command, cwd=REPO, env=child_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    try:
        env = {"SOURCE_PUSH_SECRET": push_secret}
        with running_source(log_dir, "http", recorder.url("/"), env, listener=listener) as src:
            rgw.s3_client().put_object(Bucket=source_bucket, Key="unsigned.jpg", Body=b"x")
            wait_for_metric(src.url(""), UNAUTHENTICATED, 1)
            assert metric(src.url(""), 'source_events_received_total{way="http"}') == 0
        assert recorder.requests() == []
        # `notifications show` prints the topic without the secret (here it has none) and
        # never the variable's value.
        shown = subprocess.run(
            [sys.executable, "-m", "cli", "notifications", "show", "--bucket", source_bucket],
            cwd=REPO,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert push_secret not in shown.stdout
    finally:
        rgw.sns_client().delete_topic(TopicArn=rgw.topic_arn(topic))


def test_a_rotation_in_order_loses_nothing_and_refuses_nothing(
    rgw: RgwGateway,
    source_bucket: str,
    own_topic: str,
    listener: socket.socket,
    log_dir: Path,
    recorder: Recorder,
) -> None:
    """The order docs/source.md gives: the new source accepts the new secret and the previous one,
    then its set-up re-points the topic. An entry RGW queued under the old secret while no source
    ran, and an upload after the re-pointing, both arrive; no push is refused (a refused push
    from RGW itself would be re-pushed at once, in a storm that can hang the queue)."""
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    args = ["--setup-bucket", source_bucket, "--topic", own_topic, "--deadline", "2"]
    s3 = rgw.s3_client()
    env = {**rgw.env(), "SOURCE_PUSH_SECRET": old}
    with running_source(log_dir, "http", recorder.url("/"), env, args, listener=listener):
        s3.put_object(Bucket=source_bucket, Key="before.jpg", Body=b"x")
        wait_for_subjects(recorder, {"before.jpg"}, bucket=source_bucket)
    # No source now; the held listener keeps RGW's push of this one waiting in its backlog.
    s3.put_object(Bucket=source_bucket, Key="queued.jpg", Body=b"x")
    env = {**env, "SOURCE_PUSH_SECRET": new, "SOURCE_PUSH_SECRET_PREVIOUS": old}
    with running_source(log_dir, "http", recorder.url("/"), env, args, listener=listener) as src:
        s3.put_object(Bucket=source_bucket, Key="after.jpg", Body=b"x")
        wanted = {"before.jpg", "queued.jpg", "after.jpg"}
        wait_for_subjects(recorder, wanted, bucket=source_bucket, rgw=rgw)
        assert metric(src.url(""), UNAUTHENTICATED) == 0
    attributes = rgw.sns_client().get_topic_attributes(TopicArn=rgw.topic_arn(own_topic))
    address = json.loads(attributes["Attributes"]["EndPoint"])["EndpointAddress"]
    assert address.endswith(f"/{new}")


def test_notifications_setup_appends_the_secret_and_show_hides_it(
    rgw: RgwGateway, source_bucket: str, push_secret: str
) -> None:
    topic = rgw.unique_name("signed-cli")
    child_env = {**os.environ, **rgw.env(), "SOURCE_PUSH_SECRET": push_secret}
    base = [sys.executable, "-m", "cli", "notifications"]
    setup = [
        *base,
        "setup",
        "--bucket",
        source_bucket,
        "--topic",
        topic,
        "--endpoint",
        "http://rgw-source.rgw-inference.svc.cluster.local/",
    ]
    try:
        done = subprocess.run(setup, cwd=REPO, env=child_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert push_secret not in done.stdout + done.stderr
        attributes = rgw.sns_client().get_topic_attributes(TopicArn=rgw.topic_arn(topic))
        address = json.loads(attributes["Attributes"]["EndPoint"])["EndpointAddress"]
        assert address == f"http://rgw-source.rgw-inference.svc.cluster.local/{push_secret}"
        shown = subprocess.run(
            [*base, "show", "--bucket", source_bucket],
            cwd=REPO,
            env=child_env,
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0, shown.stderr
        assert push_secret not in shown.stdout
        assert "rgw-source.rgw-inference.svc.cluster.local/***" in shown.stdout
    finally:
        rgw.sns_client().delete_topic(TopicArn=rgw.topic_arn(topic))


def test_knatives_token_goes_to_the_sink_and_nowhere_else(tmp_path: Path, log_dir: Path) -> None:
    """With authentication-oidc, Knative mounts the source's token at /oidc/token; the source
    sends it to K_SINK (re-read when Knative renews it), never to the dead-letter URL."""
    token_file = tmp_path / "token"
    token_file.write_text("first.jwt.token\n")
    with (
        start_recorder(log_dir, "refusing-sink", status=400) as sink,
        start_recorder(log_dir, "dead-letters") as dead_letters,
    ):
        env = {"SOURCE_OIDC_TOKEN_FILE": str(token_file), "DEAD_LETTER_URL": dead_letters.url("/")}
        with running_source(log_dir, "http", sink.url("/"), env) as src:
            assert httpx.post(src.url("/"), content=FORGED_BODY, timeout=10).status_code == 200
            token_file.write_text("second.jwt.token")
            assert httpx.post(src.url("/"), content=FORGED_BODY, timeout=10).status_code == 200
        tokens = [request.header("authorization") for request in sink.requests()]
        parked = dead_letters.wait_for(2)
    assert tokens == ["Bearer first.jwt.token", "Bearer second.jwt.token"]
    assert [request.header("authorization") for request in parked] == [None, None]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_rgw_takes_credentials_in_an_endpoint_only_over_a_tls_api(
    rgw: RgwGateway, scheme: str
) -> None:
    """Why the secret is not user:password@ in the endpoint: RGW (16.2, and 18.2 unless
    rgw_allow_notification_secrets_in_cleartext) refuses a topic with credentials when the
    CreateTopic request itself arrives over plain HTTP, whatever the endpoint's scheme."""
    with pytest.raises(ClientError):
        rgw.sns_client().create_topic(
            Name=rgw.unique_name("with-credentials"),
            Attributes={"push-endpoint": f"{scheme}://user:pass@127.0.0.1:9/"},
        )


def make_ca_and_server_cert(where: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 it signed, made with openssl (ca.pem, cert, key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    key = ["-newkey", "rsa:2048", "-nodes", "-days", "2"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test CA")
    key.remove("-days")
    key.remove("2")
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    signed = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
    openssl(
        "x509", "-req", "-in", "server.csr", *signed, "-out", "server.pem", "-extfile", "san.ext"
    )
    return where / "ca.pem", where / "server.pem", where / "server.key"


@contextlib.contextmanager
def https_sink(cert: Path, key: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTPS endpoint answering 200 to every POST; yields its URL and the ce-ids it got."""
    received: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            received.append(self.headers.get("ce-id") or "")
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", received
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_sink_is_trusted_through_k_ca_certs(tmp_path: Path, log_dir: Path) -> None:
    """transport-encryption: the SinkBinding hands the source Eventing's CA in K_CA_CERTS."""
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    with https_sink(cert, key) as (url, received):
        with running_source(log_dir, "http", url, {"K_CA_CERTS": ca.read_text()}) as src:
            assert httpx.post(src.url("/"), content=FORGED_BODY, timeout=30).status_code == 200
        assert len(received) == 1
        # Without the CA the same sink is not trusted: the push is handed back (503), not sent.
        env = {"DELIVERY_DEADLINE": "0.5"}
        with running_source(log_dir, "http", url, env) as src:
            assert httpx.post(src.url("/"), content=FORGED_BODY, timeout=30).status_code == 503
        assert len(received) == 1


@pytest.fixture
def rgw_behind_tls_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RgwGateway]:
    """A second RGW that trusts X-Forwarded-Proto (rgw_trust_forwarded_https), as one behind a
    TLS-terminating proxy does: its API then counts a request carrying the header as TLS."""
    monkeypatch.setenv("RGW_EXTRA_CONF", "rgw_trust_forwarded_https = true")
    cluster = RgwCluster(tmp_path / "rgw-tls", memstore_bytes=512 << 20)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def test_rgw_sends_endpoint_credentials_as_basic_auth_which_the_adapter_takes(
    rgw_behind_tls_proxy: RgwGateway,
    listener: socket.socket,
    push_secret: str,
    log_dir: Path,
    recorder: Recorder,
) -> None:
    """RGW's other way to authenticate a push: `user:password@` in the endpoint, sent as
    `Authorization: Basic`. RGW stores such a topic only over TLS; then the adapter takes the
    push secret as the password."""
    gateway = rgw_behind_tls_proxy
    s3, sns = gateway.s3_client(), gateway.sns_client()
    sns.meta.events.register(
        "before-sign.sns.*",
        lambda request, **_: request.headers.__setitem__("X-Forwarded-Proto", "https"),
    )
    bucket, topic = gateway.unique_name("basic"), gateway.unique_name("basic")
    s3.create_bucket(Bucket=bucket)
    port = listener.getsockname()[1]
    endpoint = f"http://rgw:{push_secret}@127.0.0.1:{port}/"
    arn = sns.create_topic(Name=topic, Attributes={"push-endpoint": endpoint})["TopicArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {"Id": topic, "TopicArn": arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    env = {"SOURCE_PUSH_SECRET": push_secret}
    with running_source(log_dir, "http", recorder.url("/"), env, listener=listener) as src:
        s3.put_object(Bucket=bucket, Key="basic.jpg", Body=b"x")
        wait_for_subjects(recorder, {"basic.jpg"}, bucket=bucket)
        assert metric(src.url(""), UNAUTHENTICATED) == 0
    # RGW keeps such a topic to itself over plain HTTP.
    with pytest.raises(ClientError):
        gateway.sns_client().get_topic_attributes(TopicArn=arn)


# --- the secret itself, no RGW needed -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "accepted"),
    [
        ("/SECRET", True),
        ("/push/SECRET", True),
        ("/SECRET/", True),
        ("/", False),
        ("/SECRETx", False),
        ("/xSECRET", False),
        ("/SECRET/more", False),
        ("/OLD", True),
        ("/other", False),
    ],
)
def test_the_path_must_end_in_an_accepted_secret(path: str, accepted: bool) -> None:
    secret, old = "s" * 24 + "-current", "o" * 24 + "-previous"
    auth = PushAuth(secret, old)
    assert auth.accepts(path.replace("SECRET", secret).replace("OLD", old)) is accepted


@pytest.mark.parametrize("bad", ["short", "has space in it 0123456789abc", "slash/" * 5, "é" * 30])
def test_a_secret_that_is_not_a_plain_path_segment_is_refused_without_being_shown(
    bad: str,
) -> None:
    with pytest.raises(ValueError) as raised:
        PushAuth(bad)
    assert bad not in str(raised.value)


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        (None, False),
        ("Basic " + base64.b64encode(b"rgw:" + b"s" * 24).decode(), True),
        ("basic " + base64.b64encode(b"any-user:" + b"s" * 24).decode(), True),
        ("Basic " + base64.b64encode(b"rgw:" + b"s" * 23).decode(), False),
        ("Basic " + base64.b64encode(b"s" * 24).decode(), False),  # no user:password form
        ("Bearer " + "s" * 24, False),
        ("Basic not base64!", False),
    ],
)
def test_the_secret_as_a_basic_password(authorization: str | None, accepted: bool) -> None:
    assert PushAuth("s" * 24).accepts_request("/", authorization) is accepted


def test_the_endpoint_gets_the_secret_as_its_last_segment() -> None:
    auth = PushAuth("k" * 32)
    assert auth.endpoint("http://h:8080") == f"http://h:8080/{'k' * 32}"
    assert auth.endpoint("https://h/base/") == f"https://h/base/{'k' * 32}"
    assert auth.redact(f"at https://h/base/{'k' * 32}") == "at https://h/base/***"
