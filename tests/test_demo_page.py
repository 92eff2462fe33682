"""The live demo page in headless Chromium (Debian's, driven by Playwright) against a real
server: three clicks, the list changes after each and matches the API's own answer."""

from __future__ import annotations

import shutil

import httpx
import pytest
from serving_helpers import LiveServer

from nextclick.serving.app import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def rendered(page) -> list[tuple[str, str]]:  # page: a Playwright page
    """(item, score) of each row of the recommendation table, as shown."""
    rows = page.locator("#recs tr")
    return [
        (rows.nth(i).locator("td.rec-item").inner_text(),
         rows.nth(i).locator("td.score").inner_text())
        for i in range(rows.count())
    ]  # fmt: skip


def test_demo_page_clicks_three_items_and_shows_the_apis_answer(model_dirs, popular_ids):
    from playwright.sync_api import sync_playwright

    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: run `bash scripts/test-services.sh`")
    app = create_app(ServeSettings(model_dir=str(model_dirs["gru4rec"])))
    with LiveServer(app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/demo")
            page.wait_for_selector("body[data-ready='1']")
            session = page.locator("#session").inner_text()
            before = rendered(page)
            assert len(before) == 10
            for n, item in enumerate(popular_ids[:3], start=1):
                page.locator(f"button.item[data-item='{item}']").click()
                page.wait_for_selector(f"body[data-clicks='{n}']")
                shown = rendered(page)
                assert shown != before  # the list changed
                api = httpx.get(f"{server.url}/v1/sessions/{session}/recommendations",
                                params={"k": 10}).json()  # fmt: skip
                assert [item for item, _ in shown] == [str(i["item_id"]) for i in api["items"]]
                assert [score for _, score in shown] == [f"{i['score']:.4f}" for i in api["items"]]
                assert page.locator("#latency").inner_text().endswith(" ms")
                before = shown
            recorded = httpx.get(f"{server.url}/v1/sessions/{session}").json()["items"]
            assert recorded == popular_ids[:3]
        finally:
            browser.close()
