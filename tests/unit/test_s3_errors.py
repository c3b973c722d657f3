"""RGW's error answers mapped to the runtime's permanent/transient errors."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from common.errors import Forbidden, ObjectGone, PermanentError, TransientError
from common.s3 import _map_client_error


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": ""},
            "ResponseMetadata": {
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "HostId": "",
                "RequestId": "",
                "RetryAttempts": 0,
            },
        },
        "PutObjectTagging",
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectGone),
        ("AccessDenied", 403, Forbidden),
        ("InvalidArgument", 400, PermanentError),
        ("InternalError", 500, TransientError),
        ("SlowDown", 503, TransientError),
        # Two writes of one object's tags at once: RGW answers 409, the retry succeeds.
        ("OperationAborted", 409, TransientError),
    ],
)
def test_client_errors_map_to_retryable_or_permanent(
    code: str, status: int, expected: type[Exception]
) -> None:
    error = _map_client_error(client_error(code, status), "s3://b/k")
    assert type(error) is expected
