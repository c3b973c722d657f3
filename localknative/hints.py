"""What `make up` (`rgw-inference up`, or the demo with --keep-running) prints once the stack
is up: how to upload your own photos, curl each function, and where the page and the model
server are.

With `--auth` (the local issuer is up) every function the pipeline reaches wants a token: each of
its curl commands first asks the local issuer for one, for the function's audience and as one of
its senders, as Knative's dispatcher would, and sends it as `Authorization: Bearer`."""

from __future__ import annotations

from typing import IO

from localknative.launch import Endpoints
from localknative.parts import BUCKET, RESNET_MODEL

# Reads the token out of the issuer's answer with the Python every machine running `up` has.
TOKEN_FROM_JSON = "python3 -c 'import json, sys; print(json.load(sys.stdin)[\"token\"])'"


def token_command(issuer: str, subject: str, audience: str) -> list[str]:
    """Shell lines that set $TOKEN to a token of the local issuer for `audience`, as `subject`."""
    from localknative.issuer import TOKEN_PATH  # only with --auth: it loads PyJWT

    request = '{"sub": "' + subject + '", "aud": "' + audience + '"}'
    return [
        f"  TOKEN=$(curl -s {issuer}{TOKEN_PATH} -H 'content-type: application/json' \\",
        f"    -d '{request}' | {TOKEN_FROM_JSON})",
    ]


def print_usage_hints(out: IO[str], endpoints: Endpoints) -> None:
    rgw = endpoints.rgw
    env = (
        f"AWS_ACCESS_KEY_ID={rgw.access_key} AWS_SECRET_ACCESS_KEY={rgw.secret_key} "
        f"AWS_DEFAULT_REGION={rgw.region}"
    )
    record = (
        '{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","awsRegion":"default",'
        '"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"' + BUCKET + '"},'
        '"object":{"key":"chelsea.jpg"}}}]}'
    )
    lines = [
        "",
        "The stack keeps running. Upload your own photos and watch them here:",
        "",
        f"  {env} \\",
        f"    aws --endpoint-url {rgw.endpoint} s3 cp my-photo.jpg s3://{BUCKET}/",
        "",
        "  python - <<'EOF'",
        "  import boto3",
        f"  s3 = boto3.client('s3', endpoint_url='{rgw.endpoint}', region_name='{rgw.region}',",
        f"                    aws_access_key_id='{rgw.access_key}',",
        f"                    aws_secret_access_key='{rgw.secret_key}')",
        f"  s3.upload_file('my-photo.jpg', '{BUCKET}', 'my-photo.jpg')",
        "  EOF",
        "",
        "Send a CloudEvent straight to a function (it downloads the object from RGW):",
    ]
    if endpoints.issuer:
        lines += [
            f"(--auth: a function answers 401 without a token; these ask the local issuer "
            f"{endpoints.issuer}, local only, for one)",
        ]
    for name, url in endpoints.functions.items():
        lines.append("")
        audience, sender = endpoints.audiences.get(name), endpoints.senders.get(name)
        bearer = ""
        if endpoints.issuer and audience and sender:
            lines += token_command(endpoints.issuer, sender, audience)
            bearer = ' -H "Authorization: Bearer $TOKEN"'
        lines += [
            f"  curl -i {url}/{bearer} -H 'ce-specversion: 1.0' -H 'ce-id: manual-{name}-1' \\",
            "    -H 'ce-type: com.amazonaws.s3.ObjectCreated:Put' -H 'ce-source: /manual' \\",
            f"    -H 'content-type: application/json' -d '{record}'",
        ]
    lines += [
        "",
        f"or at the channel (fan-out, 50/50 split, retries): {endpoints.dispatcher}/",
        f"model server: TF Serving REST {endpoints.rest}/v1/models/{RESNET_MODEL}, "
        f"gRPC {endpoints.grpc}",
        "",
        *([f"results page: {endpoints.results_page}"] if endpoints.results_page else []),
        "",
        "Ctrl-C stops everything and removes the temporary files.",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()
