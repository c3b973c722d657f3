"""`python -m results.screenshot`: a picture of the results page, as in the README.

    python -m results.screenshot          # the demo's stack, 6 photos -> docs/results.png
    python -m results.screenshot --photos 4 --out /tmp/page.png
    python -m results.screenshot --url http://127.0.0.1:PORT/   # a page that is already up

Without `--url` it starts the stack `make demo` starts (real RGW, models, photos), uploads the
photos, waits until the page shows a card with a thumbnail for each, saves the screenshot and
stops everything. It needs Debian's chromium and chromium-driver (a dev tool: not in the image).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Until `condition()` is truthy (its value is returned); TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def cards_shown(driver: WebDriver) -> list[dict[str, Any]]:
    """What the page shows, card by card: key, thumbnail loaded, each function's labels."""
    script = """
      return [...document.querySelectorAll('#cards .card')].map((card) => ({
        key: card.dataset.key,
        text: card.querySelector('.key').textContent,
        thumbnail: card.querySelector('img.thumb').complete &&
                   card.querySelector('img.thumb').naturalWidth > 0,
        results: [...card.querySelectorAll('.result')].map((r) => ({
          function: r.dataset.function,
          labels: [...r.querySelectorAll('.label .name')].map((n) => n.textContent),
        })),
      }));
    """
    return list(driver.execute_script(script))


def capture(driver: WebDriver, url: str, out: Path, expect: int, timeout: float = 60) -> None:
    """Load the page, wait for `expect` cards with their thumbnails, save a PNG of it."""
    driver.get(url)
    wait_for(
        lambda: len(shown := cards_shown(driver)) >= expect and all(c["thumbnail"] for c in shown),
        timeout,
        f"{expect} cards with thumbnails on {url}",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m results.screenshot", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.png")
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--url", help="the page of a stack that is already running")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=860)
    args = parser.parse_args(argv)

    from testkit.browser import chromium

    if args.url:
        with chromium(args.width, args.height) as driver:
            capture(driver, args.url, args.out, 1)
    else:
        _from_a_fresh_stack(args)
    print(f"saved {args.out}")
    return 0


def _from_a_fresh_stack(args: argparse.Namespace) -> None:
    import httpx

    from localknative.photos import load_photos
    from testkit.browser import chromium
    from testkit.live_stack import LiveStack
    from testkit.services import MODEL_CACHE_DIR
    from testkit.stack import Stack

    photos = load_photos(args.photos)
    with Stack() as stack:
        live = LiveStack.build(stack, out=sys.stderr, model_cache_dir=MODEL_CACHE_DIR)
        try:
            live.upload_many((photo.key, photo.jpeg) for photo in photos)
            page = live.endpoints.results_page
            wait_for(
                lambda: httpx.get(f"{page}/api/results").json()["count"] >= len(photos),
                300,
                "a result for every photo",
                every=1.0,
            )
            with chromium(args.width, args.height) as driver:
                capture(driver, page + "/", args.out, len(photos))
        finally:
            live.close()


if __name__ == "__main__":
    sys.exit(main())
