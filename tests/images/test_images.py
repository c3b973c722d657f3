"""Each image builds from the local base, starts, answers its health check, and runs as non-root."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit import oci
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.images


@pytest.fixture(scope="session")
def base_image() -> str:
    missing = oci.missing_tools()
    if missing:
        pytest.fail(
            f"image tests need {missing}: apt-get install podman buildah runc iptables debootstrap"
        )
    oci.ensure_base()
    return oci.BASE_IMAGE


@pytest.fixture(scope="session", params=oci.IMAGES, ids=lambda spec: spec.name)
def built(request: pytest.FixtureRequest, base_image: str) -> oci.ImageSpec:
    spec: oci.ImageSpec = request.param
    oci.build(spec.name)
    return spec


@pytest.fixture
def container(built: oci.ImageSpec) -> Iterator[tuple[oci.ImageSpec, str, int]]:
    name = f"rgwi-test-{built.name}"
    oci.stop(name)
    port = free_port()
    oci.start(built, port, name)
    try:
        yield built, name, port
    finally:
        oci.stop(name)


def test_image_answers_its_health_check_as_non_root(
    container: tuple[oci.ImageSpec, str, int],
) -> None:
    spec, name, port = container
    status = oci.wait_healthy(f"http://127.0.0.1:{port}{spec.health}", timeout=120)
    assert status == 200, f"{spec.name}: {spec.health} answered {status}"
    assert oci.container_uid(name) == 10001


def test_image_has_no_tensorflow_or_torch(built: oci.ImageSpec) -> None:
    site = oci.podman(
        "run",
        "--rm",
        "--entrypoint",
        "/opt/venv/bin/python",
        built.ref,
        "-c",
        # tensorflow-protobuf ships a `tensorflow` namespace of protos only; the framework would
        # bring tensorflow.python.
        "import importlib.util as u; print([m for m in ('torch', 'tensorflow.python') "
        "if u.find_spec(m.split('.')[0]) and u.find_spec(m)])",
    )
    assert site == "[]", f"{built.name} ships {site}"
