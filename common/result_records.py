"""Result identity and the durable result record kept on the object itself, in RGW object tags.

A result is identified by (bucket, key, object version, model): the version is the version id
in a versioned bucket, else the ETag; the model is `name@version` (`name` alone when the model
has no version). `result_id` derives the reply CloudEvent's `id` from it (a UUIDv5), so every
replica, redelivery or later reconciliation of the same version by the same model replies with
the same id, and a CloudEvents consumer drops the copies by (`source`, `id`).

The record is one object tag per model (S3 allows 10 tags of 128-char keys and 256-char values):

    key    rgwi:<model name>
    value  <version marker> <top labels>      e.g.  e:9b2cf5...  285:0.7134:Egyptian%20cat,...

The version marker (`v:<version id>` or `e:<ETag>`) says which version the model classified, so
a record copied along with an object (CopyObject with the tags) is not taken for the copy's
own. The top labels are `class id:score:name` (names percent-encoded to S3's tag alphabet),
best first, as many as fit: enough to rebuild the reply of a duplicate without the model. The
model version is part of the tag's key (`rgwi:mobilenet_v2@3`), so a new model version finds no
record and classifies again.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

RECORD_PREFIX = "rgwi:"
MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
# A fixed namespace for result ids (uuid5 of this project's URL): stable across releases.
RESULT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://rgw-inference.dev/results")
# S3's tag alphabet: letters, digits, space and + - = . _ : / @. Everything else is %-encoded.
_SAFE = " +-=._/@"


@dataclass(frozen=True)
class Label:
    """One class with its score; `class_id` is the ImageNet index where the model has one."""

    name: str
    score: float
    class_id: int | None = None


@dataclass(frozen=True)
class ResultIdentity:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    model: str  # name@version, or name

    @property
    def marker(self) -> str:
        """Which version of the object: `v:<version id>`, else `e:<ETag>` (`-` if neither)."""
        if self.version_id and self.version_id != "null":
            return f"v:{self.version_id}"
        return f"e:{self.etag}" if self.etag else "-"

    @property
    def result_id(self) -> str:
        canonical = "\0".join((self.bucket, self.key, self.marker, self.model))
        return str(uuid.uuid5(RESULT_NAMESPACE, canonical))


def model_id(name: str, version: str | int | None) -> str:
    return f"{name}@{version}" if version not in (None, "") else name


def record_key(model: str) -> str:
    return quote(RECORD_PREFIX + model, safe=_SAFE + ":")[:MAX_TAG_KEY]


@dataclass(frozen=True)
class Record:
    """One model's record, parsed from its tag."""

    model: str
    marker: str
    labels: list[Label]

    def matches(self, identity: ResultIdentity) -> bool:
        return self.marker == identity.marker


def encode_record(marker: str, labels: list[Label]) -> str:
    value = marker
    for index, label in enumerate(labels):
        score = "" if math.isnan(label.score) else f"{label.score:.4f}"
        class_id = "" if label.class_id is None else str(label.class_id)
        item = f"{class_id}:{score}:{quote(label.name, safe=' ')}"
        candidate = f"{value}{' ' if index == 0 else ','}{item}"
        if len(candidate) > MAX_TAG_VALUE:
            break
        value = candidate
    return value[:MAX_TAG_VALUE]


def decode_record(model: str, value: str) -> Record | None:
    marker, _, rest = value.partition(" ")
    if not marker:
        return None
    labels: list[Label] = []
    for item in rest.split(",") if rest else []:
        parts = item.split(":", 2)
        if len(parts) != 3:
            continue
        class_id, score, name = parts
        try:
            labels.append(
                Label(
                    name=unquote(name),
                    score=float(score) if score else math.nan,
                    class_id=int(class_id) if class_id else None,
                )
            )
        except ValueError:
            continue
    return Record(model, marker, labels)


def records_in(tags: Mapping[str, str]) -> dict[str, Record]:
    """Every model's record in a tag set, by model id."""
    found: dict[str, Record] = {}
    for key, value in tags.items():
        if key.startswith(RECORD_PREFIX):
            model = unquote(key[len(RECORD_PREFIX) :])
            record = decode_record(model, value)
            if record is not None:
                found[model] = record
    return found


def with_record(
    tags: Mapping[str, str], model: str, value: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The tag set with this model's record (and `extra`) written in, within S3's 10 tags.

    Other tags (the owner's, other models' records) are kept; when there is no room, other
    models' records go first (a lost record costs a re-classification, never a wrong result).
    """
    merged = {k: v for k, v in tags.items() if k != record_key(model)}
    merged.update(extra or {})
    merged[record_key(model)] = value
    while len(merged) > MAX_TAGS:
        victim = next(
            (k for k in merged if k.startswith(RECORD_PREFIX) and k != record_key(model)), None
        )
        if victim is None:
            victim = next(k for k in merged if k != record_key(model))
        del merged[victim]
    return {k[:MAX_TAG_KEY]: v[:MAX_TAG_VALUE] for k, v in merged.items()}
