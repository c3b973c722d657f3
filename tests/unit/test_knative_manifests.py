"""Every manifest under knative/ and every overlay it builds, checked against the real schemas.

Knative and Rook kinds are validated against their upstream CustomResourceDefinitions (kept in
tests/data/crds/, with the release each comes from), made strict: a field the schema does not
declare is an error, as the API server's pruning would silently drop it. Core kinds go through
kubernetes-validate's strict schemas. Then the semantics no schema can see: the Route's traffic
sums to 100, every ref names an object the overlay defines, probes hit paths the code serves, env
names are the ones the code declares.
"""

from __future__ import annotations

import copy
import functools
import importlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from cli.config_table import load_all_settings_modules
from common.env import EnvVar

REPO = Path(__file__).resolve().parents[2]
KNATIVE = REPO / "knative"
KUBERNETES_VERSION = "1.32.0"
# Knative sets these in every revision and refuses a Service or Configuration that sets them.
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
OUR_IMAGE = re.compile(
    r"^(?:.*/)?rgw-inference/(?P<name>[a-z][a-z0-9-]*)(?::[\w.-]+)?(?:@sha256:\w+)?$"
)
# Every functions/<folder>/ that runs as `python -m functions.<folder>` is a function, its image
# rgw-inference/<folder with '_' as '-'> (scripts/images.sh, `rgw-inference new-function`).
FUNCTION_IMAGES = {
    main.parent.name.replace("_", "-") for main in (REPO / "functions").glob("*/__main__.py")
}
Manifest = dict[str, Any]


# --- where things are ---------------------------------------------------------------------------


CRDS = REPO / "tests" / "data" / "crds"


def overlay_dirs() -> list[Path]:
    """Directories `kubectl kustomize` builds (kustomize Components are parts, not overlays)."""
    return sorted(
        path.parent
        for path in KNATIVE.rglob("kustomization.yaml")
        if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization"
    )


def manifest_files() -> list[Path]:
    """Standalone manifests: everything but kustomizations and partial patches (`*.patch.yaml`)."""
    return sorted(
        p
        for p in KNATIVE.rglob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith(".patch.yaml")
    )


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@functools.cache
def build(overlay: Path) -> tuple[Manifest, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found on PATH (needed for `kubectl kustomize`)")
    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize {rel(overlay)} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def load_file(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- strict CRD schemas -------------------------------------------------------------------------

OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "generateName": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name"],
}


def strict(schema: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema, with undeclared fields forbidden."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if schema.get("type") == "object" and "additionalProperties" not in schema and not preserve:
        # With neither properties nor preserve-unknown-fields the API server prunes everything.
        out["additionalProperties"] = False
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, from every upstream CRD kept in tests/data/crds/."""
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(CRDS.rglob("*.yaml")):
        for doc in load_file(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schema["properties"]["metadata"] = OBJECT_META
                schema["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version['name']}"}
                schema["properties"]["kind"] = {"const": spec["names"]["kind"]}
                schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                validators[key] = jsonschema.Draft202012Validator(schema)
    assert validators, f"no CustomResourceDefinition found under {rel(CRDS)}"
    return validators


def schema_errors(doc: Manifest) -> list[str]:
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    name = f"{key[1]}/{doc.get('metadata', {}).get('name')}"
    validator = crd_validators().get(key)
    if validator is not None:
        return [
            f"{name}: {'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in validator.iter_errors(doc)
        ]
    # Kubernetes' own API groups: the core group and the named ones (NetworkPolicy's included).
    if "." not in key[0].split("/")[0] or key[0].startswith(("apps/", "networking.k8s.io/")):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path)) or "<root>"
            return [f"{name}: {path}: {error.message}"]
        except kubernetes_validate.SchemaNotFoundError:
            return [f"{name}: no Kubernetes {KUBERNETES_VERSION} schema for {key}"]
        return []
    return [f"{name}: no schema for {key[0]} {key[1]} (neither a known CRD nor a core kind)"]


# --- walking the objects ------------------------------------------------------------------------


def index(docs: tuple[Manifest, ...]) -> dict[tuple[str, str], Manifest]:
    """(kind, name) -> object; kinds are unique enough across the groups this project uses."""
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


# Kinds whose spec.template is a pod template (Knative makes a Deployment of a ContainerSource's).
POD_TEMPLATE_KINDS = {
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "ContainerSource",
}


def pod_spec(doc: Manifest) -> Manifest | None:
    """The pod spec of every kind that runs pods: what Pod Security Admission judges."""
    kind = doc["kind"]
    if kind in {"Service", "Configuration"} and doc["apiVersion"].startswith("serving.knative"):
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind in POD_TEMPLATE_KINDS:
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind == "Pod" and doc["apiVersion"] == "v1":
        return doc["spec"]  # type: ignore[no-any-return]
    return None


def containers(docs: tuple[Manifest, ...]) -> Iterator[tuple[Manifest, Manifest]]:
    for doc in docs:
        spec = pod_spec(doc) or {}
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            yield doc, container


def our_image(container: Manifest) -> str | None:
    match = OUR_IMAGE.match(container.get("image", ""))
    return match.group("name") if match else None


def refs(doc: Manifest) -> Iterator[tuple[str, Manifest]]:
    """Every (where, ref) pointing at another object, by the field names Knative uses."""
    spec = doc.get("spec", {})

    def destination(where: str, dest: Manifest | None) -> Iterator[tuple[str, Manifest]]:
        if dest and "ref" in dest:
            yield where, dest["ref"]

    kind = doc["kind"]
    if kind == "Subscription":
        yield "channel", spec["channel"]
        yield from destination("subscriber", spec.get("subscriber"))
        yield from destination("reply", spec.get("reply"))
    if kind == "Trigger":
        yield (
            "broker",
            {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": spec["broker"]},
        )
        yield from destination("subscriber", spec.get("subscriber"))
    if kind in {"ContainerSource", "SinkBinding"}:
        yield from destination("sink", spec.get("sink"))
    if kind == "SinkBinding":
        yield "subject", spec["subject"]
    delivery = spec.get("delivery") or {}
    yield from destination("deadLetterSink", delivery.get("deadLetterSink"))


def uris(doc: Manifest) -> Iterator[tuple[str, str]]:
    spec = doc.get("spec", {})
    for where in ("subscriber", "reply", "sink"):
        if isinstance(spec.get(where), dict) and "uri" in spec[where]:
            yield where, spec[where]["uri"]
    dls = (spec.get("delivery") or {}).get("deadLetterSink") or {}
    if "uri" in dls:
        yield "deadLetterSink", dls["uri"]
    http = (spec.get("endpoint") or {}).get("http") or {}
    if "uri" in http:
        yield "endpoint.http", http["uri"]
    for _, container in containers((doc,)):
        for env in container.get("env", []):
            if (
                env["name"] in {"K_SINK", "DEAD_LETTER_URL", "SOURCE_PUSH_ENDPOINT"}
                and "value" in env
            ):
                yield f"env {env['name']}", env["value"]


# Addresses outside this project's objects that a URI may name: Knative's Broker ingress and
# Rook's RGW Service for the object store.
EXTERNAL_NAMESPACES = {"knative-eventing", "rook-ceph"}


def in_cluster_target(uri: str) -> tuple[str, str] | None:
    """(name, namespace) for an http://<name>.<ns>.svc.cluster.local URI, else None."""
    host = urlsplit(uri).hostname or ""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[0], parts[1]
    return None


def function_settings() -> list[EnvVar]:
    """Variables a function declares beside its code, in functions/<folder>/settings.py."""
    modules = (
        importlib.import_module(f"functions.{path.parent.name}.settings")
        for path in sorted((REPO / "functions").glob("*/settings.py"))
    )
    return [var for module in modules for var in vars(module).values() if isinstance(var, EnvVar)]


def env_names_read_by_code() -> set[str]:
    names: set[str] = set()
    for var in [*load_all_settings_modules(), *function_settings()]:
        names.update(var.names)
        if var.secret:
            names.update(f"{name}_FILE" for name in var.names)
    return names


def modelserver_env_names() -> set[str]:
    return set(importlib.import_module("modelserver.config").ENV_VARS)


@functools.cache
def served_paths(image: str) -> set[str]:
    """GET paths the program in our image `image` serves, read from its real app."""
    if image in FUNCTION_IMAGES:
        # Every function is served by common.runtime.create_app: its routes are the functions'.
        from common.runtime import Function, RuntimeSettings
        from common.runtime import create_app as create_function_app

        app = create_function_app(Function, RuntimeSettings())
        return {route.path for route in app.routes}  # type: ignore[attr-defined]
    if image == "source":
        from source.http_adapter import operations_routes
        from source.metrics import SourceMetrics

        return {route.path for route in operations_routes(SourceMetrics(), lambda: True)}
    if image == "modelserver":
        from modelserver.registry import ModelRegistry
        from modelserver.rest_api import create_app as create_modelserver_app

        app = create_modelserver_app(ModelRegistry(REPO / ".cache" / "unused-models", 1))
        return {route.path for route in app.routes}  # type: ignore[attr-defined]
    if image == "results":
        from results.app import create_app as create_results_app
        from results.storage import Store
        from results.thumbnails import Thumbnailer

        app = create_results_app(Store("sqlite:///:memory:"), Thumbnailer(None, 64, 1, 1))
        return {route.path for route in app.routes}  # type: ignore[attr-defined]
    raise AssertionError(f"unknown image rgw-inference/{image}")


# --- the tests ----------------------------------------------------------------------------------

OVERLAYS = overlay_dirs()
FILES = manifest_files()


def test_there_is_a_base_and_overlays() -> None:
    assert KNATIVE / "base" in OVERLAYS
    assert len(OVERLAYS) > 1, "no overlays under knative/overlays"


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_manifest_file_matches_its_schema(path: Path) -> None:
    docs = load_file(path)
    assert docs, f"{rel(path)} holds no object"
    errors = [error for doc in docs for error in schema_errors(doc)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_overlay_builds_and_matches_the_schemas(overlay: Path) -> None:
    errors = [error for doc in build(overlay) for error in schema_errors(doc)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_everything_lives_in_the_project_namespace(overlay: Path) -> None:
    for doc in build(overlay):
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            assert meta["name"] == "rgw-inference"
        else:
            assert meta.get("namespace") == "rgw-inference", f"{doc['kind']}/{meta['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_route_traffic_sums_to_100_and_names_configurations(overlay: Path) -> None:
    objects = index(build(overlay))
    for (kind, name), doc in objects.items():
        if kind != "Route":
            continue
        traffic = doc["spec"]["traffic"]
        assert sum(t.get("percent", 0) for t in traffic) == 100, f"Route {name}"
        for target in traffic:
            assert ("Configuration", target["configurationName"]) in objects, target


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_every_ref_names_an_object_of_the_overlay(overlay: Path) -> None:
    docs = build(overlay)
    objects = index(docs)
    for doc in docs:
        for where, ref in refs(doc):
            assert ref.get("namespace", "rgw-inference") == "rgw-inference", (where, ref)
            target = objects.get((ref["kind"], ref["name"]))
            assert target is not None, (
                f"{doc['kind']}/{doc['metadata']['name']} {where} -> {ref['kind']}/{ref['name']}: "
                f"not defined in {rel(overlay)}"
            )
            assert target["apiVersion"] == ref["apiVersion"], (where, ref)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_every_in_cluster_uri_names_a_service_of_the_overlay(overlay: Path) -> None:
    docs = build(overlay)
    services = {name for kind, name in index(docs) if kind == "Service"}
    for doc in docs:
        for where, uri in uris(doc):
            target = in_cluster_target(uri)
            assert target is not None, f"{doc['metadata']['name']} {where}: {uri} is not in-cluster"
            name, namespace = target
            if namespace in EXTERNAL_NAMESPACES:
                continue
            assert namespace == "rgw-inference" and name in services, (
                f"{doc['kind']}/{doc['metadata']['name']} {where}: {uri} names no Service here"
            )


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_probes_hit_paths_the_programs_serve(overlay: Path) -> None:
    probed = 0
    for doc, container in containers(build(overlay)):
        image = our_image(container)
        if image is None:
            continue
        if image in FUNCTION_IMAGES:
            assert "readinessProbe" in container and "livenessProbe" in container, doc["metadata"]
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            http = container.get(kind, {}).get("httpGet")
            if http:
                probed += 1
                assert http["path"] in served_paths(image), (doc["metadata"]["name"], kind, http)
    assert probed, "no HTTP probe on any of the project's containers"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_env_names_are_ones_the_code_reads(overlay: Path) -> None:
    docs = build(overlay)
    objects = index(docs)
    known = env_names_read_by_code()
    for doc, container in containers(docs):
        image = our_image(container)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        names = [env["name"] for env in container.get("env", [])]
        for source in container.get("envFrom", []):
            config_map = objects[("ConfigMap", source["configMapRef"]["name"])]
            names += list(config_map.get("data", {}))
        if doc["apiVersion"].startswith("serving.knative"):
            assert not KNATIVE_RESERVED_ENV & set(names), f"{where} sets Knative's reserved env"
        if image is None:
            continue
        # A variable only expanded into the arguments as $(NAME) is Kubernetes', not the code's.
        argv = " ".join([*container.get("command", []), *container.get("args", [])])
        expanded = set(re.findall(r"\$\((\w+)\)", argv))
        allowed = known | expanded | (modelserver_env_names() if image == "modelserver" else set())
        unknown = sorted(set(names) - allowed)
        assert not unknown, f"{where}: env {unknown} is read by no settings module"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_secret_and_configmap_keys_exist(overlay: Path) -> None:
    docs = build(overlay)
    objects = index(docs)
    for _, container in containers(docs):
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if field in source:
                    ref = source[field]
                    target = objects.get((kind, ref["name"]))
                    assert target is not None, f"{kind} {ref['name']} (env {env['name']})"
                    assert ref["key"] in target.get("data", {}), (
                        f"{kind} {ref['name']}.{ref['key']}"
                    )


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_our_containers_run_as_non_root(overlay: Path) -> None:
    for doc, container in containers(build(overlay)):
        if our_image(container) is None:
            continue
        pod = pod_spec(doc) or {}
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, doc["metadata"]["name"]
        assert context.get("allowPrivilegeEscalation", False) is False, doc["metadata"]["name"]


# --- the topology contract with the local runner (topology.md) ----------------------------------


def delivery_is_the_contract(delivery: Manifest) -> None:
    assert delivery["retry"] == 5
    assert delivery["backoffPolicy"] == "exponential"
    assert delivery["backoffDelay"] == "PT0.2S"
    assert delivery["deadLetterSink"]["ref"]["name"] == "dead-letters"


def test_base_is_the_seed_topology() -> None:
    objects = index(build(KNATIVE / "base"))
    channel = objects[("Channel", "rgw-events")]
    assert channel["spec"]["channelTemplate"]["kind"] == "InMemoryChannel"
    source = objects[("ContainerSource", "rgw-source")]
    assert source["spec"]["sink"]["ref"] == {
        "apiVersion": "messaging.knative.dev/v1",
        "kind": "Channel",
        "name": "rgw-events",
    }
    args = source["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "amqp" and "--url" in args and "--queue" in args
    route = objects[("Route", "classifiers")]
    split = {t["configurationName"]: t["percent"] for t in route["spec"]["traffic"]}
    assert split == {"resnet": 50, "vision": 50}
    receiver = objects[("Subscription", "receiver")]["spec"]
    assert receiver["subscriber"]["ref"]["kind"] == "Service"
    assert receiver["subscriber"]["ref"]["name"] == "receiver"
    delivery_is_the_contract(receiver["delivery"])
    classifiers = objects[("Subscription", "classifiers")]["spec"]
    assert classifiers["subscriber"]["ref"]["kind"] == "Route"
    assert classifiers["subscriber"]["ref"]["name"] == "classifiers"
    assert classifiers["reply"]["ref"]["kind"] == "Broker"
    assert classifiers["reply"]["ref"]["name"] == "default"
    delivery_is_the_contract(classifiers["delivery"])
    assert ("Service", "dead-letters") in objects
    service = objects[("Service", "modelserver")]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == 8500 and ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert ports["http"]["port"] == 8501
    assert ("Deployment", "modelserver") in objects


def test_every_function_is_a_knative_workload_of_the_base() -> None:
    """Each function folder has a Service or Configuration running its image; each one subscribed
    to the Channel on its own gets the same delivery policy."""
    docs = build(KNATIVE / "base")
    images = {
        our_image(container)
        for doc, container in containers(docs)
        if doc["kind"] in {"Service", "Configuration"} and doc["apiVersion"].startswith("serving.")
    }
    assert {"receiver", "resnet", "vision"} <= FUNCTION_IMAGES
    missing = sorted(FUNCTION_IMAGES - images)
    assert not missing, f"functions/ has {missing}, knative/base no Service or Configuration"
    for (kind, _), doc in index(docs).items():
        if kind == "Subscription":
            delivery_is_the_contract(doc["spec"]["delivery"])


def test_base_files_are_readable_one_by_one_for_the_local_runner() -> None:
    """The local runner reads knative/base/*.yaml directly (no kustomize): names must be final."""
    names = {
        (doc["kind"], doc["metadata"]["name"])
        for path in sorted((KNATIVE / "base").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_file(path)
    }
    for expected in [
        ("Channel", "rgw-events"),
        ("ContainerSource", "rgw-source"),
        ("Service", "receiver"),
        ("Service", "dead-letters"),
        ("Configuration", "resnet"),
        ("Configuration", "vision"),
        ("Route", "classifiers"),
        ("Subscription", "receiver"),
        ("Subscription", "classifiers"),
        ("Broker", "default"),
        ("Trigger", "results"),
        ("Deployment", "modelserver"),
        ("Service", "modelserver"),
    ]:
        assert expected in names, expected


# --- the validator itself must be able to fail --------------------------------------------------


def test_validator_rejects_an_unknown_field_in_a_crd_kind() -> None:
    doc = load_file(KNATIVE / "base" / "classifiers.yaml")[-1]
    doc["spec"]["traffic"][0]["weight"] = 50
    assert any("weight" in error for error in schema_errors(doc))


def test_validator_rejects_the_seeds_pre_v1_fields() -> None:
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "old"},
        "spec": {"runLatest": {"configuration": {"revisionTemplate": {}}}},
    }
    assert any("runLatest" in error for error in schema_errors(doc))


def test_validator_rejects_an_unknown_field_in_a_core_kind() -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    assert schema_errors(doc)


def test_validator_rejects_a_kind_it_has_no_schema_for() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}
    assert schema_errors(doc)


def test_broker_overlay_routes_by_cloudevents_type() -> None:
    objects = index(build(KNATIVE / "overlays" / "broker"))
    assert ("Channel", "rgw-events") not in objects
    assert objects[("ContainerSource", "rgw-source")]["spec"]["sink"]["ref"]["kind"] == "Broker"
    classifiers = objects[("Trigger", "classifiers")]["spec"]
    assert classifiers["subscriber"]["ref"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Route",
        "name": "classifiers",
    }
    prefixes = {f["prefix"]["type"] for f in classifiers["filters"][0]["any"]}
    assert "com.amazonaws.s3.ObjectCreated" in prefixes
    delivery_is_the_contract(classifiers["delivery"])
    results = objects[("Trigger", "results")]["spec"]
    assert results["filter"]["attributes"]["type"] == "dev.rgwinference.classification.result"
    receiver = objects[("Trigger", "receiver")]["spec"]
    assert receiver["subscriber"]["ref"]["name"] == "receiver"
    # The receiver must not get the results (it refuses them with a 4xx).
    receiver_prefixes = [
        f["prefix"]["type"] for f in receiver["filters"][0]["any"] if "prefix" in f
    ]
    assert not any(
        "dev.rgwinference.classification.result".startswith(p) for p in receiver_prefixes
    )


def trigger_matches(filters: list[dict[str, Any]], event_type: str) -> bool:
    """Trigger `filters` (all must match) of the dialects the overlays use: exact, prefix, any."""

    def one(dialect: dict[str, Any]) -> bool:
        if "exact" in dialect:
            return bool(dialect["exact"]["type"] == event_type)
        if "prefix" in dialect:
            return event_type.startswith(dialect["prefix"]["type"])
        if "any" in dialect:
            return any(one(inner) for inner in dialect["any"])
        raise AssertionError(f"filter dialect not understood here: {dialect}")

    return all(one(dialect) for dialect in filters)


@pytest.mark.parametrize("overlay", ["rgw-cloudevents-broker", "rook-cloudevents"])
def test_broker_direct_overlays_route_rgw_own_cloudevents(overlay: str) -> None:
    """RGW 18.2 pushes to the Broker itself (no source): its type has no `s3.` in it."""
    objects = index(build(KNATIVE / "overlays" / overlay))
    assert not [name for kind, name in objects if kind == "ContainerSource"]
    assert ("Secret", "amqp-credentials") not in objects
    assert ("Channel", "rgw-events") not in objects
    classifiers = objects[("Trigger", "classifiers")]["spec"]
    receiver = objects[("Trigger", "receiver")]["spec"]
    assert classifiers["subscriber"]["ref"]["kind"] == "Route"
    assert receiver["subscriber"]["ref"]["name"] == "receiver"
    for created in ("Put", "Post", "Copy", "CompleteMultipartUpload"):
        event_type = f"com.amazonaws.ObjectCreated:{created}"
        assert trigger_matches(classifiers["filters"], event_type), event_type
        assert trigger_matches(receiver["filters"], event_type), event_type
    assert trigger_matches(receiver["filters"], "com.amazonaws.ObjectRemoved:Delete")
    assert not trigger_matches(classifiers["filters"], "com.amazonaws.ObjectRemoved:Delete")
    for trigger in (classifiers, receiver):
        assert not trigger_matches(trigger["filters"], "dev.rgwinference.classification.result")
    delivery_is_the_contract(classifiers["delivery"])


@pytest.mark.parametrize("overlay", ["rook", "rook-cloudevents"])
def test_rook_notifications_are_tied_to_the_bucket(overlay: str) -> None:
    objects = index(build(KNATIVE / "overlays" / overlay))
    claims = [doc for (kind, _), doc in objects.items() if kind == "ObjectBucketClaim"]
    notifications = [n for (kind, n) in objects if kind == "CephBucketNotification"]
    assert claims and notifications
    labels = claims[0]["metadata"]["labels"]
    for name in notifications:
        assert labels.get(f"bucket-notification-{name}") == name
        topic = objects[
            ("CephBucketTopic", objects[("CephBucketNotification", name)]["spec"]["topic"])
        ]
        assert topic["spec"]["persistent"] is True
    suffixes = {
        rule["value"]
        for name in notifications
        for rule in objects[("CephBucketNotification", name)]["spec"]["filter"]["keyFilters"]
        if rule["name"] == "suffix"
    }
    assert {".jpg", ".jpeg", ".png"} <= suffixes


def test_http_receive_adapter_always_has_a_ready_pod() -> None:
    """RGW pushes to the adapter's Service; with no ready pod every push is refused at once and
    RGW 16.2 retries in a tight loop that can hang its persistent queue (docs/source.md)."""
    objects = index(build(KNATIVE / "overlays" / "http-adapter"))
    deployment = objects[("Deployment", "rgw-source")]["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budget = objects[("PodDisruptionBudget", "rgw-source")]["spec"]
    assert budget["minAvailable"] >= 1
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()


# --- one place for every image's name and tag ---------------------------------------------------

IMAGES_COMPONENT = KNATIVE / "components" / "images" / "kustomization.yaml"


def images_component() -> dict[str, str]:
    """rgw-inference/<name> -> the reference every build must name: newName:newTag."""
    doc = yaml.safe_load(IMAGES_COMPONENT.read_text())
    assert doc["kind"] == "Component"
    return {entry["name"]: f"{entry['newName']}:{entry['newTag']}" for entry in doc["images"]}


def images_the_repository_builds() -> set[str]:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "images.sh"), "--list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return set(done.stdout.split())


def test_the_images_component_names_every_image_the_repository_builds() -> None:
    names = images_component()
    assert set(names) == {f"rgw-inference/{name}" for name in images_the_repository_builds()}
    for reference in names.values():
        tag = reference.rsplit(":", 1)[1]
        assert tag and tag != "latest", reference


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_every_project_image_is_tagged_by_the_images_component(overlay: Path) -> None:
    """Untagged means `:latest`: whatever was pushed last, and a pull on every pod start."""
    wanted = images_component()
    for doc, container in containers(build(overlay)):
        image = container["image"]
        name = our_image(container)
        where = f"{rel(overlay)}: {doc['kind']}/{doc['metadata']['name']} {image}"
        if name is None:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last or "@sha256:" in image, f"{where}: no tag (pulls :latest)"
        assert not image.endswith(":latest"), f"{where}: :latest"
        assert image == wanted[f"rgw-inference/{name}"], (
            f"{where}: not the name and tag of {rel(IMAGES_COMPONENT)} "
            f"({wanted[f'rgw-inference/{name}']}): does the kustomization list the component?"
        )


# --- Pod Security Admission: the `restricted` profile -------------------------------------------

# The Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards),
# Baseline and Restricted, for Linux pods.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(spec: Manifest) -> list[str]:
    """Why Pod Security Admission at level `restricted` would refuse a pod with this spec."""
    errors: list[str] = []
    pod = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            errors.append(f"{field}: true")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds & RESTRICTED_VOLUMES:
            errors.append(f"volume {volume.get('name')}: {sorted(kinds)} is not allowed")
    for sysctl in pod.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            errors.append(f"sysctl {sysctl.get('name')}")
    if pod.get("runAsUser") == 0:
        errors.append("pod runAsUser: 0")
    if (pod.get("appArmorProfile") or {}).get("type") not in {None, "RuntimeDefault", "Localhost"}:
        errors.append("pod appArmorProfile")
    errors += selinux_violations("pod", pod)
    if (pod.get("windowsOptions") or {}).get("hostProcess"):
        errors.append("pod hostProcess")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in {None, "RuntimeDefault", "Localhost"}:
        errors.append(f"pod seccompProfile {pod_seccomp}")
    every = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    for container in [*every, *(spec.get("ephemeralContainers") or [])]:
        errors += [f"{container.get('name')}: {e}" for e in container_violations(container, pod)]
    return errors


def selinux_violations(where: str, context: Manifest) -> list[str]:
    options = context.get("seLinuxOptions") or {}
    errors = []
    if options.get("type", "") not in SELINUX_TYPES:
        errors.append(f"{where} seLinuxOptions.type {options['type']}")
    if options.get("user") or options.get("role"):
        errors.append(f"{where} seLinuxOptions.user/role")
    return errors


def container_violations(container: Manifest, pod: Manifest) -> list[str]:
    context = container.get("securityContext") or {}
    errors = selinux_violations("container", context)
    if context.get("privileged"):
        errors.append("privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        errors.append("allowPrivilegeEscalation is not false")
    non_root = context.get("runAsNonRoot", pod.get("runAsNonRoot"))
    if non_root is not True:
        errors.append("runAsNonRoot is not true (pod or container)")
    if context.get("runAsUser") == 0:
        errors.append("runAsUser: 0")
    seccomp = (context.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
    if seccomp not in {"RuntimeDefault", "Localhost"}:
        errors.append(f"seccompProfile {seccomp or 'unset'} (RuntimeDefault or Localhost)")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        errors.append("capabilities.drop lacks ALL")
    added = set(capabilities.get("add") or [])
    if added - {"NET_BIND_SERVICE"}:
        errors.append(f"capabilities.add {sorted(added - {'NET_BIND_SERVICE'})}")
    if added - BASELINE_CAPABILITIES:
        errors.append("capabilities.add beyond the baseline set")
    if context.get("procMount", "Default") != "Default":
        errors.append("procMount")
    if (context.get("appArmorProfile") or {}).get("type") not in {
        None,
        "RuntimeDefault",
        "Localhost",
    }:
        errors.append("appArmorProfile")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        errors.append("hostProcess")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            errors.append(f"hostPort {port['hostPort']}")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(kind) or {}
        for handler in ("httpGet", "tcpSocket"):
            if (probe.get(handler) or {}).get("host"):
                errors.append(f"{kind}.{handler}.host")
    return errors


# The one hardened container context of the project: restricted, plus a fixed non-root uid (the
# images' user) so that runAsNonRoot never depends on the image's USER being numeric.
HARDENED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_the_namespace_enforces_the_restricted_profile(overlay: Path) -> None:
    namespaces = [doc for doc in build(overlay) if doc["kind"] == "Namespace"]
    assert namespaces, f"{rel(overlay)} builds no Namespace"
    for namespace in namespaces:
        labels = namespace["metadata"].get("labels", {})
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_every_pod_template_meets_the_restricted_profile(overlay: Path) -> None:
    checked = 0
    for doc in build(overlay):
        spec = pod_spec(doc)
        if spec is None:
            continue
        checked += 1
        errors = restricted_violations(spec)
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
    assert checked, f"{rel(overlay)} has no pod template"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_every_container_has_the_hardened_context(overlay: Path) -> None:
    for doc, container in containers(build(overlay)):
        context = container.get("securityContext") or {}
        differs = {
            key: context.get(key) for key, value in HARDENED.items() if context.get(key) != value
        }
        assert not differs, (
            f"{doc['kind']}/{doc['metadata']['name']} container {container.get('name')}: "
            f"{differs} (want {HARDENED})"
        )


def hardened_pod() -> Manifest:
    return {
        "containers": [{"name": "app", "image": "x", "securityContext": copy.deepcopy(HARDENED)}],
        "volumes": [{"name": "config", "configMap": {"name": "c"}}],
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.update(hostNetwork=True), "hostNetwork"),
        (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (
            lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation",
        ),
        (lambda s: s["containers"][0]["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser: 0"),
        (lambda s: s["containers"][0]["securityContext"].pop("seccompProfile"), "seccomp"),
        (
            lambda s: s["containers"][0]["securityContext"].update(
                seccompProfile={"type": "Unconfined"}
            ),
            "seccomp",
        ),
        (
            lambda s: s["containers"][0]["securityContext"].update(
                capabilities={"drop": ["NET_RAW"]}
            ),
            "drop lacks ALL",
        ),
        (
            lambda s: s["containers"][0]["securityContext"]["capabilities"].update(
                add=["SYS_ADMIN"]
            ),
            "capabilities.add",
        ),
        (
            lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
            "hostPort",
        ),
        (
            lambda s: s.update(initContainers=[{"name": "init", "image": "x"}]),
            "init: allowPrivilegeEscalation",
        ),
    ],
)
def test_restricted_check_refuses_what_pod_security_admission_refuses(
    change: Any, expected: str
) -> None:
    spec = hardened_pod()
    assert restricted_violations(spec) == []
    change(spec)
    errors = restricted_violations(spec)
    assert any(expected in error for error in errors), errors


def test_restricted_check_takes_pod_level_run_as_non_root_and_seccomp() -> None:
    spec = hardened_pod()
    context = spec["containers"][0]["securityContext"]
    del context["runAsNonRoot"], context["seccompProfile"]
    spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert restricted_violations(spec) == []


# --- the evaluation overlay (docs/evaluation.md) ------------------------------------------------


def test_evaluation_overlay_sends_every_object_to_both_classifiers() -> None:
    objects = index(build(KNATIVE / "overlays" / "evaluation"))
    assert ("Route", "classifiers") not in objects
    assert ("Subscription", "classifiers") not in objects
    for classifier in ("resnet", "vision"):
        route = objects[("Route", classifier)]["spec"]["traffic"]
        assert [(t["configurationName"], t["percent"]) for t in route] == [(classifier, 100)]
        subscription = objects[("Subscription", classifier)]["spec"]
        assert subscription["channel"]["name"] == "rgw-events"
        assert subscription["subscriber"]["ref"] == {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Route",
            "name": classifier,
        }
        assert subscription["reply"]["ref"]["kind"] == "Broker"
        assert subscription["reply"]["ref"]["name"] == "default"
        delivery_is_the_contract(subscription["delivery"])
    trigger = objects[("Trigger", "evaluation")]["spec"]
    assert trigger["broker"] == "default"
    assert trigger["filter"]["attributes"] == {"type": "dev.rgwinference.classification.result"}
    assert trigger["subscriber"]["ref"]["name"] == "evaluation"
    delivery_is_the_contract(trigger["delivery"])
    annotations = objects[("Service", "evaluation")]["spec"]["template"]["metadata"]["annotations"]
    # The pairs meet in one process's memory: exactly one replica, kept up.
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert annotations["autoscaling.knative.dev/max-scale"] == "1"


def test_base_runs_the_evaluation_function_but_routes_nothing_to_it() -> None:
    objects = index(build(KNATIVE / "base"))
    annotations = objects[("Service", "evaluation")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/max-scale"] == "1"
    for (kind, _), doc in objects.items():
        if kind in {"Subscription", "Trigger"}:
            assert doc["spec"]["subscriber"]["ref"]["name"] != "evaluation", doc["metadata"]


@pytest.mark.parametrize(
    ("overlay", "created"),
    [
        ("base", None),
        ("overlays/broker", "com.amazonaws.s3.ObjectCreated:Put"),
        ("overlays/rgw-cloudevents-broker", "com.amazonaws.ObjectCreated:Put"),
    ],
)
def test_every_created_object_also_goes_to_compliance(overlay: str, created: str | None) -> None:
    """Issue 16: a Subscription (the Channel) or a Trigger (the Broker) per topology sends every
    object to the compliance function beside the classifiers; its verdicts go to the Broker."""
    objects = index(build(KNATIVE / overlay))
    env = {
        e["name"]: e.get("value")
        for e in objects[("Service", "compliance")]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["MODEL_NAME"] == "open_nsfw"
    assert env["RESNET_SERVING_ENDPOINT"].startswith("modelserver.")
    if created is None:
        subscription = objects[("Subscription", "compliance")]["spec"]
        assert subscription["channel"]["name"] == "rgw-events"
        assert subscription["reply"]["ref"] == {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "name": "default",
        }
        delivery_is_the_contract(subscription["delivery"])
        return
    assert not [name for kind, name in objects if kind == "Subscription"]
    trigger = objects[("Trigger", "compliance")]["spec"]
    assert trigger["subscriber"]["ref"]["name"] == "compliance"
    assert trigger_matches(trigger["filters"], created)
    for other in ("com.amazonaws.ObjectRemoved:Delete", "dev.rgwinference.compliance.verdict"):
        assert not trigger_matches(trigger["filters"], other), other
    delivery_is_the_contract(trigger["delivery"])
