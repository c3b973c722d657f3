"""Errors a function raises, each mapped to the HTTP status Knative Eventing acts on.

Knative's dispatcher retries connection errors, 5xx and 404, 408, 409 and 429 (its
`SelectiveRetry`); every other 4xx goes straight to the dead-letter sink. So a permanent problem
must use a 4xx outside that list, and a transient one 503. The table in the README lists them.
"""

from __future__ import annotations


class EventError(Exception):
    """An event could not be handled. `status` is the HTTP answer, `code` a short tag."""

    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(EventError):
    """Retrying the same event cannot help: it goes to the dead-letter sink."""

    status = 422
    code = "unprocessable"


class InvalidCloudEvent(PermanentError):
    """Not a valid CloudEvent: missing attribute, bad JSON, unsupported content type."""

    status = 400
    code = "invalid-cloudevent"


class UnsupportedPayload(PermanentError):
    """A valid CloudEvent whose data is not an object notification we understand."""

    status = 422
    code = "unsupported-payload"


class TooLarge(PermanentError):
    """Over a configured limit: request body, records per event, object size, image pixels."""

    status = 413
    code = "too-large"


class NotAnImage(PermanentError):
    """The object is not an image we can decode (wrong type, truncated, corrupt)."""

    status = 415
    code = "not-an-image"


class Forbidden(PermanentError):
    """The event names a bucket this function may not read, or RGW refused access."""

    status = 403
    code = "forbidden"


class ObjectGone(PermanentError):
    """The object no longer exists (deleted before we read it): 410, as Knative retries 404."""

    status = 410
    code = "object-gone"


class TransientError(EventError):
    """A dependency is unreachable or timed out: answer 503 so the channel retries."""

    status = 503
    code = "unavailable"


STATUS_TABLE: tuple[tuple[type[EventError], str], ...] = (
    (
        InvalidCloudEvent,
        "not a CloudEvent: missing id/source/type/specversion, bad JSON, wrong content type",
    ),
    (UnsupportedPayload, "a CloudEvent whose data is no S3/RGW object notification"),
    (Forbidden, "a bucket outside ALLOWED_BUCKETS, or RGW denies access"),
    (ObjectGone, "the object was deleted before the function read it"),
    (
        TooLarge,
        "over MAX_EVENT_BYTES, MAX_RECORDS_PER_EVENT, S3_MAX_OBJECT_BYTES or MAX_IMAGE_PIXELS",
    ),
    (NotAnImage, "the object does not decode as an image"),
    (TransientError, "RGW, the model server or the Vision API unreachable or timing out"),
)
