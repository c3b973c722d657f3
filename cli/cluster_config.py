"""Knative's settings as a cluster holds them: the ConfigMaps `kubectl get configmap -o yaml`
prints, read with Knative's defaults for the keys they leave out (Serving 1.23 / Eventing 1.22;
a Serving ConfigMap's `_example` block is documentation, not settings), and the Finding each
check of cli.cluster_requirements reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]
ConfigMaps = dict[tuple[str, str], Manifest | None]

SERVING = "knative-serving"
EVENTING = "knative-eventing"
CONFIG_MAPS: tuple[tuple[str, str], ...] = (
    (SERVING, "config-autoscaler"),
    (SERVING, "config-defaults"),
    (SERVING, "config-features"),
    (SERVING, "config-deployment"),
    (EVENTING, "config-features"),
)
DEFAULTS: dict[tuple[str, str], dict[str, str]] = {
    (SERVING, "config-autoscaler"): {"max-scale-limit": "0", "allow-zero-initial-scale": "false"},
    (SERVING, "config-defaults"): {
        "container-concurrency": "0",
        "container-concurrency-max-limit": "1000",
        "allow-container-concurrency-zero": "true",
        "max-revision-timeout-seconds": "600",
    },
    (SERVING, "config-deployment"): {
        "registries-skipping-tag-resolving": "kind.local,ko.local,dev.local"
    },
}


@dataclass(frozen=True)
class Finding:
    level: str  # "FAIL", "warn" or "ok"
    setting: str  # "<namespace>/<configmap> <key>"
    message: str


def setting(maps: ConfigMaps, namespace: str, name: str, key: str) -> str | None:
    """The value in effect: the ConfigMap's, else Knative's default (None: no default known)."""
    config_map = maps.get((namespace, name))
    data = (config_map or {}).get("data") or {}
    if key in data:
        return str(data[key]).strip()
    return DEFAULTS.get((namespace, name), {}).get(key)


def version_of(maps: ConfigMaps, namespace: str) -> str | None:
    for (ns, _), config_map in maps.items():
        labels = ((config_map or {}).get("metadata") or {}).get("labels") or {}
        version = labels.get("app.kubernetes.io/version") or labels.get(
            "serving.knative.dev/release"
        )
        if ns == namespace and version:
            return str(version).removeprefix("v")
    return None


def integer(maps: ConfigMaps, namespace: str, name: str, key: str) -> int | Finding:
    raw = setting(maps, namespace, name, key)
    try:
        return int(str(raw))
    except ValueError:
        return Finding("FAIL", f"{namespace}/{name} {key}", f"{raw!r} is not an integer")
