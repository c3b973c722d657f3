"""The OIDC token Knative gives the source, attached to every delivery to the sink.

With Eventing's `authentication-oidc` feature, a SinkBinding (the HTTP way's, or the one a
ContainerSource makes for the AMQP way) requests a token for the sink's audience with the
source's own OIDC service account, keeps it fresh in a Secret and mounts that at /oidc: the token
is the file /oidc/token (SOURCE_OIDC_TOKEN_FILE). The Channel or Broker then checks it, and its
EventPolicy names the source as the one sender allowed (knative/components/event-policies).

The file is read again whenever it changes (Kubernetes swaps a Secret volume's files in place
when Knative renews the token). No file, no header: the feature is off. The token is never
logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class TokenFile:
    path: str
    _seen: tuple[int, int] | None = field(default=None, repr=False)
    _token: str | None = field(default=None, repr=False)

    def authorization(self) -> dict[str, str]:
        """`{"Authorization": "Bearer <token>"}`, or {} while there is no token file."""
        try:
            stat = os.stat(self.path)
        except OSError:
            self._seen, self._token = None, None
            return {}
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    self._token = handle.read().strip() or None
            except OSError:
                self._token = None
            self._seen = seen
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}
