"""The search page in headless Chromium (Debian's chromium + chromedriver, via selenium):
type a query, see the hits; a screenshot lands in docs/search-page.png when asked for."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from servers import served

from cpt_embed.search.build import build_index
from cpt_embed.search.query import Searcher
from cpt_embed.serve.app import create_app

webdriver = pytest.importorskip("selenium.webdriver")
if not (shutil.which("chromium") and shutil.which("chromedriver")):
    pytest.skip(
        "chromium and chromedriver are not installed (make browser)", allow_module_level=True
    )

REPO = Path(__file__).resolve().parents[2]


def test_the_page_shows_hits_for_a_typed_query(encoder, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    build_index(
        [REPO / "src" / "cpt_embed" / "search"], tmp_path / "idx", encoder, model_name="default"
    )
    app = create_app(encoder, "default", searcher=Searcher(tmp_path / "idx", encoder, "default"))
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    with served(app) as url:
        browser = webdriver.Chrome(options=options, service=service)
        try:
            browser.get(f"{url}/")
            box = browser.find_element(By.ID, "query")
            box.send_keys("split a markdown file into sections at its headings")
            browser.find_element(By.TAG_NAME, "button").click()
            WebDriverWait(browser, 30).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".hit"))
            )
            hits = browser.find_elements(By.CSS_SELECTOR, ".hit")
            assert len(hits) == 10
            assert "search/chunks.py" in hits[0].find_element(By.CLASS_NAME, "where").text
            assert "_sections" in hits[0].text
            assert browser.find_elements(By.TAG_NAME, "mark")  # the query's words highlighted
            if os.environ.get("CPT_SCREENSHOT"):
                browser.save_screenshot(os.environ["CPT_SCREENSHOT"])
        finally:
            browser.quit()
