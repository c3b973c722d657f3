"""The reconcile CronJob component (knative/components/reconcile), built into an overlay of the
base the way docs/source.md says: tagged, hardened, its env read by the code, its refs real."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.test_knative_manifests import (
    HARDENED,
    KNATIVE,
    build,
    containers,
    env_names_read_by_code,
    index,
)


def overlay_with_reconcile(tmp_path: Path) -> Path:
    base = os.path.relpath(KNATIVE / "base", tmp_path)
    components = [
        os.path.relpath(KNATIVE / "components" / name, tmp_path) for name in ("reconcile", "images")
    ]
    listed = "\n".join(f"  - {c}" for c in components)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: rgw-inference\nresources:\n  - {base}\ncomponents:\n{listed}\n"
    )
    return tmp_path


def test_the_cronjob_runs_reconcile_against_the_channel(tmp_path: Path) -> None:
    docs = build(overlay_with_reconcile(tmp_path))
    objects = index(docs)
    [(job, container)] = [(d, c) for d, c in containers(docs) if d["kind"] == "CronJob"]
    assert job["metadata"]["name"] == "reconcile"
    assert container["command"][-2:] == ["-m", "source.reconcile"]
    source_image = next(
        c["image"] for d, c in containers(docs) if d["metadata"]["name"] == "rgw-source"
    )
    assert container["image"] == source_image and ":" in source_image
    args = container["args"]
    sink = args[args.index("--sink") + 1]
    assert sink.startswith("http://rgw-events-kn-channel.rgw-inference.svc")
    assert ("Channel", "rgw-events") in objects
    context = container["securityContext"]
    assert {k: context.get(k) for k in HARDENED} == HARDENED
    names = {env["name"] for env in container["env"]} - {"RECONCILE_BUCKET"}
    assert names <= env_names_read_by_code()
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in objects[("Secret", ref["name"])]["data"]
