"""The functions the manifests declare, and the environment each gets on this machine.

A function is a Knative `Service` or `Configuration` (serving.knative.dev/v1) whose first
container image is `rgw-inference/<name>` (any tag), where `<name>` is also the object's
`metadata.name` and `functions.<module>` is a package of this checkout, `<module>` being
`<name>` with `-` as `_` (Kubernetes names have no `_`, Python packages no `-`); locally it
runs as `python -m functions.<module>`. Objects that share an image under another name (the
`dead-letters` Service runs the receiver image) are not functions: collectors play them.

Its local environment is built in layers, later ones winning:

1. the data of every ConfigMap named in `envFrom[].configMapRef` (with `prefix`);
2. the container's `env`, in order: `value`s as written, `configMapKeyRef`s from the ConfigMaps
   and `secretKeyRef`s from the local run's secrets;
3. cluster addresses rewritten: `<service>.<namespace>.svc[.cluster.local][:port]` of a Service
   the local run plays becomes its loopback address (the scheme, if any, becomes http://);
4. the S3 settings of the local RGW (endpoint, region and keys);
5. the local-only overrides of the annotation `local.rgw-inference.dev/env` on the object's
   metadata: a JSON object of strings, where `{modelserver-grpc}`, `{modelserver-rest}` and
   `{s3-endpoint}` stand for this run's addresses.

The caller then adds its own run settings (fault runs, PORT and HOST). A value still naming a
cluster address after all that is refused: the process could not reach it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localknative.topology import Ref, Topology, TopologyError, read_documents

IMAGE_PREFIX = "rgw-inference/"
LOCAL_ENV_ANNOTATION = "local.rgw-inference.dev/env"
FUNCTION_KINDS = ("Service", "Configuration")
SERVING_API = "serving.knative.dev/v1"
# What the local-only overrides may name; the runner fills them in when it starts a function.
PLACEHOLDERS = ("modelserver-grpc", "modelserver-rest", "s3-endpoint")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9-]*)\}")
_CLUSTER_ADDRESS = re.compile(
    r"(?P<scheme>https?://)?(?P<service>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
    r"\.(?P<namespace>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.svc(?:\.cluster\.local)?"
    r"(?::(?P<port>\d+))?"
)
_DEFAULT_PORTS = {"http://": 80, "https://": 443}

# What a function does for the demo, from the Subscriptions that reach it.
CLASSIFIER = "classifier"  # its Subscription has a `reply`: it answers with a result
AUDIT = "audit"  # reached by a Subscription without reply: it only takes note (the receiver)
# Its Subscription has a `reply`, and its manifest says `local.rgw-inference.dev/role: verdict`:
# every object reaches it beside the classifiers, and it answers with a verdict about the object
# (the compliance function), which the demo reports apart from the classifications.
VERDICT = "verdict"
UNSUBSCRIBED = "unsubscribed"  # nothing routes to it; it still runs, for direct requests


@dataclass(frozen=True)
class SecretRef:
    secret: str
    key: str


@dataclass(frozen=True)
class FunctionSpec:
    """One function as the manifests declare it; the env is a template until `render_env`."""

    ref: Ref
    image: str
    # ConfigMap data first, then the container's env, in order; a SecretRef is filled locally.
    env: tuple[tuple[str, str | SecretRef], ...]
    local_env: tuple[tuple[str, str], ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def module(self) -> str:
        return module_of(self.ref.name)

    @property
    def refs(self) -> tuple[Ref, Ref]:
        """What a Route or Subscription may call it: a Service makes a Configuration of its name."""
        return (Ref("Service", self.name), Ref("Configuration", self.name))


@dataclass(frozen=True)
class LocalRun:
    """What this run has to offer a function's environment."""

    secrets: Mapping[tuple[str, str], str]  # (Secret name, key) -> value
    services: Mapping[tuple[str, int], str]  # (Service name, port) -> 127.0.0.1:port
    s3_env: Mapping[str, str]
    endpoints: Mapping[str, str]  # placeholder -> value
    namespace: str | None = None  # only addresses in it are rewritten; None: any


def module_of(name: str) -> str:
    """The package that implements function `name` (a Kubernetes name: `-`, never `_`)."""
    return "functions." + name.replace("-", "_")


def package_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def load_functions(
    directory: Path, has_package: Callable[[str], bool] = package_exists
) -> list[FunctionSpec]:
    """Every function the manifests in `directory` declare, sorted by name."""
    return parse_functions(read_documents(directory), has_package)


def parse_functions(
    documents: Iterable[tuple[str, Any]], has_package: Callable[[str], bool] = package_exists
) -> list[FunctionSpec]:
    documents = [(where, doc) for where, doc in documents if isinstance(doc, Mapping)]
    config_maps = _config_maps(documents)
    functions: dict[str, FunctionSpec] = {}
    for where, doc in documents:
        if doc.get("kind") not in FUNCTION_KINDS or doc.get("apiVersion") != SERVING_API:
            continue
        metadata = doc.get("metadata") or {}
        name = metadata.get("name")
        container = _first_container(doc)
        image = str(container.get("image", "")) if container else ""
        if not isinstance(name, str) or _image_name(image) != name:
            continue
        if not has_package(module_of(name)):
            continue
        at = f"{where}: {doc['kind']}/{name}"
        if name in functions:
            raise TopologyError(f"{at}: a second function named {name!r}")
        annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
        functions[name] = FunctionSpec(
            ref=Ref(str(doc["kind"]), name),
            image=image,
            env=_container_env(container, config_maps, at),
            local_env=_local_env(annotations.get(LOCAL_ENV_ANNOTATION), at),
            annotations=annotations,
        )
    return [functions[name] for name in sorted(functions)]


def _image_name(image: str) -> str | None:
    if not image.startswith(IMAGE_PREFIX):
        return None
    rest = image[len(IMAGE_PREFIX) :].split("@", 1)[0]
    return rest.split(":", 1)[0] or None


def _first_container(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or []
    return containers[0] if containers and isinstance(containers[0], Mapping) else {}


def _config_maps(documents: Iterable[tuple[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        str(doc["metadata"]["name"]): {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
        for _, doc in documents
        if doc.get("kind") == "ConfigMap" and (doc.get("metadata") or {}).get("name")
    }


def _container_env(
    container: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, str]], at: str
) -> tuple[tuple[str, str | SecretRef], ...]:
    env: list[tuple[str, str | SecretRef]] = []
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref is None:
            raise TopologyError(f"{at}: envFrom supports configMapRef only, got {dict(source)}")
        data = config_maps.get(str(ref.get("name")))
        if data is None:
            if ref.get("optional"):
                continue
            raise TopologyError(f"{at}: envFrom names ConfigMap {ref.get('name')!r}, not found")
        prefix = str(source.get("prefix") or "")
        env += [(prefix + key, value) for key, value in data.items()]
    for entry in container.get("env") or []:
        name = str(entry["name"])
        if "value" in entry:
            env.append((name, str(entry["value"])))
            continue
        value_from = entry.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env.append((name, SecretRef(str(ref["name"]), str(ref["key"]))))
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            try:
                env.append((name, config_maps[str(ref["name"])][str(ref["key"])]))
            except KeyError:
                raise TopologyError(f"{at}: env {name}: no ConfigMap key {dict(ref)}") from None
        else:
            raise TopologyError(f"{at}: env {name}: only value, secretKeyRef, configMapKeyRef")
    return tuple(env)


def _local_env(text: str | None, at: str) -> tuple[tuple[str, str], ...]:
    if text is None:
        return ()
    where = f"{at}: annotation {LOCAL_ENV_ANNOTATION}"
    try:
        overrides = json.loads(text)
    except ValueError as exc:
        raise TopologyError(f"{where}: not JSON: {exc}") from None
    if not isinstance(overrides, dict) or not all(isinstance(v, str) for v in overrides.values()):
        raise TopologyError(f"{where}: expected a JSON object of strings")
    for value in overrides.values():
        for placeholder in _PLACEHOLDER.findall(value):
            if placeholder not in PLACEHOLDERS:
                raise TopologyError(
                    f"{where}: unknown placeholder {{{placeholder}}} (known: {PLACEHOLDERS})"
                )
    return tuple((str(k), v) for k, v in overrides.items())


def render_env(spec: FunctionSpec, run: LocalRun) -> dict[str, str]:
    """The function's environment for this run (layers 1-5 of the module docstring)."""
    at = f"{spec.ref}"
    env: dict[str, str] = {}
    for name, value in spec.env:
        if isinstance(value, SecretRef):
            secret = run.secrets.get((value.secret, value.key))
            if secret is None:
                raise TopologyError(
                    f"{at}: env {name} reads Secret {value.secret!r} key {value.key!r}, "
                    "which the local run does not have"
                )
            env[name] = secret
        else:
            env[name] = value
    env = {name: _rewrite(value, run) for name, value in env.items()}
    env.update(run.s3_env)
    for name, value in spec.local_env:
        env[name] = _PLACEHOLDER.sub(lambda m: run.endpoints[m.group(1)], value)
    for name, value in env.items():
        match = _CLUSTER_ADDRESS.search(value)
        if match is not None and _in_namespace(match, run):
            raise TopologyError(
                f"{at}: env {name}={value!r} names {match.group(0)}, which the local run does "
                f"not play; give it a local value in the annotation {LOCAL_ENV_ANNOTATION}"
            )
    return env


def _in_namespace(match: re.Match[str], run: LocalRun) -> bool:
    return run.namespace is None or match.group("namespace") == run.namespace


def _rewrite(value: str, run: LocalRun) -> str:
    def local(match: re.Match[str]) -> str:
        scheme = match.group("scheme")
        port = int(match.group("port") or _DEFAULT_PORTS.get(scheme or "", 80))
        address = run.services.get((match.group("service"), port))
        if address is None or not _in_namespace(match, run):
            return match.group(0)
        return f"http://{address}" if scheme else address

    return _CLUSTER_ADDRESS.sub(local, value)


def subscribers(topology: Topology, reply: bool) -> set[Ref]:
    """What the Subscriptions with (or without) a `reply` deliver to, through their Routes."""
    refs: set[Ref] = set()
    for sub in topology.subscriptions:
        ref = sub.subscriber.ref
        if ref is None or (sub.reply is not None) != reply:
            continue
        if ref.kind == "Route":
            refs.update(t.target for t in topology.traffic(ref.name))
        else:
            refs.add(ref)
    return refs


def function_roles(topology: Topology, functions: Iterable[FunctionSpec]) -> dict[str, str]:
    """name -> CLASSIFIER, VERDICT, AUDIT or UNSUBSCRIBED; a function reached both ways
    classifies (or gives its verdict)."""
    classifiers, audits = subscribers(topology, reply=True), subscribers(topology, reply=False)
    roles = {}
    for spec in functions:
        refs = set(spec.refs)
        if refs & classifiers:
            roles[spec.name] = VERDICT if _gives_verdicts(topology, spec.ref) else CLASSIFIER
        else:
            roles[spec.name] = AUDIT if refs & audits else UNSUBSCRIBED
    return roles


def audit_subscriptions(topology: Topology) -> frozenset[str]:
    """Names of the Subscriptions whose deliveries are not the routing to a classifier: the
    subscriber only takes note (no `reply`: the receiver) or gives a verdict beside the
    classifiers (a VERDICT function's: compliance). The demo prints them, and does not take
    them for where an object was routed to be classified."""
    return frozenset(
        s.name
        for s in topology.subscriptions
        if s.reply is None or (s.subscriber.ref and _gives_verdicts(topology, s.subscriber.ref))
    )


def _gives_verdicts(topology: Topology, ref: Ref) -> bool:
    """Whether the function `ref` names (a Service makes a Configuration of its name) says it
    is a VERDICT function."""
    return any(topology.roles.get(Ref(kind, ref.name)) == VERDICT for kind in FUNCTION_KINDS)


def namespace_of(directory: Path) -> str | None:
    """The kustomization's namespace: the one cluster addresses of this base live in."""
    for _, doc in read_documents(directory):
        if isinstance(doc, Mapping) and doc.get("kind") == "Kustomization":
            namespace = doc.get("namespace")
            return str(namespace) if namespace else None
    return None


def service_ports(directory: Path, name: str) -> dict[str, int]:
    """Port name -> port of the core v1 Service `name` (e.g. the model server's grpc, http)."""
    for _, doc in read_documents(directory):
        if (
            isinstance(doc, Mapping)
            and doc.get("apiVersion") == "v1"
            and doc.get("kind") == "Service"
            and (doc.get("metadata") or {}).get("name") == name
        ):
            ports = (doc.get("spec") or {}).get("ports") or []
            return {str(p.get("name", p["port"])): int(p["port"]) for p in ports}
    return {}


def secret_examples(directory: Path) -> dict[tuple[str, str], str]:
    """(Secret, key) -> the placeholder value of the kustomization's secretGenerator env files,
    so a Secret the run has no real value for still resolves (the run overrides the ones it
    has: S3 keys, the Vision API key)."""
    values: dict[tuple[str, str], str] = {}
    for _, doc in read_documents(directory):
        if not (isinstance(doc, Mapping) and doc.get("kind") == "Kustomization"):
            continue
        for generator in doc.get("secretGenerator") or []:
            for env_file in generator.get("envs") or []:
                path = directory / str(env_file)
                if not path.is_file():
                    continue
                for line in path.read_text().splitlines():
                    key, sep, value = line.partition("=")
                    if sep and not key.lstrip().startswith("#"):
                        values[(str(generator["name"]), key.strip())] = value.strip()
    return values
