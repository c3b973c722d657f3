"""`rgw-inference new-function` in a copy of the repository: the scaffold works as it stands.

The copy holds what git would commit (tracked and untracked, not ignored files). In it the
scaffold writes a function, then its generated test runs with pytest, the manifests still build
and pass the manifest test unchanged, the image build lists the new image, and the generated code
is lint- and type-clean even for the longest name. Bad or taken names are refused with one line
and exit 2, writing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NAME = "thumb-maker"
MODULE = "thumb_maker"
# The longest name a DNS-1123 label allows: every generated line must still fit.
LONGEST = "a" + "b" * 61 + "z"


def copy_repo(target: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is not there
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def run(copy: Path, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """A command in the copy, importing the copy's packages first."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        list(argv), cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
    )


def python(copy: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return run(copy, sys.executable, *args, timeout=timeout)


def pytest_in(copy: Path, test_file: str) -> subprocess.CompletedProcess[str]:
    return python(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file)


def files_of(root: Path) -> set[Path]:
    return {path.relative_to(root) for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def scaffolded(copy: Path) -> Path:
    done = python(copy, "-m", "cli", "new-function", NAME)
    assert done.returncode == 0, done.stderr
    assert f"wrote functions/{MODULE}/app.py" in done.stdout
    return copy


def test_the_scaffold_writes_the_folder_the_test_and_the_manifest(scaffolded: Path) -> None:
    package = scaffolded / "functions" / MODULE
    assert {p.name for p in package.iterdir()} >= {
        "__init__.py",
        "__main__.py",
        "app.py",
        "requirements.txt",
    }
    assert (scaffolded / "tests" / "functions" / f"test_{MODULE}.py").is_file()
    docs = list(yaml.safe_load_all((scaffolded / "knative" / "base" / f"{NAME}.yaml").read_text()))
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in docs} == {
        ("Service", NAME),
        ("Subscription", NAME),
    }
    kustomization = yaml.safe_load((scaffolded / "knative/base/kustomization.yaml").read_text())
    assert f"{NAME}.yaml" in kustomization["resources"]
    images = yaml.safe_load(
        (scaffolded / "knative/components/images/kustomization.yaml").read_text()
    )
    assert {
        "name": f"rgw-inference/{NAME}",
        "newName": f"rgw-inference/{NAME}",
        "newTag": "0.1.0",
    } in images["images"]


def test_the_generated_test_passes(scaffolded: Path) -> None:
    done = pytest_in(scaffolded, f"tests/functions/test_{MODULE}.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout


def test_the_generated_test_fails_when_the_handler_does_not_log(copy: Path) -> None:
    """The generated test exercises the handler: break it, and the test says so."""
    name = "silent"
    assert python(copy, "-m", "cli", "new-function", name).returncode == 0
    app = copy / "functions" / name / "app.py"
    app.write_text(app.read_text().replace("log.info(", "log.debug("))
    done = pytest_in(copy, f"tests/functions/test_{name}.py")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "1 failed, 1 passed" in done.stdout


def test_the_manifests_build_with_the_new_function(scaffolded: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found on PATH (needed for `kubectl kustomize`)")
    done = run(scaffolded, kubectl, "kustomize", "knative/base")
    assert done.returncode == 0, done.stderr
    objects = {(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(done.stdout)}
    assert {("Service", NAME), ("Subscription", NAME)} <= objects


def test_the_manifest_test_passes_unchanged(scaffolded: Path) -> None:
    done = pytest_in(scaffolded, "tests/unit/test_knative_manifests.py")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_image_build_and_the_image_tests_know_the_function(scaffolded: Path) -> None:
    listed = run(scaffolded, "bash", "scripts/images.sh", "--list")
    assert listed.returncode == 0, listed.stderr
    assert NAME in listed.stdout.split()
    done = python(scaffolded, "-c", "from testkit import oci; print([i.name for i in oci.IMAGES])")
    assert done.returncode == 0, done.stderr
    assert repr(NAME) in done.stdout


LIST_FUNCTIONS = """
import json
from pathlib import Path
from localknative.workloads import load_functions
specs = load_functions(Path("knative/base"))
print(json.dumps({s.name: {"module": s.module, "env": [[k, str(v)] for k, v in s.env]}
                  for s in specs}))
"""


def test_the_local_runner_lists_the_function_with_its_env(scaffolded: Path) -> None:
    done = python(scaffolded, "-c", LIST_FUNCTIONS)
    assert done.returncode == 0, done.stderr
    functions = json.loads(done.stdout)
    assert {"receiver", "resnet", "vision", NAME} <= set(functions)
    spec = functions[NAME]
    assert spec["module"] == f"functions.{MODULE}"
    env = dict(spec["env"])
    # The shared ConfigMap (envFrom) and the container's own env.
    assert env["HOST"] == "0.0.0.0"
    assert env["LOG_LEVEL"] == "INFO"
    assert "AWS_ENDPOINT_URL_S3" in env


def test_generated_code_is_lint_and_type_clean_for_the_longest_name(copy: Path) -> None:
    module = LONGEST
    assert python(copy, "-m", "cli", "new-function", LONGEST).returncode == 0
    paths = [f"functions/{module}", f"tests/functions/test_{module}.py"]
    for argv in (["ruff", "check", *paths], ["ruff", "format", "--check", *paths]):
        done = python(copy, "-m", *argv)
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
    done = python(
        copy, "-m", "mypy", "--cache-dir", str(copy / ".mypy-cache"), paths[0], timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("Thumbs", "not a valid function name"),
        ("thumbs_1", "not a valid function name"),
        ("1thumbs", "not a valid function name"),
        ("thumbs-", "not a valid function name"),
        (LONGEST + "x", "not a valid function name"),
        ("import", "Python keyword"),
        ("receiver", "exists"),
        ("dead-letters", "is taken"),
        ("modelserver", "is taken"),
    ],
)
def test_a_bad_or_taken_name_is_refused_with_one_line_and_exit_2(
    copy: Path, name: str, says: str
) -> None:
    before = files_of(copy)
    done = python(copy, "-m", "cli", "new-function", name)
    assert done.returncode == 2
    assert done.stdout == ""
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert files_of(copy) == before


def test_a_functions_own_settings_reach_the_config_table(scaffolded: Path) -> None:
    settings = scaffolded / "functions" / MODULE / "settings.py"
    settings.write_text(
        "from common.env import env_var\n\n"
        'THUMB_SIZE = env_var("THUMB_SIZE", "Longest side of a thumbnail.", "Thumbnails", "128")\n'
    )
    try:
        done = python(scaffolded, "-m", "cli", "config")
    finally:
        settings.unlink()
    assert done.returncode == 0, done.stderr
    assert "**Thumbnails**" in done.stdout
    assert "| `THUMB_SIZE` | `128` | Longest side of a thumbnail. |" in done.stdout
