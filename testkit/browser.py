"""A real headless Chromium, driven by Selenium through Debian's chromedriver.

`chromium()` opens one on a fresh profile (removed afterwards) with no network of its own
besides the pages it is sent to: no sync, no component updates, no first-run pages. The tests of
the results page and `python -m results.screenshot` use it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from testkit.processes import StartError

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root, Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
)


def _first(paths: tuple[str, ...], what: str) -> str:
    for path in paths:
        if Path(path).exists():
            return path
    raise StartError(
        f"{what} not found ({', '.join(paths)}): install the Debian packages chromium and "
        "chromium-driver (scripts/install-system-deps.sh results)"
    )


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="testkit-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = _first(BROWSERS, "Chromium")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    service = Service(executable_path=_first(DRIVERS, "chromedriver"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
