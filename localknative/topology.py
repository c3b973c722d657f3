"""Read the Knative manifests (`knative/base/*.yaml`) into the wiring the local dispatcher plays.

Only what routing needs is read: the Channel's Subscriptions with their subscriber, reply and
`delivery` (retry, backoffPolicy, backoffDelay, deadLetterSink, timeout), and each Route's traffic
split. Everything else in the files (Deployments, ConfigMaps, ...) is ignored, so the same files
serve `kubectl apply -k` and `make demo` without a second description of the topology.

A reference to another object is kept as a `Ref` ("Kind/name"); turning it into a URL is the job
of the dispatcher's bindings, because only the local runner knows which port a process got.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BACKOFF_POLICIES = ("exponential", "linear")
# What an object is for the local runner's report, beyond what its Subscriptions say (e.g.
# `verdict`: see localknative.workloads); an annotation, so Knative ignores it.
ROLE_ANNOTATION = "local.rgw-inference.dev/role"
# Knative's defaults when a Subscription carries no delivery block (eventing's IMC defaults).
DEFAULT_RETRY = 0
DEFAULT_BACKOFF_DELAY = 0.0
_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?$"
)


class TopologyError(ValueError):
    """The manifests do not describe a topology the local runner can play; says what and where."""


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as PT0.2S, PT1M30S or P1DT2H.

    Years and months are refused: their length depends on the calendar, and Knative's delivery
    fields never need them.
    """
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise TopologyError(
            f"duration {text!r}: expected ISO-8601 like PT0.2S, PT1M30S or P1DT2H "
            "(weeks, days, hours, minutes, seconds)"
        )
    parts = {
        name: float((value or "0").replace(",", ".")) for name, value in match.groupdict().items()
    }
    return (
        parts["weeks"] * 604800
        + parts["days"] * 86400
        + parts["hours"] * 3600
        + parts["minutes"] * 60
        + parts["seconds"]
    )


@dataclass(frozen=True)
class Ref:
    """A Kubernetes object reference, e.g. Service/receiver or Broker/default."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> Ref:
        kind, sep, name = text.partition("/")
        if not sep or not kind or not name:
            raise TopologyError(f"reference {text!r}: expected Kind/name, e.g. Service/receiver")
        return cls(kind, name)


@dataclass(frozen=True)
class Destination:
    """Knative's duck-typed Destination: a `ref`, a `uri`, or a ref plus a relative uri."""

    ref: Ref | None = None
    uri: str | None = None

    def __str__(self) -> str:
        if self.ref is None:
            return self.uri or "(nowhere)"
        return str(self.ref) + (self.uri or "")


@dataclass(frozen=True)
class DeliverySpec:
    """`spec.delivery`: how often and how patiently a subscriber is retried, and where events
    that fail for good go."""

    retry: int = DEFAULT_RETRY
    backoff_policy: str = "exponential"
    backoff_delay: float = DEFAULT_BACKOFF_DELAY
    dead_letter_sink: Destination | None = None
    timeout: float | None = None

    def backoff(self, retries_done: int) -> float:
        """Seconds to wait before the next retry, after `retries_done` retries (0 before the
        first), as Knative's sender computes it from its attempt number: exponential waits
        backoffDelay * 2^retries_done (PT0.2S: 0.2 s, 0.4 s, 0.8 s...), linear waits
        backoffDelay * retries_done (so the first retry follows at once).
        """
        if retries_done < 0:
            raise ValueError("retries_done counts from 0")
        if self.backoff_policy == "linear":
            return self.backoff_delay * retries_done
        return float(self.backoff_delay * 2**retries_done)


@dataclass(frozen=True)
class Subscription:
    name: str
    channel: str
    subscriber: Destination
    reply: Destination | None
    delivery: DeliverySpec


@dataclass(frozen=True)
class TrafficTarget:
    """One line of a Route's traffic block; `target` is Configuration/x or Revision/x."""

    target: Ref
    percent: int
    tag: str | None = None


@dataclass(frozen=True)
class Topology:
    """What the manifests in one directory say about event routing."""

    channels: frozenset[str]
    subscriptions: tuple[Subscription, ...]
    routes: Mapping[str, tuple[TrafficTarget, ...]]
    objects: frozenset[Ref] = field(default_factory=frozenset)
    # Objects whose manifest names a role (ROLE_ANNOTATION), e.g. Service/compliance: verdict.
    roles: Mapping[Ref, str] = field(default_factory=dict)

    def subscriptions_of(self, channel: str) -> list[Subscription]:
        if channel not in self.channels:
            raise TopologyError(
                f"no Channel {channel!r} in the manifests (found: {sorted(self.channels)})"
            )
        return [s for s in self.subscriptions if s.channel == channel]

    def traffic(self, route: str) -> tuple[TrafficTarget, ...]:
        try:
            return self.routes[route]
        except KeyError:
            raise TopologyError(
                f"no Route {route!r} in the manifests (found: {sorted(self.routes)})"
            ) from None


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _destination(value: Any, where: str) -> Destination:
    spec = _mapping(value, where)
    ref_spec = spec.get("ref")
    uri = spec.get("uri")
    if ref_spec is None and not uri:
        raise TopologyError(f"{where}: a destination needs `ref` or `uri`")
    ref = None
    if ref_spec is not None:
        ref_map = _mapping(ref_spec, f"{where}.ref")
        kind, name = ref_map.get("kind"), ref_map.get("name")
        if not isinstance(kind, str) or not isinstance(name, str) or not kind or not name:
            raise TopologyError(f"{where}.ref: needs `kind` and `name`")
        ref = Ref(kind, name)
    if uri is not None and not isinstance(uri, str):
        raise TopologyError(f"{where}.uri: expected a string")
    return Destination(ref, uri or None)


def _delivery(value: Any, where: str, inherited: DeliverySpec | None = None) -> DeliverySpec:
    base = inherited or DeliverySpec()
    if value is None:
        return base
    spec = _mapping(value, where)
    retry = spec.get("retry", base.retry)
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise TopologyError(f"{where}.retry: expected a whole number >= 0, got {retry!r}")
    policy = spec.get("backoffPolicy", base.backoff_policy)
    if policy not in BACKOFF_POLICIES:
        raise TopologyError(f"{where}.backoffPolicy: expected one of {BACKOFF_POLICIES}")
    delay = base.backoff_delay
    if "backoffDelay" in spec:
        delay = _duration_at(spec["backoffDelay"], f"{where}.backoffDelay")
    timeout = base.timeout
    if "timeout" in spec:
        timeout = _duration_at(spec["timeout"], f"{where}.timeout")
    dead_letter = base.dead_letter_sink
    if spec.get("deadLetterSink") is not None:
        dead_letter = _destination(spec["deadLetterSink"], f"{where}.deadLetterSink")
    return DeliverySpec(retry, policy, delay, dead_letter, timeout)


def _duration_at(value: Any, where: str) -> float:
    if not isinstance(value, str):
        raise TopologyError(f"{where}: expected an ISO-8601 duration string, got {value!r}")
    try:
        return parse_duration(value)
    except TopologyError as exc:
        raise TopologyError(f"{where}: {exc}") from None


def _traffic(spec: Mapping[str, Any], where: str) -> tuple[TrafficTarget, ...]:
    entries = spec.get("traffic")
    if not isinstance(entries, list) or not entries:
        raise TopologyError(f"{where}.traffic: expected a non-empty list")
    targets = []
    for index, raw in enumerate(entries):
        entry = _mapping(raw, f"{where}.traffic[{index}]")
        if entry.get("configurationName"):
            target = Ref("Configuration", str(entry["configurationName"]))
        elif entry.get("revisionName"):
            target = Ref("Revision", str(entry["revisionName"]))
        else:
            raise TopologyError(
                f"{where}.traffic[{index}]: needs configurationName or revisionName "
                "(a Route has no Service of its own to fall back to)"
            )
        percent = entry.get("percent", 0)
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise TopologyError(f"{where}.traffic[{index}].percent: expected 0..100")
        tag = entry.get("tag")
        targets.append(TrafficTarget(target, percent, str(tag) if tag else None))
    total = sum(t.percent for t in targets)
    if total != 100:
        raise TopologyError(f"{where}.traffic: percents add up to {total}, Knative wants 100")
    return tuple(targets)


def _channel_ref(value: Any, where: str) -> str:
    spec = _mapping(value, where)
    kind, name = spec.get("kind"), spec.get("name")
    if kind not in ("Channel", "InMemoryChannel") or not isinstance(name, str):
        raise TopologyError(f"{where}: expected a Channel reference with a name")
    return name


def parse_documents(documents: Iterable[tuple[str, Any]]) -> Topology:
    """A Topology from (where, parsed YAML document) pairs; `where` names the file in errors."""
    channels: dict[str, DeliverySpec | None] = {}
    raw_subscriptions: list[tuple[str, Mapping[str, Any]]] = []
    routes: dict[str, tuple[TrafficTarget, ...]] = {}
    objects: set[Ref] = set()
    roles: dict[Ref, str] = {}
    for where, document in documents:
        if document is None:
            continue
        doc = _mapping(document, where)
        kind = doc.get("kind")
        name = _mapping(doc.get("metadata") or {}, f"{where}.metadata").get("name")
        if not isinstance(kind, str) or not isinstance(name, str):
            continue  # not a Kubernetes object (e.g. a kustomization): nothing to route
        objects.add(Ref(kind, name))
        annotations = _mapping(doc.get("metadata") or {}, where).get("annotations") or {}
        if isinstance(annotations, Mapping) and annotations.get(ROLE_ANNOTATION):
            roles[Ref(kind, name)] = str(annotations[ROLE_ANNOTATION])
        at = f"{where}: {kind}/{name}"
        spec = _mapping(doc.get("spec") or {}, f"{at}.spec")
        if kind in ("Channel", "InMemoryChannel"):
            channels[name] = (
                _delivery(spec["delivery"], f"{at}.spec.delivery") if "delivery" in spec else None
            )
        elif kind == "Subscription":
            raw_subscriptions.append((at, doc))
        elif kind == "Route":
            routes[name] = _traffic(spec, f"{at}.spec")

    subscriptions = []
    for at, doc in raw_subscriptions:
        spec = _mapping(doc.get("spec"), f"{at}.spec")
        channel = _channel_ref(spec.get("channel"), f"{at}.spec.channel")
        if "subscriber" not in spec:
            raise TopologyError(f"{at}.spec: a Subscription without a subscriber routes nothing")
        subscriptions.append(
            Subscription(
                name=str(doc["metadata"]["name"]),
                channel=channel,
                subscriber=_destination(spec["subscriber"], f"{at}.spec.subscriber"),
                reply=(
                    _destination(spec["reply"], f"{at}.spec.reply") if spec.get("reply") else None
                ),
                # A Subscription's delivery overrides its Channel's, field by field.
                delivery=_delivery(
                    spec.get("delivery"), f"{at}.spec.delivery", channels.get(channel)
                ),
            )
        )
    return Topology(
        channels=frozenset(channels),
        subscriptions=tuple(sorted(subscriptions, key=lambda s: s.name)),
        routes=routes,
        objects=frozenset(objects),
        roles=roles,
    )


def read_documents(directory: Path) -> list[tuple[str, Any]]:
    """(where, document) for every *.yaml / *.yml file in `directory` (multi-document files
    welcome); `where` is "file#index", for error messages."""
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise TopologyError(f"no *.yaml files in {directory}")
    documents: list[tuple[str, Any]] = []
    for path in files:
        try:
            for index, document in enumerate(yaml.safe_load_all(path.read_text())):
                documents.append((f"{path.name}#{index}", document))
        except yaml.YAMLError as exc:
            raise TopologyError(f"{path}: not valid YAML: {exc}") from None
    return documents


def load_topology(directory: Path) -> Topology:
    """The routing the manifests in `directory` describe."""
    return parse_documents(read_documents(directory))


@dataclass(frozen=True)
class Trigger:
    """A Broker Trigger: the events it lets through (exact attribute matches) to its subscriber."""

    name: str
    attributes: Mapping[str, str]  # filter.attributes: exact match on each
    subscriber: Ref
    delivery: DeliverySpec

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        return all(attributes.get(name) == value for name, value in self.attributes.items())


def triggers_to(directory: Path, subscriber: Ref) -> list[Trigger]:
    """The Triggers of the manifests in `directory` whose subscriber is `subscriber`."""
    found = []
    for where, doc in read_documents(directory):
        if not isinstance(doc, Mapping) or doc.get("kind") != "Trigger":
            continue
        spec = doc.get("spec") or {}
        ref = (spec.get("subscriber") or {}).get("ref") or {}
        if Ref(str(ref.get("kind")), str(ref.get("name"))) != subscriber:
            continue
        if "filters" in spec:
            raise TopologyError(f"{where}: Trigger `filters` are not played locally")
        delivery = spec.get("delivery") or {}
        found.append(
            Trigger(
                name=str(doc["metadata"]["name"]),
                attributes=dict((spec.get("filter") or {}).get("attributes") or {}),
                subscriber=subscriber,
                delivery=DeliverySpec(
                    retry=int(delivery.get("retry", 0)),
                    backoff_policy=str(delivery.get("backoffPolicy", "exponential")),
                    backoff_delay=parse_duration(str(delivery.get("backoffDelay", "PT0S"))),
                ),
            )
        )
    return found
