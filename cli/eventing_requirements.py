"""What a build needs from Eventing's config-features: the flags behind the fields and kinds its
objects use, and plain-HTTP pushes a `strict` transport encryption would close.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from cli.cluster_config import EVENTING, ConfigMaps, Finding, Manifest, setting, version_of

# Eventing's config-features: what the objects use -> (flag, default, what happens without it).
EVENTING_FEATURES: dict[str, tuple[str, str, str]] = {
    "filters": (
        "new-trigger-filters",
        "enabled",
        "Trigger `filters` are ignored: every Trigger gets every event",
    ),
    "delivery.timeout": ("delivery-timeout", "enabled", "the webhook refuses `delivery.timeout`"),
    "delivery.retryAfterMax": (
        "delivery-retryafter",
        "disabled",
        "the webhook refuses `delivery.retryAfterMax`",
    ),
    "ref.group": ("kreference-group", "disabled", "refs by `group` are refused"),
    "EventPolicy": (
        "authentication-oidc",
        "disabled",
        "EventPolicies are applied but not enforced: any sender is accepted",
    ),
}


def eventing_uses(docs: list[Manifest]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}

    def note(feature: str, doc: Manifest) -> None:
        used.setdefault(feature, []).append(f"{doc['kind']}/{doc['metadata']['name']}")

    def walk(doc: Manifest, value: Any, path: str) -> None:
        if isinstance(value, dict):
            if path.endswith("delivery"):
                for field in ("timeout", "retryAfterMax"):
                    if field in value:
                        note(f"delivery.{field}", doc)
            if path.endswith("ref") and "group" in value and "apiVersion" not in value:
                note("ref.group", doc)
            for key, item in value.items():
                walk(doc, item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(doc, item, path)

    for doc in docs:
        kind = doc.get("kind")
        if kind == "EventPolicy":
            note("EventPolicy", doc)
        if kind == "Trigger" and doc.get("spec", {}).get("filters"):
            note("filters", doc)
        if str(doc.get("apiVersion", "")).split("/")[0].endswith("knative.dev"):
            walk(doc, doc.get("spec", {}), "spec")
    return used


def check_eventing_features(docs: list[Manifest], maps: ConfigMaps) -> Iterator[Finding]:
    version = version_of(maps, EVENTING)
    for feature, who in sorted(eventing_uses(docs).items()):
        flag, default, consequence = EVENTING_FEATURES[feature]
        if feature == "filters" and version and _older(version, (1, 14)):
            default = "disabled"  # on by default (and no longer a flag) since Eventing 1.14
        value = setting(maps, EVENTING, "config-features", flag) or default
        level = "FAIL" if value == "disabled" else "ok"
        said = f"{value}; used by {', '.join(sorted(set(who)))}"
        if level == "FAIL":
            said += f": {consequence}"
        yield Finding(level, f"{EVENTING}/config-features {flag}", said)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def check_transport(docs: list[Manifest], maps: ConfigMaps) -> Iterator[Finding]:
    """`strict` closes Eventing's plain-HTTP ingress: an object pushing to http:// there fails."""
    value = setting(maps, EVENTING, "config-features", "transport-encryption") or "disabled"
    if value != "strict":
        return
    plain = sorted(
        {
            f"{doc['kind']}/{doc['metadata']['name']}"
            for doc in docs
            for text in strings(doc.get("spec", {}))
            if text.startswith("http://") and ".knative-eventing." in text
        }
    )
    key = f"{EVENTING}/config-features transport-encryption"
    if plain:
        yield Finding("FAIL", key, f"strict: {', '.join(plain)} push plain HTTP into Eventing")
    else:
        yield Finding("warn", key, "strict: every sink must have an https address")


def _older(version: str, than: tuple[int, int]) -> bool:
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]]
    return len(numbers) == 2 and (numbers[0], numbers[1]) < than
