"""`python -m results`: the results service on $HOST:$PORT (see results.app)."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from common.env import ConfigError
from common.logs import configure_logging
from common.runtime import RuntimeSettings
from common.s3 import ObjectStore, S3Settings
from results.app import create_app
from results.settings import ResultsSettings
from results.storage import Store
from results.stream import Hub
from results.thumbnails import Thumbnailer


def main() -> int:
    try:
        runtime = RuntimeSettings.from_env()
        settings = ResultsSettings.from_env()
        s3 = S3Settings.from_env()
    except ConfigError as exc:
        print(f"results: {exc}", file=sys.stderr)
        return 2
    configure_logging(runtime.log_level, {"service": runtime.k_service or "results"})
    thumbnails = Thumbnailer(
        ObjectStore(s3),
        settings.thumbnail_size,
        settings.thumbnail_cache,
        settings.max_image_pixels,
    )
    app = create_app(Store(settings.database_url), thumbnails)
    config = uvicorn.Config(
        app,
        host=runtime.host,
        port=runtime.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    Server(config, app.state.hub).run()
    return 0


class Server(uvicorn.Server):
    """Ends the open event streams first when asked to stop: a page's stream never ends by
    itself, and the server would otherwise wait for it until its graceful timeout."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: Any = None) -> None:
        self.hub.close()
        await super().shutdown(sockets=sockets)


if __name__ == "__main__":
    sys.exit(main())
