"""What `make up` (`rgw-inference up`, or the demo with --keep-running) prints once the stack
is up: how to upload your own photos, curl each function, and where the page and the model
server are."""

from __future__ import annotations

from typing import IO

from localknative.launch import Endpoints
from localknative.parts import BUCKET, RESNET_MODEL


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
    for name, url in endpoints.functions.items():
        lines += [
            "",
            f"  curl -i {url}/ -H 'ce-specversion: 1.0' -H 'ce-id: manual-{name}-1' \\",
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
