"""One real stack for the whole reliability suite (the one `make demo` starts), built once.

Every scenario leaves it as it found it (a killed process is restarted on its port), so the
modules share it: starting RGW and waiting for its persistent queue costs ~35 s per stack.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.live_stack import LiveStack as Harness
from testkit.scenarios import warm_up
from testkit.services import MODEL_CACHE_DIR  # shared with the modelserver fixture
from testkit.stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.rgw)


@pytest.fixture(scope="session")
def harness(log_dir: Path) -> Iterator[Harness]:
    with Stack() as stack:
        try:
            built = Harness.build(stack, model_cache_dir=MODEL_CACHE_DIR)
            warm_up(built)
            yield built
            built.close()
        finally:
            shutil.copytree(stack.log_dir, log_dir / "reliability", dirs_exist_ok=True)


@pytest.fixture()
def stack_intact(harness: Harness) -> Iterator[Harness]:
    """Fails the test that left a process of the stack dead (a crash is a finding too)."""
    yield harness
    assert harness.dead_processes() == [], "processes died during the test"
