"""An overlay of knative/, as the local runner reads it: one directory of plain manifests.

The local runner reads a directory of YAML files (`localknative.topology.read_documents`), not a
kustomize build. `materialize(overlay, target)` writes into `target` the objects the overlay
builds, so that `demo --compare` plays knative/overlays/evaluation with the runner unchanged:

- `resources`: files, and directories with a kustomization of their own (read the same way,
  recursively); for a directory, the objects its kustomization lists;
- `patches` (inline `patch` or `path`) that name one object by kind and name, either
  `$patch: delete` (the object goes) or a merge patch (maps merge, anything else is replaced,
  null removes a key; what kustomize does to a custom resource such as a Knative Service);
- `namespace` and the root base's `secretGenerator` (its env files by absolute path), which the
  runner reads for cluster addresses and placeholder secrets.

Anything else (patches with a `target` selector, JSON 6902 patches, generators of overlays) is
refused with a TopologyError rather than played differently from `kubectl kustomize`; a unit
test holds the result to kubectl's build of the evaluation overlay. Components (the images'
names and tags) do not change what the runner reads and are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localknative.topology import TopologyError

KUSTOMIZATION = "kustomization.yaml"
OBJECTS = "objects.yaml"


@dataclass
class Build:
    objects: list[dict[str, Any]] = field(default_factory=list)
    namespace: str | None = None
    secret_generator: list[dict[str, Any]] = field(default_factory=list)


def _identity(doc: Mapping[str, Any]) -> tuple[str, str]:
    return str(doc.get("kind")), str((doc.get("metadata") or {}).get("name"))


def _load_kustomization(directory: Path) -> dict[str, Any]:
    path = directory / KUSTOMIZATION
    if not path.is_file():
        raise TopologyError(f"{directory}: no {KUSTOMIZATION}")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise TopologyError(f"{path}: not a kustomization")
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _apply(objects: list[dict[str, Any]], patch: dict[str, Any], where: str) -> None:
    wanted = _identity(patch)
    at = next((i for i, doc in enumerate(objects) if _identity(doc) == wanted), None)
    if at is None:
        raise TopologyError(f"{where}: patch names {wanted[0]}/{wanted[1]}, which is not built")
    if patch.get("$patch") == "delete":
        del objects[at]
        return
    body = {key: value for key, value in patch.items() if key not in ("apiVersion", "kind")}
    objects[at] = merge_patch(objects[at], body)


def read_overlay(directory: Path) -> Build:
    """The objects `directory`'s kustomization builds (the subset of the module docstring)."""
    kustomization = _load_kustomization(directory)
    build = Build(namespace=kustomization.get("namespace"))
    for resource in kustomization.get("resources") or []:
        path = (directory / str(resource)).resolve()
        if path.is_dir():
            inner = read_overlay(path)
            build.objects += inner.objects
            build.namespace = build.namespace or inner.namespace
            build.secret_generator = build.secret_generator or inner.secret_generator
        else:
            build.objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in kustomization.get("secretGenerator") or []:
        envs = [str((directory / str(env)).resolve()) for env in generator.get("envs") or []]
        build.secret_generator.append({**generator, "envs": envs})
    for index, entry in enumerate(kustomization.get("patches") or []):
        where = f"{directory / KUSTOMIZATION}: patches[{index}]"
        if "target" in entry:
            raise TopologyError(f"{where}: a `target` selector is not played locally")
        text = entry["patch"] if "patch" in entry else (directory / entry["path"]).read_text()
        patch = yaml.safe_load(text)
        if not isinstance(patch, dict) or not isinstance(patch.get("metadata"), dict):
            raise TopologyError(f"{where}: only patches naming one object are played locally")
        _apply(build.objects, patch, where)
    return build


def materialize(overlay: Path, target: Path) -> Path:
    """Write what `overlay` builds into `target` (objects.yaml and a kustomization.yaml with its
    namespace and secretGenerator); returns `target`, for `--knative-dir`."""
    build = read_overlay(overlay)
    target.mkdir(parents=True, exist_ok=True)
    (target / OBJECTS).write_text(yaml.safe_dump_all(build.objects, sort_keys=False))
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [OBJECTS],
        "secretGenerator": build.secret_generator,
    }
    if build.namespace:
        kustomization["namespace"] = build.namespace
    (target / KUSTOMIZATION).write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return target
