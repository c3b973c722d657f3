"""`python -m results`: the results service on $HOST:$PORT (see results.app)."""

from __future__ import annotations

import sys

from common.env import ConfigError
from common.logs import configure_logging
from common.runtime import RuntimeSettings, serve
from common.s3 import ObjectStore, S3Settings
from results.app import create_app
from results.settings import ResultsSettings
from results.storage import Store
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
    serve(app, runtime, before_shutdown=app.state.hub.close, grace_seconds=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
