"""Image build time, size, and start-to-healthy time, per image, in one run.

    .venv/bin/python -m benchmarks.bench_images [name ...]

Builds with podman from the local debootstrap base (scripts/oci-base.sh), offline from wheels
downloaded on the host; the first build of a run includes that download, later ones hit pip's
and podman's caches only as far as they really share layers. Prints a Markdown table.
"""

from __future__ import annotations

import sys
import time

from testkit import oci
from testkit.processes import free_port


def measure(spec: oci.ImageSpec) -> tuple[float, float, float]:
    """(build seconds, size MB, seconds from `podman run` to the first 200 of its health check)."""
    build_seconds = oci.build(spec.name)
    size_mb = oci.image_size(spec) / 1e6
    name = f"rgwi-bench-{spec.name}"
    oci.stop(name)
    port = free_port()
    started = time.perf_counter()
    oci.start(spec, port, name)
    try:
        status = oci.wait_healthy(f"http://127.0.0.1:{port}{spec.health}", timeout=180)
        healthy = time.perf_counter() - started
    finally:
        oci.stop(name)
    if status != 200:
        raise RuntimeError(f"{spec.name}: {spec.health} answered {status}")
    return build_seconds, size_mb, healthy


def main(names: list[str]) -> int:
    missing = oci.missing_tools()
    if missing:
        print(f"needs {missing}", file=sys.stderr)
        return 2
    oci.ensure_base()
    base_mb = int(oci.podman("image", "inspect", "--format", "{{.Size}}", oci.BASE_IMAGE)) / 1e6
    specs = [spec for spec in oci.IMAGES if not names or spec.name in names]
    print(f"Base `{oci.BASE_IMAGE}`: {base_mb:.0f} MB\n")
    print(
        "| image | build (s) | size (MB) | over base (MB) | run -> health 200 (s) | health path |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for spec in specs:
        build_seconds, size_mb, healthy = measure(spec)
        print(
            f"| {spec.name} | {build_seconds:.1f} | {size_mb:.0f} | {size_mb - base_mb:.0f} "
            f"| {healthy:.2f} | `{spec.health}` |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
