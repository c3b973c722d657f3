"""The results service's variables (the S3 ones, for thumbnails, are common.s3's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.env import ConfigError, Env, env_var

RESULTS = "Results service (results)"
DATABASE_URL = env_var(
    "DATABASE_URL",
    "Where results are kept: an SQLAlchemy URL, e.g. postgresql://user:pass@host/db "
    "(psycopg 3) or sqlite:///path.db. The default file in /tmp lasts as long as the pod.",
    RESULTS,
    "sqlite:////tmp/rgw-inference-results.db",
    secret=True,
)
THUMBNAIL_SIZE = env_var(
    "THUMBNAIL_SIZE", "Longest side, in pixels, of the thumbnails the page shows.", RESULTS, "320"
)
THUMBNAIL_CACHE = env_var(
    "THUMBNAIL_CACHE",
    "How many thumbnails to keep in memory (least recently used go).",
    RESULTS,
    "512",
)
RESULTS_MAX_IMAGE_PIXELS = env_var(
    "RESULTS_MAX_IMAGE_PIXELS",
    "Largest image (width x height) the service decodes for a thumbnail; more gets none.",
    RESULTS,
    str(40_000_000),
)


@dataclass(frozen=True)
class ResultsSettings:
    database_url: str = "sqlite:///:memory:"
    thumbnail_size: int = 320
    thumbnail_cache: int = 512
    max_image_pixels: int = 40_000_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ResultsSettings:
        env = Env(environ)
        secret = env.secret(DATABASE_URL)
        url = secret.reveal() if secret is not None else str(DATABASE_URL.default)
        return cls(
            database_url=sqlalchemy_url(url),
            thumbnail_size=env.integer(THUMBNAIL_SIZE, 16, 2048),
            thumbnail_cache=env.integer(THUMBNAIL_CACHE, 0),
            max_image_pixels=env.integer(RESULTS_MAX_IMAGE_PIXELS, 1),
        )


def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy should open: `postgresql://` and `postgres://` (what most providers
    hand out) mean psycopg 3, the driver this service ships, not SQLAlchemy's psycopg2 default."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError("DATABASE_URL: expected an URL such as sqlite:///results.db")
    if scheme in {"postgresql", "postgres"}:
        return f"postgresql+psycopg://{rest}"
    if scheme not in {"sqlite", "postgresql+psycopg"}:
        raise ConfigError(
            f"DATABASE_URL: expected a sqlite:// or postgresql:// URL, got a {scheme}:// one"
        )
    return url
