"""scripts/rgw-up.sh and scripts/rgw-down.sh themselves, as real processes, on every Ceph at hand.

"host" is the host's Ceph (Debian 12: 16.2); "root" is the Ceph of the Debian 13 root that
scripts/ceph18-root.sh builds (18.2), used when RGW_CEPH_ROOT names it (`make test-ceph18`) or
when it is already cached, and skipped otherwise. Each test makes its own cluster in its own
directory on free ports, and checks afterwards that none of its daemons is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from testkit.processes import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.rgw

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
DAEMONS = ("mon.a", "osd.0", "client.rgw.gw")


def _ceph18_root() -> str | None:
    if os.environ.get("RGW_CEPH_ROOT"):
        return os.environ["RGW_CEPH_ROOT"]
    done = subprocess.run(
        ["bash", str(SCRIPTS / "ceph18-root.sh"), "--cached"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


@dataclass
class Ceph:
    """One Ceph to run the scripts with: the host's, or a root's (RGW_CEPH_ROOT)."""

    root: str | None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RGW_")}
        env["RGW_MEMSTORE_BYTES"] = str(256 << 20)
        if self.root:
            env["RGW_CEPH_ROOT"] = self.root
        return {**env, **extra}

    def script(
        self, name: str, *args: str, timeout: float = 120, cwd: Path | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPTS / name), *args],
            env=self.env(**extra),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(params=["host", "root"])
def ceph(request: pytest.FixtureRequest) -> Ceph:
    if request.param == "host":
        return Ceph(root=None)
    root = _ceph18_root()
    if root is None:
        pytest.skip("no Ceph 18 root built (make test-ceph18 builds it)")
    if os.geteuid() != 0:
        pytest.skip("RGW from a Ceph root needs root (chroot)")
    return Ceph(root=root)


@pytest.fixture
def data_dir(tmp_path: Path, ceph: Ceph) -> Iterator[Path]:
    path = tmp_path / "cluster"
    yield path
    ceph.script("rgw-down.sh", str(path), "--purge", timeout=60)


def settings_of(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def daemons_of(data_dir: Path) -> list[int]:
    """Live processes (not zombies) of the cluster in data_dir, whatever started them: every
    Ceph program rgw-up.sh runs has CEPH_CONF=<data_dir>/ceph.conf in its environment."""
    marker = f"CEPH_CONF={data_dir.resolve()}/ceph.conf".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def recorded_pids(data_dir: Path) -> dict[str, int]:
    return {name: int((data_dir / "run" / f"{name}.pid").read_text()) for name in DAEMONS}


def wait_until_gone(data_dir: Path, seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := daemons_of(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def up(ceph: Ceph, data_dir: Path, *args: str) -> dict[str, str]:
    done = ceph.script("rgw-up.sh", str(data_dir), *args)
    assert done.returncode == 0, done.stderr
    return settings_of(done.stdout)


def s3_client(settings: dict[str, str]) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=settings["RGW_ENDPOINT"],
        aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
        region_name=settings["AWS_REGION"],
    )


@pytest.mark.parametrize("script", ["rgw-up.sh", "rgw-down.sh"])
def test_help_prints_usage_and_starts_nothing(ceph: Ceph, script: str, tmp_path: Path) -> None:
    done = ceph.script(script, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and f"scripts/{script} DATA_DIR" in done.stdout
    assert "RGW_CEPH_ROOT" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no data directory called --help
    unknown = ceph.script(script, "--frobnicate", cwd=tmp_path)
    assert unknown.returncode != 0
    assert "unknown option '--frobnicate'" in unknown.stderr


def test_up_again_down_up_and_purge(ceph: Ceph, data_dir: Path) -> None:
    port = str(free_port())
    first = up(ceph, data_dir, port)
    assert first["RGW_ENDPOINT"] == f"http://127.0.0.1:{port}"
    release = (data_dir / "ceph-release").read_text()
    expected_major = "18." if ceph.root else "16."
    assert f"CEPH_VERSION={expected_major}" in release
    # The object classes are loaded from an absolute directory that holds libcls_rgw.so.
    conf = (data_dir / "ceph.conf").read_text()
    class_dir = conf.split("osd class dir = ", 1)[1].splitlines()[0]
    assert class_dir.startswith("/")
    assert Path(f"{ceph.root or ''}{class_dir}/libcls_rgw.so").exists()
    s3 = s3_client(first)
    s3.create_bucket(Bucket="kept")
    s3.put_object(Bucket="kept", Key="object", Body=b"survives a clean stop")
    pids = recorded_pids(data_dir)

    # A second up on the live directory recognises its own daemons (also Reef's radosgw, whose
    # main thread is renamed), re-prints the settings and starts nothing.
    again = ceph.script("rgw-up.sh", str(data_dir), port)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert "something else" not in again.stderr
    assert settings_of(again.stdout) == first
    assert recorded_pids(data_dir) == pids
    assert sorted(daemons_of(data_dir)) == sorted(pids.values())

    down = ceph.script("rgw-down.sh", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert wait_until_gone(data_dir) == []
    assert data_dir.is_dir()

    restarted = up(ceph, data_dir)  # no port: the directory keeps its own
    assert restarted == first
    assert s3_client(restarted).get_object(Bucket="kept", Key="object")["Body"].read() == (
        b"survives a clean stop"
    )

    purge = ceph.script("rgw-down.sh", str(data_dir), "--purge")
    assert purge.returncode == 0, purge.stderr
    assert wait_until_gone(data_dir) == []
    assert not data_dir.exists()
    if ceph.root:
        # The mount point made for the data directory inside the root is gone as well.
        assert not Path(f"{ceph.root}{data_dir}").exists()


def test_up_restarts_a_dead_radosgw_only(ceph: Ceph, data_dir: Path) -> None:
    settings = up(ceph, data_dir, str(free_port()))
    pids = recorded_pids(data_dir)
    os.kill(pids["client.rgw.gw"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids["client.rgw.gw"] in daemons_of(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)

    restarted = ceph.script("rgw-up.sh", str(data_dir))
    assert restarted.returncode == 0, restarted.stderr
    assert settings_of(restarted.stdout) == settings
    now = recorded_pids(data_dir)
    assert now["mon.a"] == pids["mon.a"] and now["osd.0"] == pids["osd.0"]
    assert now["client.rgw.gw"] != pids["client.rgw.gw"]
    s3_client(settings).list_buckets()


def test_failed_start_leaves_nothing_running(ceph: Ceph, data_dir: Path) -> None:
    # A frontend radosgw does not know: it keeps running with no listener (what civetweb does
    # on Reef), S3 never answers, and the script must stop what it started.
    done = ceph.script(
        "rgw-up.sh",
        str(data_dir),
        str(free_port()),
        RGW_EXTRA_CONF="rgw frontends = nosuchframework port=1",
        RGW_START_TIMEOUT="3",
    )
    assert done.returncode != 0
    assert "S3 did not answer within 3s" in done.stderr
    assert "stopping the daemons this run started" in done.stderr
    assert wait_until_gone(data_dir, 2) == []
    assert not list((data_dir / "run").glob("*.pid"))


def test_frontend_the_installed_ceph_lacks_is_refused_up_front(ceph: Ceph, data_dir: Path) -> None:
    lacking = "civetweb" if ceph.root else "nosuchframework"
    done = ceph.script("rgw-up.sh", str(data_dir), str(free_port()), RGW_FRONTEND=lacking)
    assert done.returncode != 0
    if ceph.root:
        assert "has no civetweb frontend" in done.stderr
    else:
        assert "RGW_FRONTEND must be civetweb or beast" in done.stderr
    assert daemons_of(data_dir) == []
    assert not (data_dir / "ceph.conf").exists()
    if ceph.root:
        assert not Path(f"{ceph.root}{data_dir}").exists()  # no mount point made for it
