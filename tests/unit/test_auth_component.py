"""knative/components/verify-tokens on every overlay (and the base): it builds, every object still
matches the strict schemas, each Subscription and Trigger that reaches a function names the
function's AUTH_AUDIENCE as its subscriber audience and is among its AUTH_ALLOWED_SUBJECTS, and
the AUTH_* values are ones the runtime accepts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import tests.unit.test_knative_manifests as manifests
from common.auth import AuthSettings

COMPONENT = manifests.KNATIVE / "components" / "verify-tokens"
# The base and every overlay; the component is added by an overlay wrapping each, as an operator
# would (or by listing it in the overlay's own `components:`, which applies it before the
# overlay's patches: the same objects come out).
TOPOLOGIES = ["base", *sorted(p.name for p in (manifests.KNATIVE / "overlays").iterdir())]
# The Knative kinds whose OIDC service account sends: the `sub` of their tokens.
SENDER_GROUPS = {
    "Subscription": "messaging.knative.dev-subscription",
    "Trigger": "eventing.knative.dev-trigger",
}

# The dead-letter sink runs the receiver's image but verifies no token: the source posts the
# notifications it cannot use there itself (DEAD_LETTER_URL), and the source has no OIDC identity.
# The NetworkPolicies bound it instead (docs/security.md).
UNVERIFIED = {("Service", "dead-letters")}

Built = tuple[dict[str, Any], ...]


@pytest.fixture(scope="module")
def knative_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # kustomize takes no absolute bases: overlays beside a copy of knative/.
    root = tmp_path_factory.mktemp("verify-tokens") / "knative"
    shutil.copytree(manifests.KNATIVE, root)
    return root


@pytest.fixture(scope="module", params=TOPOLOGIES)
def built(request: pytest.FixtureRequest, knative_copy: Path) -> Built:
    name = request.param
    overlay = knative_copy / "overlays" / f"verify-tokens-on-{name}"
    overlay.mkdir()
    base = "../../base" if name == "base" else f"../{name}"
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{base}]\ncomponents: [../../components/verify-tokens]\n"
    )
    return manifests.build.__wrapped__(overlay)


def env_of(doc: dict[str, Any]) -> dict[str, str]:
    container = doc["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def is_function(doc: dict[str, Any]) -> bool:
    """A Service or Configuration running one of functions/ (common.runtime verifies tokens
    there), but the dead-letter sink; the results service is not a function."""
    if (doc["kind"], doc["metadata"]["name"]) in UNVERIFIED:
        return False
    spec = manifests.pod_spec(doc) or {}
    images = {manifests.our_image(c) for c in spec.get("containers", [])}
    return bool(images & manifests.FUNCTION_IMAGES)


def targets_of(
    sender: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
) -> list[tuple[str, str]]:
    """The objects that run what the sender's subscriber names: a Route's Configurations."""
    ref = sender["spec"]["subscriber"]["ref"]
    if ref["kind"] == "Route":
        route = objects[("Route", ref["name"])]
        return [("Configuration", t["configurationName"]) for t in route["spec"]["traffic"]]
    return [(ref["kind"], ref["name"])]


def test_the_component_is_in_no_overlay_by_default() -> None:
    assert COMPONENT.is_dir()
    for path in manifests.KNATIVE.rglob("kustomization.yaml"):
        assert "verify-tokens" not in path.read_text(), path


def test_everything_matches_the_schemas(built: Built) -> None:
    errors = [error for doc in built for error in manifests.schema_errors(doc)]
    assert errors == []


def test_each_sender_names_the_audience_and_identity_its_functions_expect(built: Built) -> None:
    objects = manifests.index(built)
    checked: set[str] = set()
    for (kind, name), sender in objects.items():
        if kind not in SENDER_GROUPS:
            continue
        functions = [t for t in targets_of(sender, objects) if is_function(objects[t])]
        if not functions:
            continue  # Trigger `results`: the results service does not verify tokens
        # A function reached by a sender without an audience would get no token and refuse
        # every event: a new Subscription or Trigger needs its patch in the component.
        audience = sender["spec"]["subscriber"].get("audience")
        assert audience, f"{kind} {name} reaches {functions} and names no audience"
        group, ref_kind, namespace, _ = audience.split("/")
        assert (group, namespace) == ("serving.knative.dev", sender["metadata"]["namespace"])
        assert ref_kind in {"service", "route"}
        subject = f"system:serviceaccount:{namespace}:{name}-oidc-{SENDER_GROUPS[kind]}"
        for target in functions:
            env = env_of(objects[target])
            assert env.get("AUTH_AUDIENCE") == audience, (kind, name, target)
            allowed = env["AUTH_ALLOWED_SUBJECTS"].split(",")
            assert subject in allowed, (kind, name, target)
            checked.add(f"{kind}/{name}->{target[1]}")
    # Every topology delivers to the receiver, both classifiers and compliance.
    reached = {edge.rsplit(">", 1)[1] for edge in checked}
    assert {"receiver", "resnet", "vision", "compliance"} <= reached, checked


def test_an_audience_names_one_function_or_the_classifiers(built: Built) -> None:
    """A token for one function is refused by another (AUTH_AUDIENCE differs), except between
    the two classifiers, which share the Route `classifiers`' audience; the subject lists keep
    even those apart where each has its own Subscription (the evaluation overlay)."""
    objects = manifests.index(built)
    audiences: dict[str, set[str]] = {}
    for (kind, name), doc in objects.items():
        if kind in {"Service", "Configuration"} and is_function(doc):
            env = env_of(doc)
            assert "AUTH_AUDIENCE" in env, f"{kind} {name}: no AUTH_AUDIENCE"
            audiences.setdefault(env["AUTH_AUDIENCE"], set()).add(name)
    for audience, names in audiences.items():
        assert len(names) == 1 or names == {"resnet", "vision"}, (audience, names)
    resnet = env_of(objects[("Configuration", "resnet")])["AUTH_ALLOWED_SUBJECTS"]
    vision = env_of(objects[("Configuration", "vision")])["AUTH_ALLOWED_SUBJECTS"]
    assert "vision-oidc" not in resnet and "resnet-oidc" not in vision


def test_the_settings_are_ones_the_runtime_accepts(built: Built, tmp_path: Path) -> None:
    objects = manifests.index(built)
    shared = dict(objects[("ConfigMap", "rgw-inference-settings")]["data"])
    # The pod's mounted files do not exist here: stand-ins with the same role.
    for name in ("AUTH_CA_FILE", "AUTH_JWKS_TOKEN_FILE"):
        assert shared[name].startswith("/var/run/secrets/kubernetes.io/serviceaccount/")
        stand_in = tmp_path / name
        stand_in.write_text("x")
        shared[name] = str(stand_in)
    for (kind, name), doc in objects.items():
        if kind in {"Service", "Configuration"} and is_function(doc):
            settings = AuthSettings.from_env({**shared, **env_of(doc)})
            assert settings is not None, name
            assert settings.jwks_url == "https://kubernetes.default.svc/openid/v1/jwks"
            assert settings.allowed_subjects, name
