"""The receiver: an audit trail that logs the object and bucket of every event."""

from __future__ import annotations

import logging

from common.runtime import Delivery, Function, create_app

log = logging.getLogger("receiver")


class Receiver(Function):
    name = "receiver"
    blocking = False  # it only writes log lines

    def handle(self, delivery: Delivery) -> None:
        for obj in delivery.objects:
            log.info(
                f'Object: "{obj.key}" Bucket: "{obj.bucket}"',
                extra={
                    "event_id": obj.event_id,
                    "event_type": delivery.event_type,
                    "event_name": obj.event_name,
                    "event_time": obj.event_time.isoformat() if obj.event_time else None,
                    "bucket": obj.bucket,
                    "key": obj.key,
                    "size": obj.size,
                },
            )


app = create_app(Receiver)
