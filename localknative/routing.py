"""How the local Channel routes: each Subscription resolved to local URLs, the traffic split.

`plan_channel` turns the Subscriptions of a Channel (`localknative.topology`) into plans whose
every reference is a local URL (`Bindings`, from `--bind Kind/name=URL`); it fails at start-up,
not at the first event. `choose_target` is the Route's split: the first 8 bytes of sha256(event
id) modulo 100 pick a point on the cumulative percents, so a retry or a redelivery of one event
lands on the same revision (Knative picks at random; a hash splits as evenly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from localknative.topology import (
    DeliverySpec,
    Destination,
    Ref,
    Subscription,
    Topology,
    TopologyError,
)

# Knative's SelectiveRetry: everything 5xx plus these; other 4xx are permanent.
RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})


def split_point(event_id: str) -> int:
    """0..99: where an event falls on a Route's cumulative traffic percents."""
    digest = hashlib.sha256(event_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass(frozen=True)
class WeightedTarget:
    name: str  # e.g. Configuration/resnet
    percent: int
    url: str


def choose_target(targets: Sequence[WeightedTarget], event_id: str) -> WeightedTarget:
    """The traffic target an event goes to (see the module docstring)."""
    point = split_point(event_id)
    upper = 0
    for target in targets:
        upper += target.percent
        if point < upper:
            return target
    raise ValueError("traffic percents add up to less than 100")


def is_retryable(status: int | None) -> bool:
    """None stands for no answer at all (refused connection, reset, timeout)."""
    return status is None or status >= 500 or status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class SubscriptionPlan:
    """One Subscription with every reference resolved to a local URL."""

    name: str
    targets: tuple[WeightedTarget, ...]
    reply_url: str | None
    dead_letter_url: str | None
    delivery: DeliverySpec


class Bindings:
    """Kind/name -> base URL of the local process playing that object."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = {key: url.rstrip("/") for key, url in urls.items()}

    @classmethod
    def parse(cls, pairs: Sequence[str]) -> Bindings:
        urls: dict[str, str] = {}
        for pair in pairs:
            key, sep, url = pair.partition("=")
            if not sep or not url.startswith(("http://", "https://")):
                raise TopologyError(f"--bind {pair!r}: expected Kind/name=http://host:port")
            urls[str(Ref.parse(key))] = url
        return cls(urls)

    def url_of(self, ref: Ref, where: str) -> str:
        try:
            return self._urls[str(ref)]
        except KeyError:
            raise TopologyError(
                f"{where} refers to {ref}, which has no local binding (--bind {ref}=URL)"
            ) from None

    def resolve(self, destination: Destination, where: str) -> str:
        if destination.ref is None:
            assert destination.uri is not None
            return destination.uri
        base = self.url_of(destination.ref, where)
        return base + (destination.uri or "")


def plan_channel(topology: Topology, channel: str, bindings: Bindings) -> list[SubscriptionPlan]:
    """Resolve every Subscription of `channel`; fails at start-up, not at the first event."""
    plans = []
    for sub in topology.subscriptions_of(channel):
        where = f"Subscription/{sub.name}"
        plans.append(
            SubscriptionPlan(
                name=sub.name,
                targets=_subscriber_targets(topology, sub, bindings),
                reply_url=bindings.resolve(sub.reply, f"{where} reply") if sub.reply else None,
                dead_letter_url=(
                    bindings.resolve(sub.delivery.dead_letter_sink, f"{where} deadLetterSink")
                    if sub.delivery.dead_letter_sink
                    else None
                ),
                delivery=sub.delivery,
            )
        )
    if not plans:
        raise TopologyError(f"Channel {channel!r} has no Subscriptions: nothing to deliver to")
    return plans


def _subscriber_targets(
    topology: Topology, sub: Subscription, bindings: Bindings
) -> tuple[WeightedTarget, ...]:
    where = f"Subscription/{sub.name} subscriber"
    ref = sub.subscriber.ref
    if ref is not None and ref.kind == "Route":
        suffix = sub.subscriber.uri or ""
        return tuple(
            WeightedTarget(str(t.target), t.percent, bindings.url_of(t.target, where) + suffix)
            for t in topology.traffic(ref.name)
            if t.percent > 0
        )
    name = str(ref) if ref is not None else str(sub.subscriber.uri)
    return (WeightedTarget(name, 100, bindings.resolve(sub.subscriber, where)),)
