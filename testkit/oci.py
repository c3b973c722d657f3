"""Build and run the project's images with podman, state kept in the repo's .cache/oci.

Shared by the image tests and benchmarks/bench_images.py. The base image is made locally
(scripts/oci-base.sh: debootstrap, no registry); builds run offline from host-downloaded wheels.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OCI_ROOT = REPO / ".cache" / "oci"
BASE_IMAGE = "localhost/bookworm-python:local"
TAG = "test"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    port: int  # container port the health check uses
    health: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        return f"localhost/rgw-inference/{self.name}:{TAG}"


def function_names() -> list[str]:
    """The function images scripts/images.sh builds: one per functions/<folder>/ with a
    __main__.py, named for its Knative Service (the folder with '_' as '-')."""
    folders = (main.parent.name for main in (REPO / "functions").glob("*/__main__.py"))
    return sorted(folder.replace("_", "-") for folder in folders)


def ready_alone(function: str) -> bool:
    """Whether the function's container can pass readiness with nothing else running.

    A function that keeps `Function.ready` (always true) can; one that overrides it, itself or
    through a base class of common/ (`ServedModelClassifier`), waits for its own client (the
    model server, Vision), which a lone container has not. Read from the source text, so the
    test process imports no function.
    """
    app = REPO / "functions" / function.replace("-", "_") / "app.py"
    waiting = _classes_defining_ready(ast.parse(app.read_text())) | _common_classes_defining_ready()
    for node in ast.walk(ast.parse(app.read_text())):
        if isinstance(node, ast.ClassDef):
            bases = {_base_name(base) for base in node.bases}
            if node.name in waiting or bases & waiting:
                return False
    return True


def _classes_defining_ready(tree: ast.Module) -> set[str]:
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(isinstance(item, ast.FunctionDef) and item.name == "ready" for item in node.body)
    }


def _common_classes_defining_ready() -> set[str]:
    """Classes of common/ that override `ready`, except the runtime's own `Function`."""
    found: set[str] = set()
    for module in (REPO / "common").glob("*.py"):
        found |= _classes_defining_ready(ast.parse(module.read_text()))
    return found - {"Function"}


def _base_name(base: ast.expr) -> str:
    if isinstance(base, ast.Attribute):
        return base.attr
    return base.id if isinstance(base, ast.Name) else ""


def function_image(function: str) -> ImageSpec:
    # Liveness when readiness needs a dependency; the model server image is checked on its own.
    health = "/health/readiness" if ready_alone(function) else "/health/liveness"
    return ImageSpec(function, 8080, health)


IMAGES = (
    *(function_image(function) for function in function_names()),
    ImageSpec(
        "source",
        8080,
        "/health/liveness",
        (("SOURCE_MODE", "http"), ("K_SINK", "http://127.0.0.1:9/")),
    ),
    # Its default database is an SQLite file in the container's /tmp: ready alone.
    ImageSpec("results", 8080, "/health/readiness"),
    ImageSpec("modelserver", 8501, "/healthz"),
)


def oci_env() -> dict[str, str]:
    """The environment scripts/oci-env.sh sets up, for podman calls made from Python."""
    done = subprocess.run(
        ["bash", "-c", f"source {REPO / 'scripts' / 'oci-env.sh'} && env -0"],
        capture_output=True,
        check=True,
    )
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "debootstrap", "runc") if shutil.which(tool) is None]


def ensure_base() -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "oci-base.sh")], check=True, timeout=900)


def build(name: str) -> float:
    """Builds one image; returns the seconds it took."""
    env = {**os.environ, "OCI_LOCAL_STORE": "1", "BASE": BASE_IMAGE, "TAG": TAG}
    started = time.perf_counter()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "images.sh"), name],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["podman", *args], env=oci_env(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def image_size(spec: ImageSpec) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", spec.ref))


def start(spec: ImageSpec, host_port: int, name: str) -> None:
    env = [arg for key, value in spec.env for arg in ("-e", f"{key}={value}")]
    podman(
        "run",
        "-d",
        "--rm",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{host_port}:{spec.port}",
        *env,
        spec.ref,
    )


def stop(name: str) -> None:
    subprocess.run(
        ["podman", "rm", "-f", "-t", "2", name], env=oci_env(), capture_output=True, timeout=60
    )


def wait_healthy(url: str, timeout: float) -> int:
    """Polls url until it answers 200 or timeout; returns the last status (0: no answer)."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = 0
        if status == 200:
            return status
        time.sleep(0.1)
    return status


def container_uid(name: str) -> int:
    return int(podman("exec", name, "id", "-u"))
