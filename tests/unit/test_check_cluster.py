"""`rgw-inference check-cluster` against recorded `kubectl get configmap -o yaml` outputs.

The checking logic runs directly on the builds of knative/ and the recorded ConfigMaps of
tests/data/cluster/ (a fresh Serving 1.23 / Eventing 1.22 install, and clusters that changed
some settings); the command itself runs once per outcome with a fake `kubectl` first on PATH
that prints the recorded files and hands `kubectl kustomize` to the real one.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.cluster_requirements import CONFIG_MAPS, ConfigMaps, Finding, check

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests" / "data" / "cluster"
KNATIVE = REPO / "knative"
OVERLAYS = sorted(
    path.parent
    for path in KNATIVE.rglob("kustomization.yaml")
    if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization"
)


def recorded(variant: str = "upstream", missing: tuple[str, ...] = ()) -> ConfigMaps:
    """The ConfigMaps of a recorded cluster: the variant's own, else the upstream ones."""
    maps: ConfigMaps = {}
    for namespace, name in CONFIG_MAPS:
        if f"{namespace}/{name}" in missing:
            maps[(namespace, name)] = None
            continue
        own = RECORDED / variant / namespace / f"{name}.yaml"
        path = own if own.is_file() else RECORDED / "upstream" / namespace / f"{name}.yaml"
        maps[(namespace, name)] = yaml.safe_load(path.read_text())
    return maps


@functools.cache
def built(overlay: Path) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found on PATH (needed for `kubectl kustomize`)"
    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def docs_of(overlay: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(built(KNATIVE / overlay)))


def failures(findings: list[Finding]) -> dict[str, str]:
    return {f.setting: f.message for f in findings if f.level == "FAIL"}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: str(p.relative_to(REPO)))
def test_a_fresh_install_takes_every_build(overlay: Path) -> None:
    findings = check(list(built(overlay)), recorded())
    assert not failures(findings), failures(findings)
    settings = {f.setting for f in findings}
    # The build's needs were computed, not skipped.
    assert "knative-serving/config-defaults container-concurrency-max-limit" in settings
    assert "knative-serving/config-defaults max-revision-timeout-seconds" in settings


def test_tight_limits_name_every_revision_they_would_refuse() -> None:
    found = failures(check(docs_of("base"), recorded("tight-limits")))
    scale = found["knative-serving/config-autoscaler max-scale-limit"]
    assert "Configuration/resnet max-scale=10" in scale and "Configuration/vision" in scale
    assert "Service/receiver" not in scale  # its max-scale 5 is within the limit
    concurrency = found["knative-serving/config-defaults container-concurrency-max-limit"]
    for where in ("Service/receiver", "Service/dead-letters", "Service/results"):
        assert f"{where} containerConcurrency=50" in concurrency
    assert "Configuration/resnet" not in concurrency  # 4 is within 20
    timeout = found["knative-serving/config-defaults max-revision-timeout-seconds"]
    assert "Configuration/resnet timeoutSeconds=60" in timeout
    assert "Service/receiver" not in timeout  # 30 is within 30


def test_a_positive_max_scale_limit_refuses_an_unlimited_revision() -> None:
    docs = docs_of("base")
    for doc in docs:
        if doc["metadata"]["name"] == "receiver" and doc["kind"] == "Service":
            doc["spec"]["template"]["metadata"]["annotations"][
                "autoscaling.knative.dev/max-scale"
            ] = "0"
    found = failures(check(docs, recorded("tight-limits")))
    assert (
        "Service/receiver max-scale=0" in found["knative-serving/config-autoscaler max-scale-limit"]
    )


def test_trigger_filters_need_them_enabled() -> None:
    maps = recorded("filters-off")
    found = failures(check(docs_of("overlays/broker"), maps))
    message = found["knative-eventing/config-features new-trigger-filters"]
    assert "Trigger/classifiers" in message and "Trigger/receiver" in message
    # The base routes with a Channel and `filter` only: nothing there needs the flag.
    assert not failures(check(docs_of("base"), maps))


def test_filters_of_an_eventing_before_1_14_need_the_flag_set() -> None:
    maps = recorded()
    features = maps[("knative-eventing", "config-features")]
    assert features is not None
    features["metadata"]["labels"]["app.kubernetes.io/version"] = "1.13.4"
    assert "knative-eventing/config-features new-trigger-filters" in failures(
        check(docs_of("overlays/broker"), maps)
    )
    features["data"]["new-trigger-filters"] = "enabled"
    assert not failures(check(docs_of("overlays/broker"), maps))


def test_strict_transport_encryption_refuses_plain_http_into_eventing() -> None:
    found = failures(check(docs_of("overlays/rook-cloudevents"), recorded("filters-off")))
    message = found["knative-eventing/config-features transport-encryption"]
    assert "CephBucketTopic/rgw-events" in message


def with_image_prefix(docs: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    for doc in docs:
        for container in (
            doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            if container["image"].startswith("rgw-inference/"):
                container["image"] = prefix + container["image"]
    return docs


def test_a_local_prefix_must_skip_tag_resolution() -> None:
    key = "knative-serving/config-deployment registries-skipping-tag-resolving"
    docs = with_image_prefix(docs_of("base"), "kind.local/")
    assert not failures(check(docs, recorded()))  # kind.local is skipped by default
    message = failures(check(docs, recorded("kind")))[key]
    assert "kind.local" in message and "Unable to fetch image" in message
    # A real registry cannot be checked from here: a warning, not a failure.
    findings = check(docs_of("base"), recorded("kind"))
    assert not failures(findings)
    warned = [f for f in findings if f.setting == key and f.level == "warn"]
    assert warned and "docker.io" in warned[0].message


def test_a_missing_config_map_fails() -> None:
    found = failures(
        check(docs_of("base"), recorded(missing=("knative-eventing/config-features",)))
    )
    assert "not found" in found["knative-eventing/config-features"]


def test_a_pod_spec_field_behind_a_disabled_serving_flag_fails() -> None:
    docs = docs_of("base")
    resnet = next(
        d for d in docs if d["kind"] == "Configuration" and d["metadata"]["name"] == "resnet"
    )
    spec = resnet["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}]
    spec["nodeSelector"] = {"disk": "ssd"}
    found = failures(check(docs, recorded()))
    assert (
        "Configuration/resnet"
        in found["knative-serving/config-features kubernetes.podspec-persistent-volume-claim"]
    )
    assert "knative-serving/config-features kubernetes.podspec-persistent-volume-write" in found
    assert "knative-serving/config-features kubernetes.podspec-nodeselector" in found


def test_an_event_policy_needs_oidc() -> None:
    docs = docs_of("overlays/broker")
    docs.append(
        {
            "apiVersion": "eventing.knative.dev/v1alpha1",
            "kind": "EventPolicy",
            "metadata": {"name": "only-rgw", "namespace": "rgw-inference"},
            "spec": {"from": [{"sub": "system:serviceaccount:rook-ceph:rgw"}]},
        }
    )
    found = failures(check(docs, recorded()))
    assert "not enforced" in found["knative-eventing/config-features authentication-oidc"]


# --- the command, with a fake kubectl -----------------------------------------------------------

FAKE_KUBECTL = """#!{python}
# Prints the recorded ConfigMap for `get configmap NAME -n NS -o yaml`; the rest is real kubectl.
import os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:1] == ["kustomize"]:
    os.execv({real!r}, [{real!r}, *args])
if os.environ.get("FAKE_DOWN"):
    sys.exit("The connection to the server localhost:8080 was refused")
name, namespace = args[2], args[args.index("-n") + 1]
if f"{{namespace}}/{{name}}" in os.environ.get("FAKE_MISSING", "").split(","):
    sys.exit(f'Error from server (NotFound): configmaps "{{name}}" not found')
recorded = Path({recorded!r})
own = recorded / os.environ["FAKE_CLUSTER"] / namespace / f"{{name}}.yaml"
path = own if own.is_file() else recorded / "upstream" / namespace / f"{{name}}.yaml"
sys.stdout.write(path.read_text())
"""


def check_cluster(tmp_path: Path, overlay: str, **fake: str) -> subprocess.CompletedProcess[str]:
    real = shutil.which("kubectl")
    assert real
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable, real=real, recorded=str(RECORDED)))
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **fake}
    return subprocess.run(
        [sys.executable, "-m", "cli", "check-cluster", "--overlay", overlay],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_passes_a_fresh_install(tmp_path: Path) -> None:
    done = check_cluster(tmp_path, "knative/overlays/broker", FAKE_CLUSTER="upstream")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Knative Serving 1.23.0, Eventing 1.22.2")
    assert (
        "ok    knative-serving/config-defaults container-concurrency-max-limit: 1000" in done.stdout
    )


def test_the_command_says_what_would_fail_and_exits_1(tmp_path: Path) -> None:
    done = check_cluster(tmp_path, "knative/overlays/broker", FAKE_CLUSTER="tight-limits")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert len(lines) == 3, done.stdout
    assert any("max-scale-limit: 5" in line for line in lines)
    assert "3 would fail" in done.stdout


def test_the_command_exits_2_when_kubectl_cannot_reach_the_cluster(tmp_path: Path) -> None:
    done = check_cluster(tmp_path, "knative/base", FAKE_CLUSTER="upstream", FAKE_DOWN="1")
    assert done.returncode == 2
    assert "connection to the server" in done.stderr


def test_the_command_reports_a_missing_config_map(tmp_path: Path) -> None:
    done = check_cluster(
        tmp_path,
        "knative/base",
        FAKE_CLUSTER="upstream",
        FAKE_MISSING="knative-eventing/config-features",
    )
    assert done.returncode == 1
    assert "FAIL  knative-eventing/config-features: not found" in done.stdout
