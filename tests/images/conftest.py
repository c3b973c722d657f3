"""Image tests run only when asked for (`-m images`, `make test-images`): they build every image."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "images" in (config.getoption("markexpr") or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("images")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("images")]
