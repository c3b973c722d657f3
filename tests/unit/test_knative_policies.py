"""The network boundaries and the sender authorization that ship in knative/, checked.

NetworkPolicies (knative/components/network-policies, listed by the stock overlays) and
EventPolicies (knative/components/event-policies, opt-in: composed here on top of each overlay
they fit, the way docs/deploy.md tells a user to) are validated strictly against their schemas
(kubernetes-validate for NetworkPolicy, the upstream EventPolicy CRD in tests/data/crds), and
then for what they mean: every pod of the namespace is isolated, every function is reachable from
Knative Serving's data plane only, the model server from its callers only, the HTTP adapter from
RGW only; every Channel, Broker and function that receives events names exactly the objects that
send to it, and every object a policy names exists in the build.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_knative_manifests import KNATIVE, Manifest, build, containers, schema_errors

COMPONENTS = KNATIVE / "components"
NETWORK_POLICIES = COMPONENTS / "network-policies"
EVENT_POLICIES = COMPONENTS / "event-policies"
NAMESPACE = "rgw-inference"
# Overlays that list the network-policies component (directly or through the overlay they build
# on). Not base: the local runner plays base and the overlays built on it, components skipped
# (localknative/overlay.py); not evaluation, which is that runner's overlay.
NETWORK_POLICY_OVERLAYS = {
    "broker": (),
    "http-adapter": ("rgw-source-from-rgw",),
    "rook": ("rgw-source-from-rgw", "rgw-source-from-rook-rgw"),
    "rgw-cloudevents-broker": (),
    "rook-cloudevents": (),
    "tfserving": (),
    "vision-standin": ("modelserver-from-vision",),
}
EVERY_BUILD_HAS = ("default-deny-ingress", "functions-from-knative", "modelserver-from-callers")
# Where each EventPolicy component fits: (what it is built on, components, in order).
EVENT_POLICY_BUILDS = {
    "base": ("base", ("event-policies/channel", "event-policies/amqp-source")),
    "tfserving": ("overlays/tfserving", ("event-policies/channel", "event-policies/amqp-source")),
    "vision-standin": (
        "overlays/vision-standin",
        ("event-policies/channel", "event-policies/amqp-source"),
    ),
    "http-adapter": (
        "overlays/http-adapter",
        ("event-policies/channel", "event-policies/http-adapter"),
    ),
    "rook": ("overlays/rook", ("event-policies/channel", "event-policies/http-adapter")),
    "broker": ("overlays/broker", ("event-policies/broker",)),
}
# Knative Serving's data plane, as the functions' policy names it: (namespace, pod labels).
KNATIVE_DATA_PLANE = {
    ("knative-serving", (("app", "activator"),)),
    ("knative-serving", (("app", "autoscaler"),)),
    ("kourier-system", (("app", "3scale-kourier-gateway"),)),
}
SOURCE_KINDS = {"ContainerSource", "SinkBinding"}


# --- builds -------------------------------------------------------------------------------------


def overlay_build(name: str) -> tuple[Manifest, ...]:
    return build(KNATIVE / "overlays" / name)


@functools.cache
def composed_build(name: str, tmp_root: str) -> tuple[Manifest, ...]:
    """`kubectl kustomize` of an overlay of one's own: the base or overlay, plus components."""
    on, components = EVENT_POLICY_BUILDS[name]
    where = Path(tmp_root) / name
    where.mkdir(parents=True, exist_ok=True)
    relative = functools.partial(os.path.relpath, start=where)  # kustomize refuses absolute
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [relative(KNATIVE / on)],
        "components": [relative(COMPONENTS / component) for component in components],
    }
    (where / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    done = subprocess.run(
        ["kubectl", "kustomize", str(where)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{name}: kubectl kustomize failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("own-overlays"))


def of_kind(docs: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def name_of(doc: Manifest) -> str:
    return str(doc["metadata"]["name"])


# --- label selectors, as the API server evaluates them --------------------------------------------


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector against a label set ({} selects everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in {"In", "NotIn", "Exists", "DoesNotExist"}:
            raise AssertionError(f"unknown selector operator {operator}")
    return True


def pods(docs: tuple[Manifest, ...]) -> Iterator[tuple[str, dict[str, str], Manifest]]:
    """(what, the labels its pods carry, the object) for the pods a build makes that we can name.

    Knative labels each revision pod with its Configuration (and Service) name."""
    for doc in docs:
        kind, name = doc["kind"], name_of(doc)
        if doc["apiVersion"].startswith("serving.knative.dev/") and kind == "Service":
            labels = {
                "serving.knative.dev/service": name,
                "serving.knative.dev/configuration": name,
            }
            yield f"Service/{name}", labels, doc
        elif doc["apiVersion"].startswith("serving.knative.dev/") and kind == "Configuration":
            yield f"Configuration/{name}", {"serving.knative.dev/configuration": name}, doc
        elif kind in {"Deployment", "StatefulSet", "DaemonSet"}:
            labels = dict(doc["spec"]["template"]["metadata"].get("labels") or {})
            yield f"{kind}/{name}", labels, doc


def policies_for(docs: tuple[Manifest, ...], labels: dict[str, str]) -> list[Manifest]:
    return [
        policy
        for policy in of_kind(docs, "NetworkPolicy")
        if "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
        and selects(policy["spec"]["podSelector"], labels)
    ]


def peers(policies: list[Manifest]) -> Iterator[tuple[Manifest, Manifest, list[Manifest]]]:
    """(policy, peer, ports) for every `from` entry of every ingress rule."""
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from"), f"{name_of(policy)}: a rule without `from` admits everyone"
            assert rule.get("ports"), f"{name_of(policy)}: a rule without `ports` admits any port"
            for peer in rule["from"]:
                yield policy, peer, rule["ports"]


def namespace_of(peer: Manifest) -> str | None:
    """The one namespace a peer names by kubernetes.io/metadata.name; None: the policy's own."""
    selector = peer.get("namespaceSelector")
    if selector is None:
        return None
    assert set(selector) == {"matchLabels"}, f"namespaceSelector too broad: {selector}"
    (key, value), *rest = selector["matchLabels"].items()
    assert key == "kubernetes.io/metadata.name" and not rest, selector
    return str(value)


# --- NetworkPolicies ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", sorted(NETWORK_POLICY_OVERLAYS))
def test_each_overlay_ships_its_network_policies(overlay: str) -> None:
    names = {name_of(doc) for doc in of_kind(overlay_build(overlay), "NetworkPolicy")}
    assert names == {*EVERY_BUILD_HAS, *NETWORK_POLICY_OVERLAYS[overlay]}


def test_the_list_of_overlays_with_network_policies_is_complete() -> None:
    """A new overlay either lists the component (and is named above) or is one that must not."""
    overlays = {path.parent.name for path in (KNATIVE / "overlays").glob("*/kustomization.yaml")}
    assert overlays - set(NETWORK_POLICY_OVERLAYS) == {"evaluation"}


@pytest.mark.parametrize("overlay", sorted(NETWORK_POLICY_OVERLAYS))
def test_every_pod_of_the_namespace_is_isolated(overlay: str) -> None:
    [deny] = [
        p for p in of_kind(overlay_build(overlay), "NetworkPolicy") if not p["spec"].get("ingress")
    ]
    assert deny["spec"]["podSelector"] == {} and deny["spec"]["policyTypes"] == ["Ingress"]
    assert deny["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("overlay", sorted(NETWORK_POLICY_OVERLAYS))
def test_every_function_takes_connections_from_knatives_data_plane_only(overlay: str) -> None:
    docs = overlay_build(overlay)
    functions = [
        (what, labels)
        for what, labels, _ in pods(docs)
        if "serving.knative.dev/configuration" in labels
    ]
    assert len(functions) >= 5, functions  # receiver, dead-letters, results, resnet, vision, ...
    for what, labels in functions:
        policies = [p for p in policies_for(docs, labels) if p["spec"].get("ingress")]
        assert policies, f"{overlay}: {what} is not let in by any policy: unreachable"
        allowed = set()
        for policy, peer, ports in peers(policies):
            assert set(peer) == {"namespaceSelector", "podSelector"}, (what, name_of(policy), peer)
            pod_labels = tuple(sorted(peer["podSelector"]["matchLabels"].items()))
            allowed.add((namespace_of(peer), pod_labels))
            assert {port["port"] for port in ports} <= {8012, 8013, 8112, 9090}, ports
        assert allowed == KNATIVE_DATA_PLANE, f"{overlay}: {what} admits {allowed}"


def modelserver_callers(docs: tuple[Manifest, ...]) -> dict[str, set[int]]:
    """Pod label value (configuration name) -> ports, for every function whose environment
    points at the model server's Service."""
    callers: dict[str, set[int]] = {}
    for doc, container in containers(docs):
        for env in container.get("env") or []:
            value = str(env.get("value", ""))
            host = value.split("://")[-1].split("/")[0]
            if host.split(".")[0] == "modelserver" or host.startswith("modelserver:"):
                port = int(host.rsplit(":", 1)[1]) if ":" in host else 8501
                callers.setdefault(name_of(doc), set()).add(port)
    return callers


@pytest.mark.parametrize("overlay", sorted(NETWORK_POLICY_OVERLAYS))
def test_the_model_server_takes_connections_from_its_callers_only(overlay: str) -> None:
    docs = overlay_build(overlay)
    [(_, labels, server)] = [item for item in pods(docs) if item[0] == "Deployment/modelserver"]
    served = {
        port["containerPort"]
        for container in server["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports") or []
    }
    functions = {
        name_of(doc) for _, _, doc in pods(docs) if doc["kind"] in {"Service", "Configuration"}
    }
    allowed: dict[str, set[int]] = {}
    for policy, peer, ports in peers(policies_for(docs, labels)):
        assert set(peer) == {"podSelector"}, f"{name_of(policy)}: only pods of this namespace"
        selector = peer["podSelector"]
        names = [
            name
            for name in functions
            if selects(selector, {"serving.knative.dev/configuration": name})
        ]
        assert names, f"{name_of(policy)}: {selector} names no function of the build"
        for name in names:
            allowed.setdefault(name, set()).update(port["port"] for port in ports)
        assert {port["port"] for port in ports} <= served, (ports, served)
    for name, called in modelserver_callers(docs).items():
        assert called <= allowed.get(name, set()), (
            f"{overlay}: {name} calls {called}, allowed {allowed}"
        )
    assert set(allowed) <= {"resnet", "compliance", "vision"}, allowed


@pytest.mark.parametrize("overlay", ["http-adapter", "rook"])
def test_the_http_adapter_takes_pushes_from_rgw_only(overlay: str) -> None:
    docs = overlay_build(overlay)
    [(_, labels, adapter)] = [item for item in pods(docs) if item[0] == "Deployment/rgw-source"]
    [container] = adapter["spec"]["template"]["spec"]["containers"]
    served = {port["containerPort"] for port in container["ports"]}
    kinds = set()
    for _, peer, ports in peers(policies_for(docs, labels)):
        assert {port["port"] for port in ports} == served
        if "ipBlock" in peer:
            assert set(peer) == {"ipBlock"}
            # The placeholder routes nowhere until the user sets RGW's address (docs/deploy.md).
            assert peer["ipBlock"]["cidr"] == "192.0.2.0/24" and "except" not in peer["ipBlock"]
            kinds.add("ipBlock")
        else:
            assert namespace_of(peer) == "rook-ceph"
            assert peer["podSelector"]["matchLabels"]["app"] == "rook-ceph-rgw"
            kinds.add("rook")
    assert kinds == ({"ipBlock", "rook"} if overlay == "rook" else {"ipBlock"})


def test_no_overlay_without_the_adapter_opens_a_port_to_an_address() -> None:
    for overlay in sorted(set(NETWORK_POLICY_OVERLAYS) - {"http-adapter", "rook"}):
        for policy in of_kind(overlay_build(overlay), "NetworkPolicy"):
            for rule in policy["spec"].get("ingress") or []:
                assert not any("ipBlock" in peer for peer in rule["from"]), (overlay, policy)


# --- EventPolicies ------------------------------------------------------------------------------


def event_policies(docs: tuple[Manifest, ...]) -> list[Manifest]:
    return of_kind(docs, "EventPolicy")


def ref_key(ref: Manifest) -> tuple[str, str, str]:
    return ref["apiVersion"], ref["kind"], ref["name"]


def senders(docs: tuple[Manifest, ...]) -> dict[tuple[str, str, str], set[tuple[str, str, str]]]:
    """Receiver -> the objects whose OIDC identity sends to it, read from the build's wiring:
    a source's sink; a Subscription's subscriber, reply and dead letter; a Trigger's subscriber
    and dead letter (or its Broker's), and its Broker (a Trigger's reply goes back into it)."""
    found: dict[tuple[str, str, str], set[tuple[str, str, str]]] = {}
    brokers = {name_of(doc): doc.get("spec") or {} for doc in of_kind(docs, "Broker")}

    def add(target: Manifest | None, sender: Manifest) -> None:
        if target and "ref" in target:
            key = ref_key(target["ref"])
            found.setdefault(key, set()).add(
                (sender["apiVersion"], sender["kind"], name_of(sender))
            )

    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] in SOURCE_KINDS:
            add(spec.get("sink"), doc)
        if doc["kind"] in {"Subscription", "Trigger"}:
            add(spec.get("subscriber"), doc)
            add(spec.get("reply"), doc)
            add((spec.get("delivery") or {}).get("deadLetterSink"), doc)
        if doc["kind"] == "Trigger":
            broker = {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Broker",
                "name": spec["broker"],
            }
            add({"ref": broker}, doc)
            if not (spec.get("delivery") or {}).get("deadLetterSink"):
                # A Trigger without a dead letter of its own uses its Broker's.
                add(
                    (brokers.get(spec["broker"], {}).get("delivery") or {}).get("deadLetterSink"),
                    doc,
                )
    return found


@pytest.mark.parametrize("name", sorted(EVENT_POLICY_BUILDS))
def test_event_policy_builds_match_the_strict_schemas(name: str, tmp_root: str) -> None:
    docs = composed_build(name, tmp_root)
    assert event_policies(docs), f"{name}: no EventPolicy"
    errors = [error for doc in docs for error in schema_errors(doc)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", sorted(EVENT_POLICY_BUILDS))
def test_event_policies_name_only_objects_of_the_build(name: str, tmp_root: str) -> None:
    docs = composed_build(name, tmp_root)
    existing = {(doc["apiVersion"], doc["kind"], name_of(doc)) for doc in docs}
    for policy in event_policies(docs):
        spec = policy["spec"]
        assert spec.get("to"), f"{name_of(policy)}: an empty `to` applies to the whole namespace"
        assert spec.get("from"), f"{name_of(policy)}: no sender at all"
        for entry in [*spec["to"], *spec["from"]]:
            assert set(entry) == {"ref"}, f"{name_of(policy)}: refs only, by name ({entry})"
            assert "namespace" not in entry["ref"], f"{name_of(policy)}: this namespace only"
            assert ref_key(entry["ref"]) in existing, f"{name}: {name_of(policy)} names {entry}"


@pytest.mark.parametrize("name", sorted(EVENT_POLICY_BUILDS))
def test_every_receiver_admits_exactly_its_senders(name: str, tmp_root: str) -> None:
    """The source may send to the Channel (or Broker), the subscriptions and triggers to their
    functions; nobody else may: each policy's `from` is exactly who the wiring says sends."""
    docs = composed_build(name, tmp_root)
    wiring = senders(docs)
    admitted: dict[tuple[str, str, str], set[tuple[str, str, str]]] = {}
    for policy in event_policies(docs):
        for target in policy["spec"]["to"]:
            admitted.setdefault(ref_key(target["ref"]), set()).update(
                ref_key(sender["ref"]) for sender in policy["spec"]["from"]
            )
    assert set(admitted) == set(wiring), (
        f"{name}: receivers without a policy {sorted(set(wiring) - set(admitted))}; "
        f"policies for no receiver {sorted(set(admitted) - set(wiring))}"
    )
    for receiver, allowed in admitted.items():
        if receiver[1] == "Broker":
            # Triggers on the Broker send their replies into it, but only those whose subscriber
            # answers with an event; the policy may name fewer than every Trigger.
            sources = {s for s in wiring[receiver] if s[1] != "Trigger"}
            assert sources <= allowed <= wiring[receiver], (name, receiver, allowed)
        else:
            assert allowed == wiring[receiver], f"{name}: {receiver} admits {allowed}"


@pytest.mark.parametrize("name", sorted(EVENT_POLICY_BUILDS))
def test_every_function_that_receives_events_has_a_policy(name: str, tmp_root: str) -> None:
    """A new function with a Subscription or Trigger cannot slip through without one."""
    docs = composed_build(name, tmp_root)
    targets = {ref_key(t["ref"]) for policy in event_policies(docs) for t in policy["spec"]["to"]}
    for receiver in senders(docs):
        if receiver[0].startswith("serving.knative.dev/"):
            assert receiver in targets, f"{name}: {receiver} receives events without a policy"


def test_the_source_is_the_channels_only_sender(tmp_root: str) -> None:
    for name, kind in (("base", "ContainerSource"), ("http-adapter", "SinkBinding")):
        docs = composed_build(name, tmp_root)
        [policy] = [
            p for p in event_policies(docs) if p["spec"]["to"][0]["ref"]["kind"] == "Channel"
        ]
        [sender] = policy["spec"]["from"]
        assert sender["ref"]["kind"] == kind and sender["ref"]["name"] == "rgw-source"


# --- the checks can fail ------------------------------------------------------------------------


def test_the_strict_schemas_refuse_what_the_api_server_would_drop(tmp_root: str) -> None:
    docs = composed_build("base", tmp_root)
    policy: Any = copy.deepcopy(event_policies(docs)[0])
    policy["spec"]["from"][0]["refs"] = policy["spec"]["from"][0].pop("ref")
    assert any("refs" in error for error in schema_errors(policy))
    network: Any = copy.deepcopy(of_kind(overlay_build("broker"), "NetworkPolicy")[0])
    network["spec"]["ingres"] = []
    assert schema_errors(network)


def test_the_selector_check_is_the_api_servers() -> None:
    labels = {"serving.knative.dev/configuration": "resnet", "app": "x"}
    assert selects({}, labels)
    assert selects(
        {"matchExpressions": [{"key": "serving.knative.dev/configuration", "operator": "Exists"}]},
        labels,
    )
    assert not selects({"matchLabels": {"app": "y"}}, labels)
    assert not selects(
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]}, labels
    )
    assert selects({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}, labels)
    assert not selects(
        {
            "matchExpressions": [
                {"key": "serving.knative.dev/configuration", "operator": "In", "values": ["vision"]}
            ]
        },
        labels,
    )
