"""`check-cluster [--overlay DIR]`: what a live cluster's Knative settings would refuse in the
manifests, said before anything is applied.

The requirements come from the build itself (`kubectl kustomize DIR`): every revision template's
`max-scale`/`initial-scale` annotations, `containerConcurrency` and timeouts, the pod spec fields
that Serving puts behind feature flags, the Eventing features the objects use (Trigger `filters`,
`delivery.timeout`, EventPolicy, ...) and where the project's images live. They are compared with
what `kubectl get configmap NAME -n NAMESPACE -o yaml` prints for Serving's config-autoscaler,
config-defaults, config-features and config-deployment and Eventing's config-features; a key a
ConfigMap leaves out takes Knative's default (its `_example` block is documentation, not
settings). Exit 1 when something would be refused or fail, 0 otherwise, 2 when kubectl fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from cli.cluster_config import CONFIG_MAPS, ConfigMaps, Finding, version_of
from cli.cluster_requirements import check
from cli.commands import add_command

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OVERLAY = Path("knative/base")


class ClusterError(Exception):
    """kubectl could not answer (no cluster, no permission, a build error): nothing was checked."""


def run_kubectl(kubectl: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [kubectl, *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"{kubectl} {' '.join(args)}: {exc}") from exc


def build(kubectl: str, overlay: Path) -> list[dict[str, Any]]:
    done = run_kubectl(kubectl, "kustomize", str(overlay))
    if done.returncode != 0:
        raise ClusterError(f"kubectl kustomize {overlay} failed:\n{done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if isinstance(doc, dict)]


def read_config_maps(kubectl: str, context: str | None) -> ConfigMaps:
    """(namespace, name) -> the ConfigMap as kubectl prints it, or None when it does not exist."""
    maps: ConfigMaps = {}
    for namespace, name in CONFIG_MAPS:
        args = ["get", "configmap", name, "-n", namespace, "-o", "yaml"]
        if context:
            args += ["--context", context]
        done = run_kubectl(kubectl, *args)
        if done.returncode != 0:
            # Only this ConfigMap missing (a context or namespace missing is an error).
            if f'configmaps "{name}" not found' in done.stderr:
                maps[(namespace, name)] = None
                continue
            raise ClusterError(f"kubectl {' '.join(args)} failed:\n{done.stderr.strip()}")
        loaded = yaml.safe_load(done.stdout)
        if not isinstance(loaded, dict) or loaded.get("kind") != "ConfigMap":
            raise ClusterError(f"kubectl {' '.join(args)} printed no ConfigMap")
        maps[(namespace, name)] = loaded
    return maps


def report(findings: list[Finding], overlay: Path, maps: ConfigMaps) -> str:
    serving = version_of(maps, "knative-serving") or "?"
    eventing = version_of(maps, "knative-eventing") or "?"
    lines = [
        f"Knative Serving {serving}, Eventing {eventing}; manifests: kubectl kustomize {overlay}"
    ]
    width = max(len(f.level) for f in findings) if findings else 4
    lines += [f"{f.level.ljust(width)}  {f.setting}: {f.message}" for f in findings]
    failures = sum(1 for f in findings if f.level == "FAIL")
    if failures:
        lines.append(
            f"{failures} would fail: change those settings (docs/deploy.md) before applying"
        )
    else:
        lines.append("nothing here would refuse these manifests")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    kubectl = shutil.which(args.kubectl) or args.kubectl
    overlay: Path = args.overlay
    if not overlay.is_absolute() and not overlay.exists():
        overlay = REPO_ROOT / overlay
    try:
        docs = build(kubectl, overlay)
        maps = read_config_maps(kubectl, args.context)
    except ClusterError as exc:
        sys.stderr.write(f"check-cluster: {exc}\n")
        return 2
    findings = check(docs, maps)
    print(report(findings, args.overlay, maps))
    return 1 if any(f.level == "FAIL" for f in findings) else 0


HELP = "read the cluster's Knative ConfigMaps and say what would refuse the manifests"


def register(groups: Any) -> None:
    parser = add_command(groups, "check-cluster", HELP, __doc__)
    parser.add_argument(
        "--overlay",
        type=Path,
        default=DEFAULT_OVERLAY,
        help="the kustomize directory you mean to apply (default: knative/base)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--kubectl", default="kubectl", help="the kubectl to run")
    parser.set_defaults(run=run)
