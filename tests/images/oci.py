"""Build and run the project's images with podman, state kept in the repo's .cache/oci.

Shared by the image tests and benchmarks/bench_images.py. The base image is made locally
(scripts/oci-base.sh: debootstrap, no registry); builds run offline from host-downloaded wheels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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


IMAGES = (
    ImageSpec("receiver", 8080, "/health/readiness"),
    # Liveness: readiness also needs the model server / Vision reachable, which a lone container
    # has not; the model server image is checked on its own.
    ImageSpec("resnet", 8080, "/health/liveness"),
    ImageSpec("vision", 8080, "/health/liveness"),
    ImageSpec(
        "source",
        8080,
        "/health/liveness",
        (("SOURCE_MODE", "http"), ("K_SINK", "http://127.0.0.1:9/")),
    ),
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
