"""The results page in a real headless Chromium (Debian's, driven by Selenium), on the stack
`make demo` starts: real uploads to RGW, real classifiers, the Broker delivering to the results
service. One card per uploaded photo with the labels the API has, thumbnails from RGW, the
filter, a card that appears live after a new upload, a hostile key shown as text, and a
screenshot kept as an artifact."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localknative.parts import BUCKET
from localknative.photos import load_photos
from results.screenshot import cards_shown, wait_for
from testkit.browser import chromium
from testkit.live_stack import LiveStack
from testkit.services import MODEL_CACHE_DIR
from testkit.stack import Stack

pytestmark = pytest.mark.rgw

# Closes the <script> it opens and carries an image whose onerror would run if it were markup.
HOSTILE_KEY = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>.jpg"
FIRST = 3  # photos uploaded before the page opens; one more is uploaded while it is open


@pytest.fixture(scope="module")
def live(log_dir: Path) -> Iterator[LiveStack]:
    with Stack() as stack:
        try:
            built = LiveStack.build(stack, model_cache_dir=MODEL_CACHE_DIR)
            yield built
            built.close()
        finally:
            shutil.copytree(stack.log_dir, log_dir / "results-page", dirs_exist_ok=True)


def api_cards(page: str) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{page}/api/results", params={"bucket": BUCKET}, timeout=10).json()
    return {card["key"]: card for card in answer["objects"] if card["results"]}


def wait_classified(page: str, keys: set[str], timeout: float = 240) -> dict[str, dict[str, Any]]:
    # The first events wait for RGW to adopt the topic's queue (up to 30 s).

    def ready() -> dict[str, dict[str, Any]] | None:
        cards = api_cards(page)
        return cards if keys <= set(cards) else None

    return wait_for(
        ready,
        timeout,
        f"results for {sorted(keys)}",
        every=0.5,
    )


def shown_labels(card: dict[str, Any]) -> dict[str, list[str]]:
    return {r["function"]: r["labels"] for r in card["results"]}


def api_labels(card: dict[str, Any]) -> dict[str, list[str]]:
    return {r["function"]: [label["name"] for label in r["labels"][:3]] for r in card["results"]}


@pytest.mark.timeout(900)
def test_the_page_shows_every_upload_filters_and_updates_live(
    live: LiveStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    photos = load_photos(FIRST + 1)
    first = [(p.key, p.jpeg) for p in photos[:FIRST]] + [(HOSTILE_KEY, photos[0].jpeg)]
    assert all(upload.acknowledged for upload in live.upload_many(first))
    page = live.endpoints.results_page
    expected = wait_classified(page, {key for key, _ in first})
    artifacts = tmp_path_factory.mktemp("results-page")

    with chromium() as driver:
        driver.get(page + "/")
        shown = wait_for(
            lambda: len(cards_shown(driver)) == len(first) and cards_shown(driver),
            30,
            f"{len(first)} cards",
        )
        by_key = {card["key"]: card for card in shown}
        assert set(by_key) == {key for key, _ in first}  # one card per uploaded photo
        for key, card in by_key.items():
            assert card["text"] == key
            assert shown_labels(card) == api_labels(expected[key]), key
            assert all(r["labels"] for r in card["results"]), key
        # Thumbnails: read from RGW by the service, shown from the service.
        wait_for(lambda: all(c["thumbnail"] for c in cards_shown(driver)), 30, "thumbnails")

        # The hostile key is text: nothing of it ran, no element came from it.
        assert driver.execute_script("return window.pwned === undefined")
        assert (
            driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
        )
        assert driver.execute_script("return document.scripts.length") == 1

        # Live: a new upload shows up without a reload of the page.
        driver.execute_script("window.notReloaded = true")
        loaded = driver.execute_script("return document.body.dataset.loaded")
        latest = photos[FIRST]
        assert all(u.acknowledged for u in live.upload_many([(latest.key, latest.jpeg)]))
        wait_for(
            lambda: latest.key in {c["key"] for c in cards_shown(driver)},
            120,
            f"the card of {latest.key}, live",
        )
        assert driver.execute_script("return window.notReloaded === true")
        assert driver.execute_script("return document.body.dataset.loaded") == loaded
        assert cards_shown(driver)[0]["key"] == latest.key  # the newest on top
        expected = wait_classified(page, {latest.key})
        screenshot = artifacts / "results-page.png"
        driver.save_screenshot(str(screenshot))
        print(f"\nscreenshot of the results page: {screenshot}")
        assert screenshot.stat().st_size > 10_000

        # The filter: a label only one photo has as a top label.
        chelsea = expected[photos[0].key]["results"][0]["labels"][0]["name"]
        wanted = {
            key
            for key, card in expected.items()
            if any(chelsea.casefold() in r["labels"][0]["name"].casefold() for r in card["results"])
        }
        assert photos[0].key in wanted
        box = driver.find_element("id", "f-label")
        box.send_keys(chelsea)
        wait_for(
            lambda: {c["key"] for c in cards_shown(driver)} == wanted,
            20,
            f"only the cards whose top label contains {chelsea!r}",
        )
        assert "label=" in driver.current_url
        box.clear()
        box.send_keys(" ")  # an input event: the filter is empty again
        wait_for(lambda: len(cards_shown(driver)) == len(first) + 1, 20, "every card again")

        # The dead-lettered filter: none of these was.
        driver.find_element("css selector", "#f-dead option[value='true']").click()
        wait_for(lambda: cards_shown(driver) == [], 20, "no dead-lettered card")
        driver.save_screenshot(str(artifacts / "results-page-dead-lettered.png"))
