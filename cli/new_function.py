"""`new-function NAME`: scaffold a working function, as `func create` does for Knative Functions.

Writes, from the templates in cli/templates/function/:

- `functions/<module>/` (`<module>` is NAME with '-' as '_'): `app.py` (a `Function` whose
  `handle` logs each object), `__init__.py`, `__main__.py` (`python -m functions.<module>`) and
  `requirements.txt` (the image's extra pins, none yet);
- `tests/functions/test_<module>.py`: the handler in-process, a binary CloudEvent in;
- `knative/base/NAME.yaml`: a Knative Service `NAME` (image `rgw-inference/NAME`) and a
  Subscription `NAME` to the Channel `rgw-events`, listed in knative/base/kustomization.yaml
  (`resources`); the image in knative/components/images (every build's image names and tag).

Nothing else needs an edit: the image build, the image tests and the local runner find functions
in `functions/*/` and `knative/base`. A bad or taken NAME is refused with one line and exit 2,
before anything is written. docs/functions.md says what to edit next.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from cli.commands import add_command

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates" / "function"
# A Kubernetes object name usable as a DNS label (RFC 1123), starting with a letter so that the
# Python module it becomes is an identifier too.
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63
# Images the repository builds that are not functions: a function may not take their names.
OTHER_IMAGES = frozenset({"source", "modelserver"})


class ScaffoldError(Exception):
    """The scaffold cannot be made; the message is the one line the user sees."""


@dataclass(frozen=True)
class Names:
    name: str  # Knative object and image name, the logger's name
    module: str  # functions.<module>
    class_name: str

    @classmethod
    def of(cls, name: str) -> Names:
        if len(name) > MAX_NAME or not _NAME.match(name):
            raise ScaffoldError(
                f"{name!r} is not a valid function name: use at most {MAX_NAME} lower-case "
                "letters, digits and '-', starting with a letter and not ending with '-' "
                "(a DNS-1123 label)"
            )
        module = name.replace("-", "_")
        if keyword.iskeyword(module):
            raise ScaffoldError(
                f"{name!r} is not a valid function name: {module!r} is a Python keyword"
            )
        class_name = "".join(part.capitalize() for part in name.split("-") if part) + "Function"
        return cls(name, module, class_name)

    def substitutions(self) -> dict[str, str]:
        return {"name": self.name, "module": self.module, "class_name": self.class_name}


@dataclass(frozen=True)
class Layout:
    """Where a function's files go in a checkout rooted at `root`."""

    root: Path
    names: Names

    @property
    def package(self) -> Path:
        return self.root / "functions" / self.names.module

    @property
    def test(self) -> Path:
        return self.root / "tests" / "functions" / f"test_{self.names.module}.py"

    @property
    def base(self) -> Path:
        return self.root / "knative" / "base"

    @property
    def manifest(self) -> Path:
        return self.base / f"{self.names.name}.yaml"

    def files(self) -> dict[Path, str]:
        """Every new file and the template it is rendered from ('' for an empty file)."""
        return {
            self.package / "__init__.py": "",
            self.package / "__main__.py": "__main__.py.tmpl",
            self.package / "app.py": "app.py.tmpl",
            self.package / "requirements.txt": "requirements.txt.tmpl",
            self.test: "test.py.tmpl",
            self.manifest: "manifest.yaml.tmpl",
        }


def base_object_names(base: Path) -> set[str]:
    """Names of every object in knative/base/*.yaml: a new Service or Subscription may not clash."""
    names: set[str] = set()
    for path in sorted(base.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
                names.add(str(doc["metadata"].get("name")))
    return names


def check_free(layout: Layout) -> None:
    name = layout.names.name
    kustomization = layout.base / "kustomization.yaml"
    if not kustomization.is_file() or not (layout.root / "functions").is_dir():
        raise ScaffoldError(
            f"{layout.root} is not a checkout of this repository (no functions/ or "
            "knative/base/kustomization.yaml); pass --repo"
        )
    if name in OTHER_IMAGES:
        raise ScaffoldError(f"{name!r} is taken: rgw-inference/{name} is the {name}'s image")
    for path in (layout.package, layout.test):
        if path.exists():
            raise ScaffoldError(
                f"function {name!r} exists: {path.relative_to(layout.root)} is there"
            )
    if layout.manifest.exists():
        raise ScaffoldError(f"{name!r} is taken: knative/base/{layout.manifest.name} is there")
    if name in base_object_names(layout.base):
        raise ScaffoldError(f"{name!r} is taken: knative/base already has an object of that name")


def _block_end(lines: list[str], key: str) -> int:
    """Index after the last line of the top-level `key:` block of a kustomization."""
    try:
        start = lines.index(f"{key}:\n")
    except ValueError:
        raise ScaffoldError(f"the kustomization has no top-level `{key}:` list") from None
    end = start + 1
    while end < len(lines) and lines[end].startswith((" ", "-")):
        end += 1
    # Comments and blank lines after the list belong to what follows it.
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def register_in_kustomization(path: Path, images: Path, names: Names) -> None:
    """Add the manifest to the base's `resources` and the image to the images component's
    `images`, with the registry prefix and tag of the others, keeping the files' comments."""
    current = yaml.safe_load(images.read_text())
    other = next((image for image in current.get("images", []) if image.get("newTag")), None)
    lines = _lines(path)
    at = _block_end(lines, "resources")
    lines.insert(at, f"  - {names.name}.yaml\n")
    image_lines = _lines(images)
    entry = [f"  - name: rgw-inference/{names.name}\n"]
    if other is not None:
        prefix = str(other.get("newName", other["name"])).removesuffix(
            str(other["name"]).removeprefix("rgw-inference/")
        )
        entry.append(f"    newName: {prefix}{names.name}\n")
        entry.append(f'    newTag: "{other["newTag"]}"\n')
    at = _block_end(image_lines, "images")
    image_lines[at:at] = entry
    updated, updated_images = "".join(lines), "".join(image_lines)
    parsed: Any = yaml.safe_load(updated)
    parsed_images: Any = yaml.safe_load(updated_images)
    if f"{names.name}.yaml" not in parsed.get("resources", []) or not any(
        entry.get("name") == f"rgw-inference/{names.name}"
        for entry in parsed_images.get("images", [])
    ):
        raise ScaffoldError(f"could not add {names.name} to {path} and {images}: edit by hand")
    path.write_text(updated)
    images.write_text(updated_images)


def scaffold(name: str, root: Path = REPO_ROOT) -> list[Path]:
    """Write the function's files and register its manifest; returns the paths written."""
    layout = Layout(root, Names.of(name))
    check_free(layout)
    values = layout.names.substitutions()
    written = []
    for path, template in layout.files().items():
        text = Template((TEMPLATES / template).read_text()).substitute(values) if template else ""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    marker = layout.test.parent / "__init__.py"
    if not marker.exists():
        marker.write_text("")
        written.append(marker)
    kustomization = layout.base / "kustomization.yaml"
    images = layout.root / "knative" / "components" / "images" / "kustomization.yaml"
    register_in_kustomization(kustomization, images, layout.names)
    written += [kustomization, images]
    return written


def run(args: argparse.Namespace) -> int:
    root: Path = args.repo
    try:
        written = scaffold(args.name, root)
    except ScaffoldError as exc:
        sys.stderr.write(f"new-function: {exc}\n")
        return 2
    module = args.name.replace("-", "_")
    for path in written:
        print(f"wrote {path.relative_to(root)}")
    print(
        f"\nnext: write functions/{module}/app.py's handle(), then\n"
        f"  .venv/bin/python -m pytest tests/functions/test_{module}.py\n"
        f"  PORT=8080 .venv/bin/python -m functions.{module}\n"
        f"  bash scripts/images.sh {args.name}\n"
        "docs/functions.md says what else you may want to edit (env, scaling, triggers)."
    )
    return 0


HELP = "scaffold a function: its folder, its test and its Knative manifest"
DESCRIPTION = """Scaffold a working function: functions/<module>/ (handler, entry point,
requirements), its in-process test in tests/functions/, and its Knative Service and Subscription
in knative/base. See docs/functions.md."""


def register(groups: Any) -> None:
    parser = add_command(groups, "new-function", HELP, DESCRIPTION)
    parser.add_argument("name", metavar="NAME", help="the function's name, e.g. thumbnails")
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO_ROOT,
        help="the checkout to write into (default: the one this command runs from)",
    )
    parser.set_defaults(run=run)
