"""What a kustomize build needs from a cluster's Knative settings, checked against its ConfigMaps.

`check(docs, maps)` takes the objects of a build and the ConfigMaps `kubectl get configmap -o
yaml` printed (None for one that does not exist) and returns one Finding per setting the build
depends on: FAIL when Knative's webhook would refuse an object or a revision would not become
ready, warn when it depends on something the ConfigMaps cannot tell, ok otherwise. The rules and
defaults are Knative Serving's and Eventing's own (1.23 / 1.22): an unset key is its default.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from cli.cluster_config import (
    CONFIG_MAPS,
    SERVING,
    ConfigMaps,
    Finding,
    Manifest,
    integer,
    setting,
)
from cli.eventing_requirements import check_eventing_features, check_transport

__all__ = ["CONFIG_MAPS", "ConfigMaps", "Finding", "check"]

# Serving's config-features: a revision's pod spec field -> the flag that allows it, with the
# flag's default. "enabled" and "allowed" both let the field through; "disabled" refuses it.
SERVING_FEATURES: dict[str, tuple[str, str]] = {
    "affinity": ("kubernetes.podspec-affinity", "disabled"),
    "topologySpreadConstraints": ("kubernetes.podspec-topologyspreadconstraints", "disabled"),
    "hostAliases": ("kubernetes.podspec-hostaliases", "disabled"),
    "nodeSelector": ("kubernetes.podspec-nodeselector", "disabled"),
    "tolerations": ("kubernetes.podspec-tolerations", "disabled"),
    "runtimeClassName": ("kubernetes.podspec-runtimeclassname", "disabled"),
    "dnsPolicy": ("kubernetes.podspec-dnspolicy", "disabled"),
    "dnsConfig": ("kubernetes.podspec-dnsconfig", "disabled"),
    "priorityClassName": ("kubernetes.podspec-priorityclassname", "disabled"),
    "schedulerName": ("kubernetes.podspec-schedulername", "disabled"),
    "initContainers": ("kubernetes.podspec-init-containers", "disabled"),
    "podSecurityContext": ("kubernetes.podspec-securitycontext", "disabled"),
    "fieldRef": ("kubernetes.podspec-fieldref", "disabled"),
    "addCapabilities": ("kubernetes.containerspec-addcapabilities", "disabled"),
    "emptyDir": ("kubernetes.podspec-volumes-emptydir", "enabled"),
    "persistentVolumeClaim": ("kubernetes.podspec-persistent-volume-claim", "disabled"),
    "persistentVolumeWrite": ("kubernetes.podspec-persistent-volume-write", "disabled"),
    "multiContainer": ("multi-container", "enabled"),
}
MAX_SCALE = ("autoscaling.knative.dev/max-scale", "autoscaling.knative.dev/maxScale")
INITIAL_SCALE = ("autoscaling.knative.dev/initial-scale", "autoscaling.knative.dev/initialScale")
# Image prefixes that name no reachable registry: only a skipped tag resolution can run them.
LOCAL_ONLY = re.compile(r"^(?:[a-z0-9-]+\.local|localhost)(?::\d+)?$")


@dataclass(frozen=True)
class Revision:
    where: str  # Kind/name of the Service or Configuration
    annotations: dict[str, str]
    spec: Manifest


def revisions(docs: list[Manifest]) -> list[Revision]:
    found = []
    for doc in docs:
        if doc.get("kind") in {"Service", "Configuration"} and str(
            doc.get("apiVersion", "")
        ).startswith("serving.knative.dev/"):
            template = doc.get("spec", {}).get("template", {})
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            annotations = template.get("metadata", {}).get("annotations", {}) or {}
            found.append(Revision(where, dict(annotations), template.get("spec", {}) or {}))
    return found


def listing(revs: list[Revision]) -> str:
    return ", ".join(rev.where for rev in revs)


def check_autoscaler(revs: list[Revision], maps: ConfigMaps) -> Iterator[Finding]:
    where = f"{SERVING}/config-autoscaler"
    limit = integer(maps, SERVING, "config-autoscaler", "max-scale-limit")
    if isinstance(limit, Finding):
        yield limit
        return
    scaled = {
        rev.where: int(value)
        for rev in revs
        for key in MAX_SCALE
        if (value := rev.annotations.get(key)) is not None
    }
    # A max-scale of 0 means unlimited, which a positive limit refuses as well.
    over = {w: m for w, m in scaled.items() if limit > 0 and (m == 0 or m > limit)}
    if over:
        said = ", ".join(f"{w} max-scale={m}" for w, m in sorted(over.items()))
        needed = max(scaled.values())
        yield Finding(
            "FAIL",
            f"{where} max-scale-limit",
            f"{limit}: the webhook refuses {said} (needs 0, no limit, or >= {needed})",
        )
    elif scaled:
        said = f"{limit}" if limit else "0 (no limit)"
        yield Finding(
            "ok", f"{where} max-scale-limit", f"{said}; max-scale up to {max(scaled.values())}"
        )
    zero_initial = [r for r in revs if any(r.annotations.get(k) == "0" for k in INITIAL_SCALE)]
    allowed = setting(maps, SERVING, "config-autoscaler", "allow-zero-initial-scale")
    if zero_initial and allowed != "true":
        yield Finding(
            "FAIL",
            f"{where} allow-zero-initial-scale",
            f"{allowed}: initial-scale=0 of {listing(zero_initial)} is refused",
        )


def check_defaults(revs: list[Revision], maps: ConfigMaps) -> Iterator[Finding]:
    where = f"{SERVING}/config-defaults"
    values = {
        key: integer(maps, SERVING, "config-defaults", key)
        for key in (
            "container-concurrency",
            "container-concurrency-max-limit",
            "max-revision-timeout-seconds",
        )
    }
    for value in values.values():
        if isinstance(value, Finding):
            yield value
    default_cc = values["container-concurrency"]
    cc_limit = values["container-concurrency-max-limit"]
    timeout_limit = values["max-revision-timeout-seconds"]
    if isinstance(cc_limit, int) and isinstance(default_cc, int):
        zero_ok = setting(maps, SERVING, "config-defaults", "allow-container-concurrency-zero")
        floor = 0 if zero_ok != "false" else 1
        concurrency = {r.where: int(r.spec.get("containerConcurrency", default_cc)) for r in revs}
        bad = {w: c for w, c in concurrency.items() if not floor <= c <= cc_limit}
        if bad:
            said = ", ".join(f"{w} containerConcurrency={c}" for w, c in sorted(bad.items()))
            yield Finding(
                "FAIL",
                f"{where} container-concurrency-max-limit",
                f"{cc_limit} (allow-container-concurrency-zero {zero_ok}): the webhook refuses "
                f"{said}",
            )
        elif concurrency:
            yield Finding(
                "ok",
                f"{where} container-concurrency-max-limit",
                f"{cc_limit}; containerConcurrency up to {max(concurrency.values())}",
            )
    if isinstance(timeout_limit, int):
        timeouts = {
            f"{r.where} {field}": int(r.spec[field])
            for r in revs
            for field in ("timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")
            if field in r.spec
        }
        bad_t = {w: t for w, t in timeouts.items() if t > timeout_limit}
        if bad_t:
            said = ", ".join(f"{w}={t}" for w, t in sorted(bad_t.items()))
            yield Finding(
                "FAIL",
                f"{where} max-revision-timeout-seconds",
                f"{timeout_limit}: the webhook refuses {said}",
            )
        elif timeouts:
            yield Finding(
                "ok",
                f"{where} max-revision-timeout-seconds",
                f"{timeout_limit}; timeouts up to {max(timeouts.values())} s",
            )


def features_used(spec: Manifest) -> set[str]:
    used = {key for key in SERVING_FEATURES if spec.get(key)}
    pod_context = {k for k in (spec.get("securityContext") or {}) if k != "seccompProfile"}
    if pod_context:
        used.add("podSecurityContext")
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    if len(spec.get("containers") or []) > 1:
        used.add("multiContainer")
    for container in containers:
        if ((container.get("securityContext") or {}).get("capabilities") or {}).get("add"):
            used.add("addCapabilities")
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if "fieldRef" in source or "resourceFieldRef" in source:
                used.add("fieldRef")
    for volume in spec.get("volumes") or []:
        if "emptyDir" in volume:
            used.add("emptyDir")
        if "persistentVolumeClaim" in volume:
            used.add("persistentVolumeClaim")
            if not volume["persistentVolumeClaim"].get("readOnly"):
                used.add("persistentVolumeWrite")
    return used


def check_serving_features(revs: list[Revision], maps: ConfigMaps) -> Iterator[Finding]:
    users: dict[str, list[Revision]] = {}
    for rev in revs:
        for feature in features_used(rev.spec):
            users.setdefault(feature, []).append(rev)
    for feature, who in sorted(users.items()):
        flag, default = SERVING_FEATURES[feature]
        value = setting(maps, SERVING, "config-features", flag) or default
        level = "FAIL" if value == "disabled" else "ok"
        yield Finding(
            level, f"{SERVING}/config-features {flag}", f"{value}; used by {listing(who)}"
        )


def registry_of(image: str) -> str:
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def check_images(docs: list[Manifest], maps: ConfigMaps) -> Iterator[Finding]:
    """Serving resolves each tag to a digest at revision creation, from the registry itself,
    unless the registry is in registries-skipping-tag-resolving."""
    key = f"{SERVING}/config-deployment registries-skipping-tag-resolving"
    raw = setting(maps, SERVING, "config-deployment", "registries-skipping-tag-resolving") or ""
    skipped = {part.strip() for part in raw.split(",") if part.strip()}
    images = sorted(
        {
            str(container.get("image", ""))
            for rev in revisions(docs)
            for container in rev.spec.get("containers") or []
            if "rgw-inference/" in str(container.get("image", ""))
        }
    )
    registries = sorted({registry_of(image) for image in images})
    for registry in registries:
        mine = [image for image in images if registry_of(image) == registry]
        if registry in skipped:
            yield Finding(
                "ok",
                key,
                f"{raw!r} skips {registry}: the nodes must already hold {', '.join(mine)} "
                "(kind load / minikube image load)",
            )
        elif LOCAL_ONLY.match(registry):
            yield Finding(
                "FAIL",
                key,
                f"{raw!r} lacks {registry}: Serving would try to resolve {mine[0]} there and "
                "the revisions fail with 'Unable to fetch image'",
            )
        else:
            yield Finding(
                "warn",
                key,
                f"tags are resolved to digests at {registry}: {', '.join(mine)} must be pushed "
                "there and pullable by the cluster",
            )


def check(docs: list[Manifest], maps: ConfigMaps) -> list[Finding]:
    findings = [
        Finding("FAIL", f"{namespace}/{name}", "not found: is Knative installed?")
        for (namespace, name), config_map in maps.items()
        if config_map is None
    ]
    revs = revisions(docs)
    for rule in (check_autoscaler, check_defaults, check_serving_features):
        findings += rule(revs, maps)
    findings += check_images(docs, maps)
    findings += check_eventing_features(docs, maps)
    findings += check_transport(docs, maps)
    return findings
